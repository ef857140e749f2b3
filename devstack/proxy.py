"""A loopback TCP proxy that makes a cluster slow, flaky or unreachable, for fault tests and benchmarks.

Point a cluster's `server` in the registry at `proxy.url` instead of the kube-apiserver. The proxy
forwards bytes unchanged, so TLS is end to end: the client still verifies the apiserver's certificate
against the cluster's CA (the devstack certificates name 127.0.0.1, which is where the proxy listens),
and nothing about the app's client configuration has to be relaxed to put the proxy in the path.

What it can do (settable at any time, from any thread, with `set(...)`):

- `latency`: seconds added to every *client flight*, i.e. every burst of bytes the client sends after
  the server last spoke. On a kept-alive connection one flight is one HTTP request, so this is "a
  slow cluster: every Kubernetes call takes this much longer". A new TLS connection costs about two
  extra flights (ClientHello, Finished), as on a real long link.
- `connect_latency`: seconds before a new connection is forwarded at all (a slow TCP/LB path).
- `mode`:
  - `pass`     forward (default);
  - `refuse`   close the listening socket: connects get ECONNREFUSED, and open connections are cut
               (a cluster that went away);
  - `blackhole` accept and read, never forward or answer (a firewall that drops packets: clients
               hit their timeouts);
  - `drop`     accept, then reset the connection at its first client bytes (a flaky load balancer).

Bounded and local by construction: it listens on loopback only and connects only to the one upstream
it was given. `python -m devstack.proxy --upstream 127.0.0.1:6443 --latency 0.05` runs one standalone.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

MODES = ("pass", "refuse", "blackhole", "drop")
_CHUNK = 65536


@dataclass
class ProxyStats:
    """Counters since start (or `reset_stats`): what reached the proxy, whatever the mode."""

    connections: int = 0
    flights: int = 0
    refused_or_dropped: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Conn:
    client: socket.socket
    upstream: socket.socket | None = None
    server_spoke: bool = True  # True: the next client bytes start a new flight
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            if reset:  # RST instead of FIN: the peer sees "connection reset"
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class Proxy:
    """One listening port on 127.0.0.1 forwarding to one upstream `(host, port)`."""

    def __init__(self, upstream: tuple[str, int], *, port: int = 0, latency: float = 0.0,
                 connect_latency: float = 0.0, mode: str = "pass") -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._stopped = threading.Event()
        self._started = False
        self.stats = ProxyStats()
        self.latency = 0.0
        self.connect_latency = 0.0
        self.mode = "pass"
        self.port = port
        self.set(latency=latency, connect_latency=connect_latency, mode=mode)

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`https://127.0.0.1:PORT`: what to put in a registry cluster's `server`."""
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        self._stopped.clear()
        self._started = True
        self._listen()  # binds even in refuse mode, so the port (and `url`) is known from the start
        if self.mode == "refuse":
            self._unlisten()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._unlisten()
        self.cut()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set(self, *, latency: float | None = None, connect_latency: float | None = None,
            mode: str | None = None) -> None:
        """Change behaviour now; open connections follow the new latency and mode from their next bytes."""
        if latency is not None:
            if latency < 0:
                raise ValueError("latency must be >= 0")
            self.latency = float(latency)
        if connect_latency is not None:
            if connect_latency < 0:
                raise ValueError("connect_latency must be >= 0")
            self.connect_latency = float(connect_latency)
        if mode is not None:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {', '.join(MODES)}")
            previous, self.mode = self.mode, mode
            if mode == "refuse":
                self._unlisten()
                self.cut()
            elif previous == "refuse" and self._started and not self._stopped.is_set():
                self._listen()

    def cut(self) -> int:
        """Close every open connection (keep-alive pools then reconnect through the current mode)."""
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            conn.close()
        return len(conns)

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = ProxyStats()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    # --- internals -------------------------------------------------------------------------------

    def _listen(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(256)
            self.port = sock.getsockname()[1]
            self._listener = sock
            self._accepting = threading.Thread(target=self._accept_loop, args=(sock,), daemon=True,
                                               name=f"proxy-{self.port}")
            self._accepting.start()

    def _unlisten(self) -> None:
        with self._lock:
            sock, self._listener = self._listener, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed (refuse or stop)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client)
            with self._lock:
                self.stats.connections += 1
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True, name="proxy-conn").start()

    def _serve(self, conn: _Conn) -> None:
        try:
            if self.connect_latency:
                time.sleep(self.connect_latency)
            if self.mode == "drop":
                self._count_refused()
                with contextlib.suppress(OSError):
                    conn.client.recv(1)  # wait for the client to speak, then reset mid-request
                conn.close(reset=True)
                return
            if self.mode == "blackhole":
                self._swallow(conn)
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                self._count_refused()
                conn.close(reset=True)
                return
            upstream.settimeout(None)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.upstream = upstream
            if conn.closed.is_set():  # cut while connecting
                conn.close()
                return
            down = threading.Thread(target=self._pump_down, args=(conn,), daemon=True, name="proxy-down")
            down.start()
            self._pump_up(conn)
        finally:
            with self._lock:
                self._conns.discard(conn)

    def _count_refused(self) -> None:
        with self._lock:
            self.stats.refused_or_dropped += 1

    def _swallow(self, conn: _Conn) -> None:
        """Blackhole: read and discard until the client gives up."""
        with contextlib.suppress(OSError):
            while conn.client.recv(_CHUNK):
                pass
        conn.close()

    def _pump_up(self, conn: _Conn) -> None:
        """client → upstream, delaying the start of every client flight by `latency`."""
        assert conn.upstream is not None
        try:
            while True:
                data = conn.client.recv(_CHUNK)
                if not data:
                    break
                mode = self.mode
                if mode == "blackhole":
                    continue
                if mode == "drop":
                    conn.close(reset=True)
                    return
                if conn.server_spoke:
                    conn.server_spoke = False
                    with self._lock:
                        self.stats.flights += 1
                    if self.latency:
                        time.sleep(self.latency)
                with self._lock:
                    self.stats.bytes_up += len(data)
                conn.upstream.sendall(data)
        except OSError:
            pass
        conn.close()

    def _pump_down(self, conn: _Conn) -> None:
        """upstream → client, unchanged; marks that the next client bytes are a new flight."""
        assert conn.upstream is not None
        try:
            while True:
                data = conn.upstream.recv(_CHUNK)
                if not data:
                    break
                conn.server_spoke = True
                with self._lock:
                    self.stats.bytes_down += len(data)
                if self.mode == "blackhole":
                    continue
                conn.client.sendall(data)
        except OSError:
            pass
        conn.close()


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("https://"):
        host = host[len("https://"):]
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.proxy",
                                     description="Loopback TCP proxy with injected latency or outages")
    parser.add_argument("--upstream", required=True, type=parse_hostport, help="HOST:PORT to forward to")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every client flight")
    parser.add_argument("--connect-latency", type=float, default=0.0)
    parser.add_argument("--mode", choices=MODES, default="pass")
    parser.add_argument("--seconds", type=float, default=3600.0, help="exit after this long (bounded runs)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Proxy(args.upstream, port=args.port, latency=args.latency, connect_latency=args.connect_latency,
               mode=args.mode) as proxy:
        print(proxy.url, flush=True)
        stop.wait(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

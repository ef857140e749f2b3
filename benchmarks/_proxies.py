"""Many `devstack.proxy` ports in one process of their own, driven over stdin (benchmarks only).

A fleet benchmark puts every registry cluster behind its own port: the app sees 100 clusters (100
connection pools, 100 TLS sessions) while the devstack runs two apiservers. The proxies run outside
the benchmark process so that their pump threads neither compete with the app for its GIL nor count
as the app's CPU.

    python -m benchmarks._proxies --upstream 127.0.0.1:6443 --upstream 127.0.0.1:6444 --count 100

prints one JSON line, the list of URLs (port i forwards to upstream i % len(upstreams)), then reads
commands, one per line, answering each with one JSON line:
- `latency SECONDS`: set the latency of every port (answers `{}`);
- `stats`: `{"flights": N, "connections": N}` summed over the ports since the last `reset`;
- `reset`: zero the counters;
- `cut`: close every open connection (the next calls connect anew).
End of input stops it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import IO

from devstack.proxy import Proxy, parse_hostport


class Proxies:
    """The benchmark's side: the proxies' URLs and their commands."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        self._in: IO[str] = proc.stdin
        self._out: IO[str] = proc.stdout
        self.urls: list[str] = json.loads(self._out.readline())

    def send(self, command: str) -> dict[str, int]:
        self._in.write(command + "\n")
        self._in.flush()
        return dict(json.loads(self._out.readline()))

    def set_latency(self, seconds: float) -> None:
        self.send(f"latency {seconds}")

    def reset(self) -> None:
        self.send("reset")

    def stats(self) -> dict[str, int]:
        return self.send("stats")

    def cut(self) -> None:
        self.send("cut")


@contextmanager
def running(upstreams: Sequence[tuple[str, int]], count: int, latency: float) -> Iterator[Proxies]:
    argv = [sys.executable, "-m", "benchmarks._proxies", "--count", str(count), "--latency", str(latency)]
    for host, port in upstreams:
        argv += ["--upstream", f"{host}:{port}"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield Proxies(proc)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._proxies")
    parser.add_argument("--upstream", action="append", required=True, type=parse_hostport)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        proxies = [stack.enter_context(Proxy(args.upstream[i % len(args.upstream)], latency=args.latency))
                   for i in range(args.count)]
        print(json.dumps([p.url for p in proxies]), flush=True)
        for line in sys.stdin:
            command, _, value = line.strip().partition(" ")
            answer: dict[str, int] = {}
            if command == "latency":
                for p in proxies:
                    p.set(latency=float(value))
            elif command == "stats":
                answer = {"flights": sum(p.stats.flights for p in proxies),
                          "connections": sum(p.stats.connections for p in proxies)}
            elif command == "reset":
                for p in proxies:
                    p.reset_stats()
            elif command == "cut":
                answer = {"cut": sum(p.cut() for p in proxies)}
            print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Kubernetes adapter keeps a call inside its timeout, whatever stalls: the TCP connect, the
kubeconfig read from Key Vault, or another caller's kubeconfig read; and it asks the identity for the
AKS token once for the whole fleet of clusters.

No apiserver is needed: the stalls are loopback sockets and callables of our own; the client is the
real `kubernetes` SDK over urllib3.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from azure.core.credentials import AccessToken

from rotation.adapters.kubernetes import KubernetesClusters
from rotation.core.errors import UpstreamError
from rotation.core.model import AksAuth, Cluster, KubeconfigAuth

# Scheduling slack on a loaded 2-core machine; far below the extra whole timeout the defect added.
SLACK = 0.4


class Credential:
    def __init__(self) -> None:
        self.requests = 0
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with self._lock:
            self.requests += 1
        return AccessToken("aks-test-token", int(time.time() + 3600))


@contextlib.contextmanager
def unanswered_connects() -> Iterator[int]:
    """A port whose accept queue is full: Linux drops further SYNs (net.ipv4.tcp_abort_on_overflow=0),
    so a client's TCP connect neither succeeds nor fails until its connect timeout: a cluster behind a
    firewall that drops packets."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.1)
    try:
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


def aks_cluster(name: str, port: int) -> Cluster:
    ca = base64.b64encode(trustme.CA().cert_pem.bytes()).decode()
    return Cluster(name, AksAuth(server=f"https://127.0.0.1:{port}", ca_data=ca))


def test_a_call_to_a_cluster_that_never_answers_the_connect_ends_within_its_timeout() -> None:
    """urllib3 (urllib3/connectionpool.py `urlopen`) gives every retry a fresh copy of the request's
    `Timeout(total=…)` (`Timeout.clone`), and the kubernetes client (kubernetes/client/rest.py)
    turns `_request_timeout=t` into `Timeout(total=t)`: with one connect retry, a call took twice its
    timeout. The retry now shares the call's deadline."""
    with unanswered_connects() as port:
        clusters = KubernetesClusters(Credential(), lambda _: "")
        client = clusters.client(aks_cluster("mute", port))
        assert client._api is not None  # built beforehand: importing the SDK takes seconds on a busy machine
        for timeout in (1.0, 1.5):
            started = time.monotonic()
            with pytest.raises(UpstreamError, match=r"cluster mute unreachable: get secrets gw/gw-token.*timed out"):
                client.read_secret("gw", "gw-token", "key", timeout=timeout)
            took = time.monotonic() - started
            assert took < timeout + SLACK, f"a {timeout}s call took {took:.2f}s"
        clusters.close()


def test_kubeconfig_read_is_bounded_by_each_callers_deadline_and_holds_no_lock() -> None:
    """A stalled Key Vault read of a kubeconfig used to run inside `client()` under a per-cluster lock
    with no timeout: every target of that cluster waited for it. Now each caller waits for it no longer
    than its own call's timeout, and the read, once it completes, serves the next caller."""
    release = threading.Event()
    reads: list[str] = []

    def read_kubeconfig(name: str) -> str:
        reads.append(name)
        release.wait(5)
        return "not: [a kubeconfig"

    clusters = KubernetesClusters(None, read_kubeconfig)
    cluster = Cluster("far", KubeconfigAuth("kubeconfig-far"))
    took: list[float] = []
    errors: list[str] = []

    def call(timeout: float) -> None:
        started = time.monotonic()
        try:
            clusters.client(cluster).read_secret("gw", "gw-token", "key", timeout=timeout)
        except UpstreamError as exc:
            errors.append(str(exc))
        took.append(time.monotonic() - started)

    try:
        callers = [threading.Thread(target=call, args=(0.5,)) for _ in range(4)]
        for c in callers:
            c.start()
        for c in callers:
            c.join(10)
        assert len(took) == 4 and max(took) < 0.5 + SLACK, took
        assert len(errors) == 4 and all("cluster far" in e for e in errors), errors
        assert reads == ["kubeconfig-far"]  # one read in flight, not one per caller
    finally:
        release.set()
        clusters.close()


def test_one_aks_token_serves_every_cluster() -> None:
    """Every `aks` cluster authenticates with the same Entra ID token (scope of the AKS server
    application): a fleet of clusters asks the identity endpoint once, not once per cluster."""
    credential = Credential()
    clusters = KubernetesClusters(credential, lambda _: "")
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed: each call fails fast after getting its token
        for i in range(5):
            with pytest.raises(UpstreamError, match="unreachable"):
                clusters.client(aks_cluster(f"c{i}", port)).read_secret("gw", "gw-token", "key", timeout=5)
        assert credential.requests == 1
    finally:
        clusters.close()

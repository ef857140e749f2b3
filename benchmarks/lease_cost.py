"""The per-gateway blob lease's cost on the event path: HTTP calls and latency added to one reconcile
(acquire, which also advances the fencing generation; one head commit after a Key Vault write; release).

Runs the real adapter (azure-storage-blob, OAuth from the identity fake) against Azurite over HTTPS.
Calls are counted from azure-core's own request log (`http_logging_policy`, one "Request URL" line per
request sent). `python -m benchmarks.lease_cost [RUNS]`.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from azure.identity import ManagedIdentityCredential
from azure.storage.blob import ContainerClient

from devstack import azurite
from devstack.fakes import start
from rotation.adapters.lease import BlobLease
from rotation.core.fencing import FenceHead


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Request URL" in record.getMessage():
            self.requests += 1


def main(runs: int = 50) -> None:
    directory = Path(tempfile.mkdtemp(prefix="lease-cost-"))
    fakes = start(directory, {"identity": {"tokens": {azurite.STORAGE_RESOURCE: azurite.storage_token()}}})
    os.environ.update(fakes.env())
    server = azurite.start(directory, fakes.ca)
    try:
        url = server.container_url("gateway-leases")
        credential = ManagedIdentityCredential()
        ContainerClient.from_container_url(url, credential=credential).create_container()
        counter = _Count()
        http_log = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
        http_log.setLevel(logging.INFO)
        http_log.addHandler(counter)
        lease = BlobLease(url, credential)

        counter.requests, t0 = 0, time.perf_counter()
        lease.acquire("contoso-apim/gw-1", duration=30, wait=5).release()
        print(f"first use of a gateway's blob: {counter.requests} calls, {1000 * (time.perf_counter() - t0):.1f} ms")

        acquire, commit, release, calls = [], [], [], set()
        for n in range(runs):
            counter.requests, t0 = 0, time.perf_counter()
            held = lease.acquire("contoso-apim/gw-1", duration=30, wait=5)
            t1 = time.perf_counter()
            held.commit(FenceHead(f"{n:032x}", f"fp-{n}", held.generation), timeout=5)
            t2 = time.perf_counter()
            held.release()
            acquire.append(1000 * (t1 - t0))
            commit.append(1000 * (t2 - t1))
            release.append(1000 * (time.perf_counter() - t2))
            calls.add(counter.requests)

        def p90(xs: list[float]) -> float:
            return sorted(xs)[int(len(xs) * 0.9) - 1]

        print(f"steady state, {runs} runs: calls per reconcile {sorted(calls)}; acquire median "
              f"{statistics.median(acquire):.1f} ms (p90 {p90(acquire):.1f}); commit median "
              f"{statistics.median(commit):.1f} ms (p90 {p90(commit):.1f}); release median "
              f"{statistics.median(release):.1f} ms (p90 {p90(release):.1f})")

        held = lease.acquire("contoso-apim/gw-1", duration=15, wait=5)
        threading.Timer(0.5, held.release).start()
        t0 = time.perf_counter()
        lease.acquire("contoso-apim/gw-1", duration=15, wait=5).release()
        print(f"contended: holder releases after 500 ms, acquired after {1000 * (time.perf_counter() - t0):.0f} ms")
        lease.close()
    finally:
        server.stop()
        fakes.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)

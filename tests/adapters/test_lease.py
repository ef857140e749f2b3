"""The blob lease adapter: the real azure-storage-blob SDK over HTTPS, OAuth from the identity fake, on
Azurite; several processes contending for one gateway's lease.

SDK behaviour relied on (azure-sdk-for-python, sdk/storage/azure-storage-blob/azure/storage/blob/):
`_lease.py` BlobLeaseClient.acquire ("A non-infinite lease can be between 15 and 60 seconds"; the
client proposes a uuid4 lease id), renew ("may be renewed even if it has expired as long as the ...
blob has not been leased again since the expiration"), release; a lease needs an existing blob and
`_upload_helpers.py` upload_block_blob sets `If-None-Match: *` when overwrite=False. Error codes
(409 LeaseAlreadyPresent, 409 LeaseIdMismatchWithLeaseOperation): Blob REST "Lease Blob"
(learn.microsoft.com/rest/api/storageservices/lease-blob).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.identity import ManagedIdentityCredential
from azure.storage.blob import BlobLeaseClient, ContainerClient

from devstack import azurite
from devstack.fakes import Fakes
from rotation.adapters.credential import build_credential
from rotation.adapters.lease import BlobLease
from rotation.core.errors import InvalidInput, SettingsError, UpstreamError
from tests.adapters.conftest import storage_stack
from tests.e2e.azurite_fixture import empty

REPO = Path(__file__).resolve().parents[2]


class Leases:
    def __init__(self, fakes: Fakes, server: azurite.Azurite) -> None:
        self.fakes = fakes
        self.azurite = server
        self.url = server.container_url("gateway-leases")
        self.credential = ManagedIdentityCredential()
        self.container = ContainerClient.from_container_url(self.url, credential=self.credential)

    def lease(self, url: str | None = None) -> BlobLease:
        return BlobLease(url or self.url, self.credential, poll_seconds=0.05)


@pytest.fixture(scope="module")
def leases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Leases]:
    with storage_stack(tmp_path_factory.mktemp("leases")) as (fakes, server):
        s = Leases(fakes, server)
        s.container.create_container()
        yield s
        s.container.close()


@pytest.fixture
def store(leases: Leases) -> Leases:
    for blob in leases.container.list_blobs():
        if blob.lease.state == "leased":  # a failed test's leftover: break it so the blob can go
            BlobLeaseClient(leases.container.get_blob_client(blob.name)).break_lease(lease_break_period=0)
    empty(leases.container)
    return leases


def test_acquire_creates_the_blob_holds_it_and_release_frees_it(store: Leases) -> None:
    lease = store.lease()
    held = lease.acquire("contoso-apim/gw-1", duration=15, wait=1)
    props = store.container.get_blob_client("contoso-apim/gw-1").get_blob_properties()
    assert props.lease.state == "leased" and props.lease.duration == "fixed" and props.size == 0
    with pytest.raises(UpstreamError, match="another reconcile of this gateway holds it"):
        lease.acquire("contoso-apim/gw-1", duration=15, wait=0.3)
    other = lease.acquire("contoso-apim/gw-2", duration=15, wait=0.3)  # per gateway
    lease.acquire("contoso-apim/gw-0", duration=15, wait=0).release()  # wait=0: one attempt, no waiting
    held.renew()
    held.release()
    again = lease.acquire("contoso-apim/gw-1", duration=15, wait=0.3)
    again.release()
    other.release()
    # The SDK authenticated with the identity fake's storage token, not anonymously.
    assert any("storage.azure.com" in (r["resource"] or "") for r in store.fakes.identity.requests())


def test_a_missing_container_is_a_settings_error(store: Leases) -> None:
    with pytest.raises(SettingsError, match="the container does not exist"):
        store.lease(store.azurite.container_url("no-such-container")).acquire("s/g", duration=15, wait=0.5)


def test_several_processes_take_turns_and_never_overlap(store: Leases, tmp_path: Path) -> None:
    """Four processes, three turns each, racing for one never-created blob (creation races too)."""
    script = (
        "import json, sys, time\n"
        "from azure.identity import ManagedIdentityCredential\n"
        "from rotation.adapters.lease import BlobLease\n"
        "lease = BlobLease(sys.argv[1], ManagedIdentityCredential(), poll_seconds=0.05)\n"
        "for _ in range(3):\n"
        "    held = lease.acquire('contoso-apim/gw-race', duration=15, wait=30)\n"
        "    start = time.time(); time.sleep(0.15); end = time.time()\n"
        "    held.release()\n"
        "    print(json.dumps([start, end]), flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", script, store.url], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(4)]
    spans = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        spans += [tuple(json.loads(line)) for line in out.splitlines()]
    spans.sort()
    assert len(spans) == 12
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))


def test_a_holder_that_stops_renewing_loses_the_lease_when_it_expires(store: Leases) -> None:
    """The crashed-holder case: nobody renews, the lease expires after its 15 s, a process that was
    waiting takes it, and the old holder's renewal fails (it must not act as the writer any more)."""
    lease = store.lease()
    stale = lease.acquire("contoso-apim/gw-crash", duration=15, wait=1)
    started = time.monotonic()
    taker = lease.acquire("contoso-apim/gw-crash", duration=15, wait=25)
    waited = time.monotonic() - started
    assert 13 <= waited <= 20
    with pytest.raises(UpstreamError, match="was lost or could not be renewed: 409"):
        stale.renew()
    taker.check()  # acquired moments ago: still ours
    taker.release()
    # Free again, but leased by another since: the stale holder's check (what every write calls after a
    # pause longer than half the duration) still fails, so it cannot write as the gateway's writer.
    with pytest.raises(UpstreamError, match="was lost or could not be renewed: 409"):
        stale.check()


def test_a_stalled_identity_endpoint_ends_the_acquire_within_its_wait(store: Leases) -> None:
    """The blob client asks the app's identity for a storage token outside the per-call timeouts
    (azure-core `BearerTokenCredentialPolicy.on_request` calls `get_token` before sending; azure-identity
    gives a managed-identity request no overall timeout): the lease must scope that request to the
    caller's wait with `token_deadline`, as the ARM and Key Vault adapters do (the deadline covers token
    acquisition). A reconcile with 1 s left must not sit 20 s in the identity request."""
    store.fakes.identity.add_fault({"method": "GET", "path": "/msi/.*", "delaySeconds": 8, "status": 500,
                                    "times": 1})
    try:
        lease = BlobLease(store.url, build_credential(retry_total=0), poll_seconds=0.05)  # a cold token cache
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="could not get a token"):
            lease.acquire("contoso-apim/gw-stall", duration=15, wait=1)
        assert time.monotonic() - started < 2.5
    finally:
        store.fakes.identity.clear_faults()
    assert "contoso-apim/gw-stall" not in [b.name for b in store.container.list_blobs()]


@pytest.mark.parametrize("name", ["", "a/", "a.", "../other-container/x", "a\\b", "a" * 1025,
                                  "/".join(["s"] * 255), "a\x00b"])
def test_a_name_outside_the_blob_naming_rules_is_refused_before_any_call(store: Leases, name: str) -> None:
    """Blob names (learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs
    --and-metadata): 1 to 1,024 characters, at most 254 path segments, avoid names ending with a dot or
    a slash, no control characters; this adapter also refuses `..` segments and backslashes, so a
    name can never address another container or blob than the gateway's own."""
    calls = len(store.fakes.identity.requests())
    with pytest.raises(InvalidInput, match="lease name"):
        store.lease().acquire(name, duration=15, wait=0.5)
    assert len(store.fakes.identity.requests()) == calls
    assert list(store.container.list_blobs()) == []

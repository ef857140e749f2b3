"""Fenced writes through the blob lease: a fencing generation and the gateway's committed head kept in
the lease blob's metadata, written only with the lease. The real azure-storage-blob SDK over HTTPS,
OAuth from the identity fake, on Azurite.

Storage behaviour relied on, and checked here against Azurite:
- Blob REST "Lease Blob" (learn.microsoft.com/rest/api/storageservices/lease-blob), Remarks, "Outcomes
  of use attempts on blobs by lease state": a write using lease id (A) succeeds only while (A) is
  Leased (or Breaking); it fails with 412 when (A) has expired, was released or broken, and with a
  409/412 when another id (B) holds the blob; a write without a lease id fails while it is leased.
  "The blob's Last-Modified-Time property is not updated by calls to Lease Blob", and the ETag neither
  (checked below): an If-Match on the ETag read under the lease stays valid until a write.
  "Renew (A)" of an expired lease succeeds "if blob has not been modified" since, else 409.
- Blob REST "Set Blob Metadata" (learn.microsoft.com/rest/api/storageservices/set-blob-metadata):
  replaces all metadata; `x-ms-lease-id` is "Required if the blob has an active lease"; it honours the
  conditional headers ("Specifying conditional headers for Blob service operations",
  learn.microsoft.com/rest/api/storageservices/specifying-conditional-headers-for-blob-service-operations:
  If-Match fails with 412 ConditionNotMet when the ETag differs).
- azure-storage-blob 12.31 `_blob_client.py` `set_blob_metadata(metadata, lease=, etag=,
  match_condition=)` and `_blob_client_helpers.py` `_set_blob_metadata_options` (lease →
  `x-ms-lease-id`, etag + MatchConditions.IfNotModified → If-Match); `_container_client.py`
  `list_blobs(name_starts_with=, include=['metadata'])` (List Blobs returns each blob's metadata).
- Metadata names "must adhere to the naming rules for C# identifiers" and are case-insensitive ("Naming
  and Referencing Containers, Blobs, and Metadata").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobLeaseClient

from rotation.adapters.credential import build_credential
from rotation.adapters.lease import BlobLease
from rotation.core.errors import SettingsError, UpstreamError
from rotation.core.fencing import FenceHead
from rotation.core.token import fingerprint
from tests.adapters.conftest import storage_stack
from tests.adapters.test_lease import Leases
from tests.e2e.azurite_fixture import empty

REPO = Path(__file__).resolve().parents[2]


def head(n: int, generation: int) -> FenceHead:
    """A head as a writer records it: a Key Vault version id (32 hex) and the token's fingerprint."""
    return FenceHead(version=f"{n:032x}", fingerprint=fingerprint(f"token-{n}"), generation=generation)


@pytest.fixture(scope="module")
def fenced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Leases]:
    with storage_stack(tmp_path_factory.mktemp("fenced")) as (fakes, server):
        s = Leases(fakes, server)
        s.container.create_container()
        yield s
        s.container.close()


@pytest.fixture
def store(fenced: Leases) -> Leases:
    for blob in fenced.container.list_blobs():
        if blob.lease.state == "leased":
            BlobLeaseClient(fenced.container.get_blob_client(blob.name)).break_lease(lease_break_period=0)
    empty(fenced.container)
    return fenced


def test_azurite_enforces_the_lease_and_if_match_on_set_blob_metadata(store: Leases) -> None:
    """The emulator refuses what Azure refuses (Lease Blob's outcome table; Set Blob Metadata), so the
    tests below exercise the service's condition, not just the adapter's own bookkeeping."""
    blob = store.container.get_blob_client("contoso-apim/gw-probe")
    blob.upload_blob(b"", overwrite=False)
    before = blob.get_blob_properties().etag
    lease = BlobLeaseClient(blob)
    lease.acquire(lease_duration=15)
    assert blob.get_blob_properties().etag == before == lease.etag  # leasing does not change the ETag
    refused = []
    for kwargs in ({}, {"lease": "11111111-1111-4111-8111-111111111111"},
                   {"lease": lease, "etag": '"0x1"', "match_condition": MatchConditions.IfNotModified}):
        with pytest.raises(HttpResponseError) as info:
            blob.set_blob_metadata({"x": "1"}, **kwargs)
        refused.append((info.value.status_code, getattr(info.value, "error_code", None)))
    assert refused == [(412, "LeaseIdMissing"), (412, "LeaseIdMismatchWithBlobOperation"), (412, "ConditionNotMet")]
    blob.set_blob_metadata({"x": "1"}, lease=lease)
    lease.release()
    assert blob.get_blob_properties().metadata == {"x": "1"}


def test_generations_strictly_increase_across_holders(store: Leases) -> None:
    """Each acquisition advances the generation with a lease-conditioned write, whoever held it before
    and whether or not that holder committed anything."""
    generations = []
    for _ in range(3):
        held = store.lease().acquire("contoso-apim/gw-1", duration=15, wait=1)  # a new client: another holder
        generations.append(held.generation)
        assert held.head is None
        held.release()
    assert generations == [1, 2, 3]
    metadata = store.container.get_blob_client("contoso-apim/gw-1").get_blob_properties().metadata
    assert metadata == {"fencinggeneration": "3"}
    other = store.lease().acquire("contoso-apim/gw-2", duration=15, wait=1)  # per gateway
    assert other.generation == 1
    other.release()


def test_generations_strictly_increase_across_processes(store: Leases) -> None:
    """Three processes, three turns each, racing for one never-created blob: every acquisition gets the
    next generation, in the order the leases were held."""
    script = (
        "import json, sys, time\n"
        "from azure.identity import ManagedIdentityCredential\n"
        "from rotation.adapters.lease import BlobLease\n"
        "lease = BlobLease(sys.argv[1], ManagedIdentityCredential(), poll_seconds=0.05)\n"
        "for _ in range(3):\n"
        "    held = lease.acquire('contoso-apim/gw-race', duration=15, wait=30)\n"
        "    start = time.time(); time.sleep(0.05)\n"
        "    print(json.dumps([start, held.generation]), flush=True)\n"
        "    held.release()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", script, store.url], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(3)]
    turns = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        turns += [tuple(json.loads(line)) for line in out.splitlines()]
    assert [generation for _, generation in sorted(turns)] == list(range(1, 10))


def test_a_commit_is_what_heads_and_the_next_holder_see(store: Leases) -> None:
    lease = store.lease()
    first = lease.acquire("contoso-apim/gw-1", duration=15, wait=1)
    assert lease.heads(["contoso-apim/gw-1"], timeout=5) == {}
    first.commit(head(1, first.generation), timeout=5)
    first.commit(head(2, first.generation), timeout=5)  # the last commit wins
    assert lease.heads(["contoso-apim/gw-1", "contoso-apim/gw-2", "other/gw-1"], timeout=5) == {
        "contoso-apim/gw-1": head(2, 1)}
    first.release()
    second = store.lease().acquire("contoso-apim/gw-1", duration=15, wait=1)
    assert (second.generation, second.head) == (2, head(2, 1))  # the head survives the generation's advance
    second.release()
    untouched = store.lease().acquire("contoso-apim/gw-2", duration=15, wait=1)
    assert untouched.head is None
    untouched.commit(head(3, untouched.generation), timeout=5)
    untouched.release()
    assert lease.heads(["contoso-apim/gw-1", "contoso-apim/gw-2"], timeout=5) == {
        "contoso-apim/gw-1": head(2, 1), "contoso-apim/gw-2": head(3, 1)}
    assert lease.heads([], timeout=5) == {}


def test_a_holder_whose_lease_ran_out_cannot_commit(store: Leases) -> None:
    """The late commit: a holder paused past its 15 s lease. If another took the lease meanwhile, the
    paused holder's commit fails (Write using (A) while (B) holds it) and the head stays the other's;
    after the other released, it still fails (Write using (A) on an Available blob). If nobody took it,
    its commit fails all the same (Write using (A) on Expired (A): 412) until it renews ("Renew (A)" of
    an expired lease on an unmodified blob succeeds). `remaining()` reaches 0 when the lease ran out."""
    lease = store.lease()
    paused = lease.acquire("contoso-apim/gw-1", duration=15, wait=1)
    lapsed = lease.acquire("contoso-apim/gw-2", duration=15, wait=1)
    assert 11 <= paused.remaining() <= 13  # 15 s less the 2 s margin, less the second acquisition
    time.sleep(1)
    assert paused.remaining() <= 12
    time.sleep(15)
    assert paused.remaining() == 0 and lapsed.remaining() == 0
    with pytest.raises(UpstreamError, match=r"lease contoso-apim/gw-2 in .* was lost.*412"):
        lapsed.commit(head(1, lapsed.generation), timeout=5)
    lapsed.renew()
    assert lapsed.remaining() > 11
    lapsed.commit(head(1, lapsed.generation), timeout=5)

    with pytest.raises(UpstreamError, match="was lost"):
        paused.commit(head(1, paused.generation), timeout=5)
    taker = store.lease().acquire("contoso-apim/gw-1", duration=15, wait=1)
    assert taker.generation == paused.generation + 1
    taker.commit(head(2, taker.generation), timeout=5)
    with pytest.raises(UpstreamError, match=r"lease contoso-apim/gw-1 in .* was lost"):
        paused.commit(head(1, paused.generation), timeout=5)
    taker.release()
    with pytest.raises(UpstreamError, match="was lost"):
        paused.commit(head(1, paused.generation), timeout=5)
    assert lease.heads(["contoso-apim/gw-1", "contoso-apim/gw-2"], timeout=5) == {
        "contoso-apim/gw-1": head(2, 2), "contoso-apim/gw-2": head(1, 1)}
    lapsed.release()


def test_heads_of_a_missing_container_is_a_settings_error(store: Leases) -> None:
    with pytest.raises(SettingsError, match="the container does not exist"):
        store.lease(store.azurite.container_url("no-such-container")).heads(["s/g"], timeout=5)


def test_heads_ends_within_its_timeout_when_the_identity_endpoint_stalls(store: Leases) -> None:
    """As acquire: the storage token request is scoped to the caller's time (`token_deadline`)."""
    store.fakes.identity.add_fault({"method": "GET", "path": "/msi/.*", "delaySeconds": 8, "status": 500,
                                    "times": 1})
    try:
        lease = BlobLease(store.url, build_credential(retry_total=0), poll_seconds=0.05)  # a cold token cache
        started = time.monotonic()
        with pytest.raises(UpstreamError):
            lease.heads(["contoso-apim/gw-1"], timeout=1)
        assert time.monotonic() - started < 2.5
    finally:
        store.fakes.identity.clear_faults()


def test_release_is_bounded_by_its_timeout(store: Leases) -> None:
    """A handler releases at the end of its deadline: with no time left it makes no call at all (the
    lease expires on its own), and never raises."""
    lease = store.lease()
    held = lease.acquire("contoso-apim/gw-1", duration=15, wait=1)
    started = time.monotonic()
    held.release(timeout=0)
    assert time.monotonic() - started < 0.1
    props = store.container.get_blob_client("contoso-apim/gw-1").get_blob_properties()
    assert props.lease.state == "leased"
    held.release(timeout=2)
    props = store.container.get_blob_client("contoso-apim/gw-1").get_blob_properties()
    assert props.lease.state == "available"


def test_malformed_fencing_metadata_is_refused_not_restarted(store: Leases) -> None:
    """A generation that does not parse must not restart the count at 1 (every later version would
    look older than the ones already written): acquire fails, naming the blob, and leaves it free."""
    blob = store.container.get_blob_client("contoso-apim/gw-1")
    blob.upload_blob(b"", overwrite=False, metadata={"fencinggeneration": "seven"})
    with pytest.raises(UpstreamError, match=r"fencing metadata .*fencinggeneration"):
        store.lease().acquire("contoso-apim/gw-1", duration=15, wait=1)
    assert blob.get_blob_properties().lease.state == "available"


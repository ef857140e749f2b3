"""DeadLetterSource: parsing of Event Grid dead-letter blobs, and the real azure-storage-blob SDK against
Azurite over HTTPS with a bearer token from the identity fake (Azurite's `--oauth basic`).

Azurite starts once for this module (about half a second); the fakes and the CA share its directory so
the SDK trusts Azurite's certificate through `REQUESTS_CA_BUNDLE`, as in the devstack.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.identity import ManagedIdentityCredential
from azure.storage.blob import ContainerClient

from devstack import azurite
from devstack.fakes import Fakes
from rotation.adapters.deadletter import DeadLetterSource, parse_blob, parse_item, redact_url
from rotation.core.errors import AccessDenied, InvalidEvent, InvalidInput, NotFound, SettingsError, UpstreamError
from rotation.core.events import EventKind, parse_event
from tests.adapters.conftest import storage_stack
from tests.e2e.azurite_fixture import empty

SERVICE = ("/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-apim/providers/"
           "Microsoft.ApiManagement/service/contoso-apim")


def eventgrid_dead_letter(gateway: str = "onprem-gw", instance: str = "pod-1") -> dict[str, Any]:
    """What Event Grid writes for an Event Grid-schema event: the event plus delivery metadata."""
    return {"id": f"eg-{gateway}-{instance}", "topic": SERVICE, "subject": f"/gateways/{gateway}/{instance}",
            "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
            "eventTime": "2026-11-19T08:56:12.4410000Z", "dataVersion": "1", "metadataVersion": "1",
            "data": {"gatewayInfo": {"gatewayId": gateway, "instanceId": instance},
                     "tokenInfo": {"expiresAtUtc": "2026-11-26T08:56:00.0000000Z"}},
            "deadLetterReason": "MaxDeliveryAttemptsExceeded", "deliveryAttempts": 30,
            "lastDeliveryOutcome": "TimedOut", "lastHttpStatusCode": 0,
            "publishTime": "2026-11-19T08:56:12.6280000Z", "lastDeliveryAttemptTime": "2026-11-20T08:40:01.0000000Z"}


def cloudevent(gateway: str = "onprem-gw") -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"ce-{gateway}", "source": SERVICE, "subject": f"/gateways/{gateway}/pod-2",
            "type": "Microsoft.ApiManagement.GatewayTokenExpired", "time": "2026-11-26T08:57:03.1200000Z",
            "data": {"gatewayInfo": {"gatewayId": f"{SERVICE}/gateways/{gateway}", "instanceId": "pod-2"},
                     "tokenInfo": {"expiredAtUtc": "2026-11-26T08:56:00.0000000Z"}}}


def test_importing_the_adapter_and_the_replay_imports_no_sdk() -> None:
    probe = ("import json, sys; import rotation.adapters.deadletter, rotation.replay; "
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'azure')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(result.stdout) == []


# --- parsing (no I/O) ---------------------------------------------------------------------------------


def test_eventgrid_schema_item_keeps_the_event_and_reads_the_metadata() -> None:
    (item,) = parse_blob(json.dumps([eventgrid_dead_letter()]).encode())
    assert item.reason == "MaxDeliveryAttemptsExceeded" and item.delivery_attempts == 30
    assert item.last_outcome == "TimedOut" and item.last_status == 0
    assert item.published_at == datetime(2026, 11, 19, 8, 56, 12, 628000, tzinfo=UTC)
    event = parse_event(item.payload)  # the trigger's parser takes it as it is
    assert (event.gateway, event.service_id, event.kind) == ("onprem-gw", SERVICE, EventKind.NEAR_EXPIRY)
    assert item.event_id == "eg-onprem-gw-pod-1"


def test_cloudevent_with_extension_attributes() -> None:
    dead = {**cloudevent(), "deadletterreason": "DeliveryFailed", "deliveryattempts": "7",
            "lastdeliveryoutcome": "Probation", "publishtime": "2026-11-26T08:57:04Z"}
    (item,) = parse_blob(json.dumps([dead]).encode())
    assert (item.reason, item.delivery_attempts, item.last_outcome) == ("DeliveryFailed", 7, "Probation")
    assert parse_event(item.payload).kind is EventKind.EXPIRED


def test_cloudevent_wrapped_with_deadletterproperties_is_unwrapped() -> None:
    wrapped = {"event": cloudevent("gw-2"), "deadletterproperties": {
        "deadletterreason": "MaxDeliveryAttemptsExceeded", "deliveryattempts": 30,
        "lastdeliveryoutcome": "NotFound", "publishtime": "2026-11-26T08:57:04.0000000Z"}}
    (item,) = parse_blob(json.dumps([wrapped]).encode())
    assert item.payload["specversion"] == "1.0" and "deadletterproperties" not in item.payload
    assert (item.reason, item.delivery_attempts) == ("MaxDeliveryAttemptsExceeded", 30)
    assert parse_event(item.payload).gateway == "gw-2"


def test_a_single_object_and_a_utf8_bom_are_accepted() -> None:
    assert len(parse_blob(b"\xef\xbb\xbf" + json.dumps(eventgrid_dead_letter()).encode())) == 1


@pytest.mark.parametrize(("data", "message"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"42", "expected a JSON array of events, got int"),
])
def test_content_that_is_not_a_dead_letter_array_is_invalid(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_blob(data)


def test_a_non_object_item_reaches_the_event_parser_as_malformed() -> None:
    item = parse_item("just a string")
    assert item.event_id is None
    with pytest.raises(InvalidEvent):
        parse_event(item.payload)


def test_metadata_that_looks_like_a_token_is_scrubbed() -> None:
    leak = {**eventgrid_dead_letter(), "lastDeliveryOutcome": "rejected GatewayKey gw&202611260856&c2lnbmF0dXJlc2lnbmF0dXJl"}
    (item,) = parse_blob(json.dumps([leak]).encode())
    assert item.last_outcome is not None and "&" not in item.last_outcome and "<redacted>" in item.last_outcome


def test_a_sas_query_is_never_shown() -> None:
    url = "https://acct.blob.core.windows.net/deadletter?sv=2024-11-04&sig=c2VjcmV0"
    assert redact_url(url) == "https://acct.blob.core.windows.net/deadletter"
    assert "sig" not in DeadLetterSource(url, None).url


@pytest.mark.parametrize("url", ["http://127.0.0.1:10000/devstoreaccount1/deadletter",
                                 "https://acct.blob.core.windows.net", "deadletter"])
def test_a_container_url_that_is_not_https_with_a_container_is_a_settings_error(url: str) -> None:
    with pytest.raises(SettingsError, match="https://ACCOUNT"):
        DeadLetterSource(url, None)


# --- the real SDK against Azurite -----------------------------------------------------------------------


class Storage:
    def __init__(self, fakes: Fakes, server: azurite.Azurite) -> None:
        self.fakes = fakes
        self.azurite = server
        self.url = server.container_url("deadletter")
        self.credential = ManagedIdentityCredential()
        self.container = ContainerClient.from_container_url(self.url, credential=self.credential)

    def source(self, url: str | None = None, credential: Any = None, **kwargs: Any) -> DeadLetterSource:
        return DeadLetterSource(url or self.url, credential or self.credential, retry_total=0, **kwargs)

    def put(self, name: str, content: Any) -> None:
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        self.container.upload_blob(name, data, overwrite=True)


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    """Identity fake handing out the Azurite-shaped JWT for storage + Azurite with the same CA."""
    with storage_stack(tmp_path_factory.mktemp("deadletter")) as (fakes, server):
        s = Storage(fakes, server)
        s.container.create_container()
        yield s
        s.container.close()  # no idle keep-alive connection for Azurite to wait out on SIGTERM


@pytest.fixture
def store(storage: Storage) -> Storage:
    empty(storage.container)
    return storage


def test_lists_blobs_oldest_first_with_their_events(store: Storage) -> None:
    store.put("apim/sub/2026/11/26/08/a.json", [eventgrid_dead_letter("gw-1", "p1"), eventgrid_dead_letter("gw-1", "p2")])
    time.sleep(1.1)  # last-modified has one-second resolution
    store.put("apim/sub/2026/11/26/09/b.json", [{**cloudevent(), "deadletterreason": "DeliveryFailed"}])
    letters = store.source().list()
    assert [x.name for x in letters] == ["apim/sub/2026/11/26/08/a.json", "apim/sub/2026/11/26/09/b.json"]
    first, second = letters
    assert [e.event_id for e in first.events] == ["eg-gw-1-p1", "eg-gw-1-p2"] and first.error is None
    assert second.events[0].reason == "DeliveryFailed"
    assert first.last_modified is not None and first.last_modified.tzinfo is not None
    assert first.size is not None and first.size > 0
    # The SDK authenticated with the identity fake's storage token, not anonymously.
    assert any(r["resource"] and "storage.azure.com" in r["resource"] for r in store.fakes.identity.requests())


def test_since_filters_on_the_blob_date(store: Storage) -> None:
    store.put("x.json", [eventgrid_dead_letter()])
    today = datetime.now(UTC).date()
    assert [x.name for x in store.source().list(today)] == ["x.json"]
    assert store.source().list(today + timedelta(days=1)) == []
    assert len(store.source().list(date(2000, 1, 1))) == 1


def test_an_unreadable_blob_is_reported_and_the_others_still_read(store: Storage) -> None:
    store.put("bad.json", b"<html>not a dead letter</html>")
    store.put("good.json", [eventgrid_dead_letter()])
    letters = {x.name: x for x in store.source().list()}
    assert letters["bad.json"].error is not None and "not JSON" in letters["bad.json"].error
    assert letters["bad.json"].events == () and letters["bad.json"].transient is False
    assert len(letters["good.json"].events) == 1


def test_delete_removes_the_blob_and_a_missing_blob_is_fine(store: Storage) -> None:
    store.put("gone.json", [eventgrid_dead_letter()])
    source = store.source()
    source.delete("gone.json")
    source.delete("gone.json")  # another replay deleted it first: not an error
    assert [b.name for b in store.container.list_blobs()] == []


def test_a_missing_container_is_not_found(store: Storage) -> None:
    with pytest.raises(NotFound, match="container does not exist"):
        store.source(store.azurite.container_url("no-such-container")).list()


def test_azurite_down_is_an_upstream_error(store: Storage) -> None:
    source = store.source(f"https://127.0.0.1:{_closed_port()}/{azurite.ACCOUNT}/deadletter", timeout=5)
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="listing dead-letter blobs"):
        source.list()
    assert time.monotonic() - started < 5


class StaticToken:
    """A TokenCredential holding one fixed token (a real protocol object, not a mock)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.mark.parametrize("token", [
    azurite.storage_token(now=datetime.now(UTC) - timedelta(days=3)),  # expired
    "devstack-mi.not-a-jwt",  # an opaque token, as a misconfigured identity endpoint would give
], ids=["expired", "opaque"])
def test_a_token_azurite_rejects_is_access_denied(store: Storage, token: str) -> None:
    store.put("x.json", [eventgrid_dead_letter()])
    with pytest.raises(AccessDenied, match="listing dead-letter blobs"):
        store.source(credential=StaticToken(token)).list()


def test_a_download_failure_is_reported_per_blob_as_transient(store: Storage) -> None:
    """The blob's download failing (Azurite gone between listing and download): that blob carries the
    error and is marked transient; nothing raises, so the other blobs are still replayed."""
    source = store.source(f"https://127.0.0.1:{_closed_port()}/{azurite.ACCOUNT}/deadletter", timeout=5)
    letter = source._read("a.json", None, None)
    assert letter.error is not None and "download of dead-letter blob 'a.json'" in letter.error
    assert letter.transient and letter.events == ()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens here once the socket closes

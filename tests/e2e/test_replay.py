"""`python -m rotation replay-deadletter` end to end: dead-letter blobs in Azurite (HTTPS, OAuth with the
app's managed-identity token) → the real CLI → real SDKs → fake ARM/Key Vault and real kube-apiservers.

Azurite is started here for this module (about half a second), on the session's devstack CA. The
identity endpoint must hand out an Azurite-shaped JWT for `https://storage.azure.com`; when the running
stack's endpoint does not (see devstack/azurite.py), a `StorageIdentity` overlay in front of it does.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from azure.identity import ManagedIdentityCredential
from azure.storage.blob import ContainerClient

from devstack import azurite
from devstack import stack as devstack
from devstack.tls import DevCA
from rotation import bootstrap
from rotation.cli import main
from rotation.core.token import GatewayToken
from tests.e2e.azurite_fixture import empty, start_azurite
from tests.e2e.conftest import World

GATEWAYS = ("gw-east", "gw-shared", "gw-west")
FOREIGN_SERVICE = ("/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/rg-devstack/providers/"
                   "Microsoft.ApiManagement/service/apim-other")


# --- what Event Grid writes into the dead-letter container ---------------------------------------------


def dead_eventgrid(gateway: str, instance: str, *, topic: str = devstack.SERVICE_ID) -> dict[str, Any]:
    """An Event Grid-schema event as dead-lettered: the event plus Event Grid's delivery metadata."""
    return {"id": str(uuid.uuid4()), "topic": topic, "subject": f"/gateways/{gateway}/{instance}",
            "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
            "eventTime": "2026-11-19T08:56:12.4410000Z", "dataVersion": "1", "metadataVersion": "1",
            "data": {"gatewayInfo": {"gatewayId": gateway, "instanceId": instance},
                     "tokenInfo": {"expiresAtUtc": "2026-11-26T08:56:00.0000000Z"}},
            "deadLetterReason": "MaxDeliveryAttemptsExceeded", "deliveryAttempts": 30,
            "lastDeliveryOutcome": "TimedOut", "lastHttpStatusCode": 0,
            "publishTime": "2026-11-19T08:56:12.6280000Z", "lastDeliveryAttemptTime": "2026-11-20T08:40:01.0000000Z"}


def cloudevent(gateway: str, instance: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": devstack.SERVICE_ID,
            "subject": f"/gateways/{gateway}/{instance}", "type": "Microsoft.ApiManagement.GatewayTokenExpired",
            "time": "2026-11-26T08:57:03.1200000Z",
            "data": {"gatewayInfo": {"gatewayId": devstack.gateway_id(gateway), "instanceId": instance},
                     "tokenInfo": {"expiredAtUtc": "2026-11-26T08:56:00.0000000Z"}}}


def dead_cloudevent(gateway: str, instance: str) -> dict[str, Any]:
    """CloudEvents 1.0, with the delivery metadata as extension attributes."""
    return {**cloudevent(gateway, instance), "deadletterreason": "DeliveryFailed", "deliveryattempts": 12,
            "lastdeliveryoutcome": "InternalServerError", "publishtime": "2026-11-26T08:57:03.5000000Z"}


def dead_cloudevent_wrapped(gateway: str, instance: str) -> dict[str, Any]:
    """CloudEvents 1.0, wrapped with a `deadletterproperties` object."""
    return {"event": cloudevent(gateway, instance), "deadletterproperties": {
        "deadletterreason": "MaxDeliveryAttemptsExceeded", "deliveryattempts": 30,
        "lastdeliveryoutcome": "Probation", "publishtime": "2026-11-26T08:57:04.0000000Z"}}


def blob_name(n: int) -> str:
    """Event Grid's layout: {topic}/{subscription}/{yyyy}/{MM}/{dd}/{HH}/{guid}.json."""
    now = datetime.now(UTC)
    return f"APIM-DEVSTACK/TOKEN-EVENTS/{now:%Y/%m/%d/%H}/{n:02d}-{uuid.uuid4()}.json"


# --- fixtures -------------------------------------------------------------------------------------------


@dataclass
class DeadLetters:
    url: str
    container: ContainerClient

    def put(self, *events: Any, raw: bytes | None = None) -> str:
        name = blob_name(len(self.names()))
        self.container.upload_blob(name, raw if raw is not None else json.dumps(list(events)).encode())
        return name

    def names(self) -> set[str]:
        return {b.name for b in self.container.list_blobs()}


@pytest.fixture(scope="module")
def storage(stack: devstack.Stack) -> Iterator[DeadLetters]:
    """Azurite with a `deadletter` container; DEADLETTER_BLOB_URL points the app at it."""
    ca = DevCA.load(stack.dir)
    server = start_azurite(stack.dir, ca)
    saved = {k: os.environ.get(k) for k in ("IDENTITY_ENDPOINT", "DEADLETTER_BLOB_URL")}
    overlay: azurite.StorageIdentity | None = None
    try:
        endpoint, header = stack.settings["IDENTITY_ENDPOINT"], stack.settings["IDENTITY_HEADER"]
        if not azurite.serves_storage(endpoint, header):
            overlay = azurite.StorageIdentity(endpoint, header)
            overlay.start()
            os.environ["IDENTITY_ENDPOINT"] = overlay.endpoint
        url = server.container_url("deadletter")
        os.environ["DEADLETTER_BLOB_URL"] = url
        container = ContainerClient.from_container_url(url, credential=ManagedIdentityCredential())
        container.create_container()
        yield DeadLetters(url, container)
        container.close()  # no idle keep-alive connection for Azurite to wait out on SIGTERM
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if overlay is not None:
            overlay.stop()
        server.stop()
        bootstrap.reset()


@pytest.fixture
def dead(storage: DeadLetters, world: World) -> DeadLetters:
    empty(storage.container)
    return storage


def replay(*args: str) -> tuple[int, str]:
    bootstrap.reset()
    out = StringIO()
    code = main(["replay-deadletter", *args], out=out)
    return code, out.getvalue()


def assert_no_token(world: World, text: str) -> None:
    world.register_vault_values()
    tokens = list(world.seeded.values()) + [s["value"] for s in world.vault().values() if "&" in (s.get("value") or "")]
    for token in tokens:
        assert token not in text and token.split("&")[2] not in text


def generate_calls(world: World) -> dict[str, int]:
    calls = world.calls("arm", "generateToken", method="POST")
    return {g: sum(f"/gateways/{g}/" in c["path"] for c in calls) for g in GATEWAYS}


def assert_rotated(world: World, gateway: str) -> GatewayToken:
    token = GatewayToken.parse(world.vault()[f"apim-apim-devstack-{gateway}-token"]["value"])
    assert token.value != world.seeded[gateway]
    assert token.expires_at > datetime.now(UTC) + timedelta(days=28)
    assert world.stack.verify(gateway, token.value)["valid"] is True
    for t in devstack.targets()[gateway]:
        held = world.value(t["cluster"], t["namespace"], t["secret"], t.get("key", "config.service.auth.key"))
        assert held == token.formatted(t.get("format", "GatewayKey {token}"))
    return token


def standard_blobs(dead: DeadLetters) -> dict[str, str]:
    """Several per-instance events per gateway in both schemas, a malformed event, an unknown gateway."""
    return {
        "shared": dead.put(*(dead_eventgrid("gw-shared", f"gw-shared-7c9d8f6b5-{i}") for i in range(3))),
        "mixed": dead.put(dead_cloudevent("gw-shared", "gw-shared-7c9d8f6b5-3"), dead_cloudevent("gw-east", "gw-east-0")),
        "wrapped": dead.put(dead_cloudevent_wrapped("gw-west", "gw-west-x1"), dead_cloudevent_wrapped("gw-west", "gw-west-x2")),
        "malformed": dead.put(dead_eventgrid("gw-east", "gw-east-1"),
                              {"topic": devstack.SERVICE_ID, "eventType": "Microsoft.ApiManagement.GatewayTokenExpired",
                               "data": {}, "deadLetterReason": "DeliveryFailed", "deliveryAttempts": 1}),
        "unknown": dead.put(dead_eventgrid("gw-nobody", "pod-1"), dead_eventgrid("gw-east", "pod-9", topic=FOREIGN_SERVICE)),
    }


# --- tests ----------------------------------------------------------------------------------------------


def test_replay_reconciles_each_gateway_once_and_deletes_what_it_replayed(world: World, dead: DeadLetters) -> None:
    blobs = standard_blobs(dead)
    code, out = replay()
    assert code == 0, out
    # Level-triggered: 8 replayable events over 3 gateways -> exactly one token per gateway.
    assert generate_calls(world) == {"gw-east": 1, "gw-shared": 1, "gw-west": 1}
    for gateway in GATEWAYS:
        assert_rotated(world, gateway)
    # Fully replayed blobs are gone; a blob with a skipped event stays for a human to look at.
    assert dead.names() == {blobs["malformed"], blobs["unknown"]}
    assert "malformed: event has no 'id'" in out
    assert "gateway gw-nobody of " + devstack.SERVICE_ID + " is not in the registry" in out
    assert f"gateway gw-east of {FOREIGN_SERVICE} is not in the registry" in out
    assert f"blob {blobs['shared']}" in out and "deleted" in out
    assert "[dead-lettered: MaxDeliveryAttemptsExceeded after 30 attempt(s)]" in out
    assert "summary: 3 gateway(s) replayed (0 failed); events: 8 replayed, 3 skipped, 0 failed; " \
           "blobs: 3 deleted, 2 kept" in out
    assert_no_token(world, out)


def test_json_report_per_blob_and_event(world: World, dead: DeadLetters) -> None:
    blobs = standard_blobs(dead)
    code, out = replay("--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["ok"] is True and doc["dryRun"] is False and doc["container"] == dead.url
    assert doc["summary"] == {"blobs": 5, "events": 11, "replayed": 8, "skipped": 3, "failed": 0, "gateways": 3,
                              "gatewaysFailed": 0, "deleted": 3, "kept": 2, "unreadable": 0}
    by_name = {b["name"]: b for b in doc["blobs"]}
    assert by_name[blobs["shared"]]["action"] == "deleted"
    shared_events = by_name[blobs["shared"]]["events"]
    assert {e["gateway"] for e in shared_events} == {"apim-devstack/gw-shared"}
    assert {e["outcome"] for e in shared_events} == {"replayed"}
    assert shared_events[0]["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
    assert shared_events[0]["deliveryAttempts"] == 30 and shared_events[0]["type"] == "GatewayTokenNearExpiry"
    wrapped = by_name[blobs["wrapped"]]["events"]
    assert [e["deadLetterReason"] for e in wrapped] == ["MaxDeliveryAttemptsExceeded"] * 2
    malformed = by_name[blobs["malformed"]]
    assert malformed["action"] == "kept" and malformed["note"] == "1 event(s) skipped"
    assert [e["outcome"] for e in malformed["events"]] == ["replayed", "skipped"]
    assert {r["gatewayId"] for r in doc["gateways"]} == {devstack.gateway_id(g) for g in GATEWAYS}
    assert all(r["rotated"] and r["ok"] and r["fingerprint"] for r in doc["gateways"])
    assert_no_token(world, out)


def test_dry_run_writes_nothing_and_keeps_every_blob(world: World, dead: DeadLetters) -> None:
    blobs = standard_blobs(dead)
    before = world.snapshot()
    code, out = replay("--dry-run", "--json")
    assert code == 0
    assert world.snapshot() == before  # Key Vault versions, every Secret and workload, ARM writes
    assert generate_calls(world) == dict.fromkeys(GATEWAYS, 0)
    assert dead.names() == set(blobs.values())
    doc = json.loads(out)
    assert doc["dryRun"] is True and doc["summary"]["deleted"] == 0
    assert {b["action"] for b in doc["blobs"] if b["name"] in (blobs["shared"], blobs["wrapped"])} == {"would_delete"}
    assert all(r["dryRun"] and {t["outcome"] for t in r["targets"]} == {"planned"} for r in doc["gateways"])
    code, text = replay("--dry-run")
    assert code == 0 and "(dry run: nothing written, nothing deleted)" in text and "would delete" in text
    assert world.snapshot() == before


def test_keep_replays_but_deletes_nothing(world: World, dead: DeadLetters) -> None:
    blobs = standard_blobs(dead)
    code, _ = replay("--keep")
    assert code == 0
    for gateway in GATEWAYS:
        assert_rotated(world, gateway)
    assert dead.names() == set(blobs.values())


def test_replaying_again_writes_nothing(world: World, dead: DeadLetters) -> None:
    """Duplicates are harmless: the second replay finds fresh tokens and in-sync targets."""
    dead.put(dead_eventgrid("gw-shared", "pod-a"))
    assert replay()[0] == 0
    world.wait_all_rolled_out()  # an event replayed while the restarted pods roll out would be kept
    after_first = world.snapshot()
    again = dead.put(dead_eventgrid("gw-shared", "pod-a"), dead_eventgrid("gw-shared", "pod-b"))
    code, out = replay("--json")
    assert code == 0 and dead.names() == set()
    assert world.snapshot() == after_first
    (report,) = json.loads(out)["gateways"]
    assert report["rotated"] is False and {t["outcome"] for t in report["targets"]} == {"in_sync"}
    assert again not in dead.names()


def test_a_failed_gateway_keeps_its_blobs_and_exits_1(world: World, dead: DeadLetters) -> None:
    east = dead.put(dead_eventgrid("gw-east", "pod-1"))
    shared = dead.put(dead_eventgrid("gw-shared", "pod-1"))
    world.fault("arm", method="POST", path="/gateways/gw-east/generateToken", status=403, times=0,
                code="AuthorizationFailed", message="the client does not have authorization")
    code, out = replay()
    assert code == 1
    assert dead.names() == {east}  # gw-shared's blob is done; gw-east's stays for the next replay
    assert shared not in dead.names()
    assert "failed" in out and "403" in out
    assert_rotated(world, "gw-shared")
    world.stack.control(world.stack.arm_url, "DELETE", "/_devstack/faults")
    assert replay()[0] == 0 and dead.names() == set()
    assert_rotated(world, "gw-east")


def test_an_unreadable_blob_is_reported_and_kept(world: World, dead: DeadLetters) -> None:
    bad = dead.put(raw=b"<Error>not a dead letter</Error>")
    dead.put(dead_eventgrid("gw-west", "pod-1"))
    code, out = replay()
    assert code == 0  # bad content is permanent: reported, not a failure to retry
    assert dead.names() == {bad}
    assert f"blob {bad}" in out and "unreadable: not JSON" in out
    assert_rotated(world, "gw-west")


def test_since_skips_older_blobs(world: World, dead: DeadLetters) -> None:
    dead.put(dead_eventgrid("gw-east", "pod-1"))
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    code, out = replay("--since", tomorrow)
    assert code == 0 and "no dead-lettered events" in out
    assert generate_calls(world)["gw-east"] == 0 and len(dead.names()) == 1


def test_empty_container(world: World, dead: DeadLetters) -> None:
    code, out = replay()
    assert code == 0 and "no dead-lettered events" in out


def test_container_url_option_wins_over_the_setting(world: World, dead: DeadLetters,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEADLETTER_BLOB_URL", dead.url.rsplit("/", 1)[0] + "/no-such-container")
    dead.put(dead_eventgrid("gw-east", "pod-1"))
    code, _ = replay("--container-url", dead.url)
    assert code == 0 and dead.names() == set()


def test_bad_input_and_configuration_exit_2(world: World, dead: DeadLetters, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    dead.put(dead_eventgrid("gw-east", "pod-1"))
    before = world.snapshot()
    assert replay("--since", "last week")[0] == 2
    assert "--since must be a date YYYY-MM-DD" in capsys.readouterr().err
    assert replay("--container-url", "http://127.0.0.1:1/devstoreaccount1/deadletter")[0] == 2
    assert "--container-url 'http://127.0.0.1:1/devstoreaccount1/deadletter' must be an https:// URL" in capsys.readouterr().err
    monkeypatch.delenv("DEADLETTER_BLOB_URL")
    assert replay()[0] == 2
    assert "pass --container-url or set DEADLETTER_BLOB_URL" in capsys.readouterr().err
    assert world.snapshot() == before and len(dead.names()) == 1


def test_a_missing_container_is_a_clear_error(world: World, dead: DeadLetters,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = replay("--container-url", dead.url.rsplit("/", 1)[0] + "/no-such-container")
    assert code == 2
    err = capsys.readouterr().err
    assert "container does not exist" in err and err[-1] == "\n" and err.count("\n") == 1

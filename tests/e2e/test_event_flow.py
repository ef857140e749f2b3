"""The event path end to end: Event Grid payload → azure-functions converter → handler → real SDKs →
fake ARM/Key Vault over HTTPS and real kube-apiservers with RBAC."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devstack import stack as devstack
from rotation import bootstrap
from rotation.core.token import GatewayToken
from rotation.triggers import RotationIncomplete
from tests.e2e.conftest import World
from tests.functions.conftest import deliver, http

SHARED_TARGETS = devstack.targets()["gw-shared"]


def near_expiry(gateway: str = "gw-shared", instance: str = "pod-1") -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "topic": devstack.SERVICE_ID, "subject": f"/gateways/{gateway}/{instance}",
            "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry", "eventTime": "2026-11-26T08:56:12.4410000Z",
            "dataVersion": "1", "data": {"gatewayInfo": {"gatewayId": gateway, "instanceId": instance},
                                         "tokenInfo": {"expiresAtUtc": "2026-11-29T08:56:00.0000000Z"}}}


def expired_cloudevent(gateway: str = "gw-shared") -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": devstack.SERVICE_ID,
            "subject": f"/gateways/{gateway}/pod-2", "type": "Microsoft.ApiManagement.GatewayTokenExpired",
            "time": "2026-11-26T08:57:03.1200000Z",
            "data": {"gatewayInfo": {"gatewayId": devstack.gateway_id(gateway), "instanceId": "pod-2"},
                     "tokenInfo": {"expiredAtUtc": "2026-11-26T08:56:00.0000000Z"}}}


def assert_rotated_everywhere(world: World, gateway: str = "gw-shared") -> GatewayToken:
    secret = world.vault()[f"apim-apim-devstack-{gateway}-token"]
    token = GatewayToken.parse(secret["value"])
    assert token.value != world.seeded[gateway]
    assert token.expires_at > datetime.now(UTC) + timedelta(days=28)
    assert secret["versions"] == world.initial_versions[secret["name"]] + 1 and secret["contentType"] == "application/vnd.apim-gateway-token"
    assert secret["tags"]["gatewayId"] == devstack.gateway_id(gateway)
    assert secret["tags"]["fingerprint"] == token.fingerprint and secret["tags"]["keyType"] == "primary"
    assert secret["expires"] == int(token.expires_at.timestamp())
    assert world.stack.verify(gateway, token.value)["valid"] is True
    for t in devstack.targets()[gateway]:
        held = world.value(t["cluster"], t["namespace"], t["secret"], t.get("key", "config.service.auth.key"))
        assert held == token.formatted(t.get("format", "GatewayKey {token}"))
        for w in t["restart"]:
            restarted = world.restarted_at(t["cluster"], t["namespace"], w)
            assert restarted is not None and restarted.startswith(str(datetime.now(UTC).year))
    return token


def test_event_grid_schema_rotates_every_target(world: World) -> None:
    deliver(near_expiry())
    assert_rotated_everywhere(world)
    assert len(world.calls("arm", "generateToken")) == 1


def test_cloudevent_schema_rotates_every_target(world: World) -> None:
    deliver(expired_cloudevent())
    assert_rotated_everywhere(world)


def test_key_vault_failure_leaves_every_cluster_untouched(world: World) -> None:
    world.fault("keyvault", method="PUT", path="/secrets/apim-apim-devstack-gw-shared-token", status=500, times=0)
    before = world.snapshot()
    with pytest.raises(Exception, match="500"):
        deliver(near_expiry())  # transient: raised so Event Grid redelivers
    assert len(world.calls("arm", "generateToken")) == 1
    assert world.snapshot()["targets"] == before["targets"]  # no cluster saw a token Key Vault lacks
    world.stack.control(world.stack.keyvault_url, "DELETE", "/_devstack/faults")
    deliver(near_expiry())  # the redelivery
    assert_rotated_everywhere(world)


def test_per_instance_events_generate_one_token(world: World) -> None:
    """APIM sends one event per gateway instance. The first rotates and restarts; an event for an old
    instance is acknowledged once the restarted workloads rolled out (until then it fails, and Event
    Grid redelivers it), and never rotates again."""
    for i in range(4):
        deliver(near_expiry(instance=f"pod-{i}"))
        world.wait_all_rolled_out()
    assert len(world.calls("arm", "generateToken")) == 1
    assert len(world.calls("keyvault", "/secrets/apim-apim-devstack-gw-shared-token", method="PUT")) == 1
    assert_rotated_everywhere(world)


def test_second_delivery_writes_nothing(world: World) -> None:
    event = near_expiry()
    deliver(event)
    world.wait_all_rolled_out()  # a redelivery while the restarted pods roll out fails (retried later)
    before = world.snapshot()
    deliver(event)
    assert world.snapshot() == before


def test_expired_event_with_fresh_key_vault_token_repairs_only_the_stale_target(world: World) -> None:
    deliver(near_expiry())
    token = assert_rotated_everywhere(world)
    from kubernetes import client

    east, west = SHARED_TARGETS
    client.CoreV1Api(world.stack.admin("west")).patch_namespaced_secret(
        "gw-shared-token", "gateways", {"stringData": {"value": world.seeded["gw-shared"]}})
    world.wait_all_rolled_out()  # the first delivery's restarts: an event meanwhile would be retried
    before = world.snapshot()
    deliver(expired_cloudevent())
    after = world.snapshot()
    assert world.value("west", "gateways", "gw-shared-token", "value") == token.value
    assert after["vault"] == before["vault"] and after["arm_writes"] == before["arm_writes"]
    assert after["targets"]["east/apim/gw-shared-token"] == before["targets"]["east/apim/gw-shared-token"]
    assert after["targets"]["east/apim/deployment/gw-shared"] == before["targets"]["east/apim/deployment/gw-shared"]
    assert after["targets"]["west/gateways/gw-shared-token"] != before["targets"]["west/gateways/gw-shared-token"]
    assert east and west


def test_forced_http_rotation_of_a_fresh_token(world: World) -> None:
    fresh = world.reseed(timedelta(days=20))["gw-shared"]
    status, body = http("rotate", "POST", "http://localhost/api/gateways/apim-devstack/gw-shared/rotate",
                        {"service": "apim-devstack", "gateway": "gw-shared"}, {"force": True, "reason": "drill"})
    assert status == 200 and body["rotated"] and body["reason"] == "drill"
    assert [t["outcome"] for t in body["targets"]] == ["updated", "updated"]
    token = GatewayToken.parse(world.vault()["apim-apim-devstack-gw-shared-token"]["value"])
    assert token.value != fresh and body["fingerprint"] == token.fingerprint
    assert token.value not in json.dumps(body)
    assert world.stack.verify("gw-shared", fresh)["valid"] is True  # generating never invalidates
    status, body = http("rotate", "POST", "http://localhost/api/gateways/apim-devstack/gw-shared/rotate",
                        {"service": "apim-devstack", "gateway": "gw-shared"})
    assert status == 200 and not body["rotated"]  # not forced, and fresh now: nothing to do
    assert [t["outcome"] for t in body["targets"]] == ["in_sync", "in_sync"]


@pytest.mark.parametrize(
    "payload",
    [
        near_expiry(gateway="not-registered"),
        {"id": "x", "topic": devstack.SERVICE_ID, "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
         "subject": "/gateways/../etc", "data": {}},
        {"id": "x", "topic": devstack.SERVICE_ID, "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
         "data": []},
        {"specversion": "1.0", "id": "x", "source": "/subscriptions/x", "type": "Microsoft.ApiManagement.GatewayTokenExpired",
         "subject": "/gateways/gw-shared/p", "data": {}},
    ],
    ids=["unknown-gateway", "hostile-subject", "malformed-data", "foreign-source"],
)
def test_bad_events_write_nothing(world: World, payload: dict[str, Any]) -> None:
    before = world.snapshot()
    deliver(payload)  # returns: permanent, not retried
    assert world.snapshot() == before
    assert world.calls("arm") == []


def test_invalid_registry_writes_nothing(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATION_REGISTRY", '{"clusters": [], "gateways": [{"id": "/nope"}]}')
    bootstrap.reset()
    before = world.snapshot()
    deliver(near_expiry())
    assert world.snapshot() == before
    status, body = http("health", "GET", "http://localhost/api/health")
    assert status == 503 and "gateways[0].id" in body["error"]


def test_unreachable_cluster_fails_its_target_and_the_retry_finishes(world: World,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    registry = json.loads(world.stack.settings["ROTATION_REGISTRY"])
    real_server = registry["clusters"][0]["server"]
    registry["clusters"][0]["server"] = "https://127.0.0.1:9"  # nothing listens there
    monkeypatch.setenv("ROTATION_REGISTRY", json.dumps(registry))
    bootstrap.reset()
    with pytest.raises(RotationIncomplete, match="east/apim/gw-shared-token: failed"):
        deliver(near_expiry())
    token = GatewayToken.parse(world.vault()["apim-apim-devstack-gw-shared-token"]["value"])
    assert world.value("west", "gateways", "gw-shared-token", "value") == token.value  # the other target done
    registry["clusters"][0]["server"] = real_server
    monkeypatch.setenv("ROTATION_REGISTRY", json.dumps(registry))
    bootstrap.reset()
    world.wait_all_rolled_out()  # west's restart rolled out: the redelivery is acknowledged
    deliver(near_expiry())  # Event Grid's redelivery
    assert assert_rotated_everywhere(world) == token

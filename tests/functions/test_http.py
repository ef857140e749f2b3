from __future__ import annotations

from datetime import timedelta

import pytest

from rotation import bootstrap
from rotation.core.errors import UpstreamError
from rotation.core.model import KeyType
from tests.functions.conftest import http
from tests.service.conftest import World

URL = "http://localhost/api/gateways/contoso-apim/gw-1/rotate"
ROUTE = {"service": "contoso-apim", "gateway": "gw-1"}


def test_rotate_returns_the_report(app_world: World) -> None:
    status, body = http("rotate", "POST", URL, ROUTE, {"reason": "manual", "force": True})
    assert status == 200
    assert body["rotated"] is True and body["reason"] == "manual" and body["ok"] is True
    assert [t["outcome"] for t in body["targets"]] == ["updated", "updated"]
    stored = app_world.store.get(app_world.gw1.key_vault_secret)
    assert stored is not None and body["fingerprint"] == stored.token.fingerprint
    assert stored.token.value not in str(body)


def test_rotate_without_body_uses_defaults(app_world: World) -> None:
    status, body = http("rotate", "POST", URL, ROUTE)
    assert status == 200 and body["reason"] == "http request" and not body["dryRun"]


def test_partial_failure_is_207(app_world: World) -> None:
    app_world.west.faults.queue["read"] = [UpstreamError("cluster west unreachable")]
    status, body = http("rotate", "POST", URL, ROUTE)
    assert status == 207
    assert [t["outcome"] for t in body["targets"]] == ["updated", "failed"]
    assert body["targets"][1]["error"] == "cluster west unreachable"


def test_dry_run_over_http(app_world: World) -> None:
    status, body = http("rotate", "POST", URL, ROUTE, {"dryRun": True})
    assert status == 200 and body["dryRun"] is True
    assert {t["outcome"] for t in body["targets"]} == {"planned"}
    assert app_world.issuer.calls == [] and app_world.store.writes == 0


@pytest.mark.parametrize(
    ("route", "body", "status", "message"),
    [
        ({"service": "contoso-apim", "gateway": "nope"}, b"", 404, "gateway contoso-apim/nope is not in the registry"),
        ({"service": "contoso-apim", "gateway": ".."}, b"", 400, "invalid gateway name '..'"),
        ({"service": "contoso-apim", "gateway": "a%2Fb"}, b"", 400, "invalid gateway name"),
        ({"service": "contoso-apim", "gateway": "g" * 300}, b"", 400, "invalid gateway name"),
        ({"service": "contoso_apim", "gateway": "gw-1"}, b"", 400, "invalid APIM service name"),
        ({"service": "cöntoso", "gateway": "gw-1"}, b"", 400, "invalid APIM service name"),
        (ROUTE, b"{not json", 400, "request body must be JSON"),
        (ROUTE, b"[1]", 400, "request body must be a JSON object"),
        (ROUTE, b'{"force": "yes"}', 400, "field 'force' must be a bool"),
        (ROUTE, b'{"reason": 5}', 400, "field 'reason' must be a str"),
        (ROUTE, b'{"forse": true}', 400, "unknown field 'forse'"),
        (ROUTE, b'{"reason": "' + b"x" * 300 + b'"}', 400, "longer than 200"),
    ],
)
def test_bad_requests_write_nothing(app_world: World, route: dict[str, str], body: bytes, status: int,
                                    message: str) -> None:
    got, answer = http("rotate", "POST", URL, route, body)
    assert got == status and message in answer["error"]
    assert app_world.issuer.calls == [] and app_world.store.calls == []
    assert app_world.east.calls == [] and app_world.west.calls == []


def test_transient_failure_is_503_with_retry_after(app_world: World) -> None:
    app_world.store.faults.queue["get"] = [UpstreamError("Key Vault get: 503 ServiceUnavailable")]
    status, body = http("rotate", "POST", URL, ROUTE)
    assert status == 503 and "503" in body["error"]


def test_status_routes(app_world: World) -> None:
    token = app_world.seed_token(app_world.gw1, timedelta(days=20))
    status, body = http("list_gateways", "GET", "http://localhost/api/gateways")
    assert status == 200
    gw1, gw2 = body["gateways"]
    assert gw1["expiresAt"] == token.expires_at.isoformat() and gw1["keyType"] == "primary"
    assert [t["state"] for t in gw1["targets"]] == ["in_sync", "in_sync"]
    assert gw1["targets"][0]["rollouts"] == [{"workload": "deployment/gw1", "ready": True, "detail": "1/1 updated"}]
    assert gw2["error"] == "no token in Key Vault"
    status, one = http("get_gateway", "GET", "http://localhost/api/gateways/contoso-apim/gw-1", ROUTE)
    assert status == 200 and one == gw1
    assert token.value not in str(body)
    status, _ = http("get_gateway", "GET", "http://localhost/api/gateways/contoso-apim/x",
                           {"service": "contoso-apim", "gateway": "x"})
    assert status == 404


def test_roll_keys_route(app_world: World) -> None:
    app_world.seed_token(app_world.gw1, timedelta(days=20))
    url = "http://localhost/api/gateways/contoso-apim/gw-1/roll-keys"
    status, body = http("roll_keys", "POST", url, ROUTE, {"dryRun": True})
    assert status == 400 and "'fromKey' is required" in body["error"]  # the direction is never guessed
    status, body = http("roll_keys", "POST", url, ROUTE, {"fromKey": "primary", "dryRun": True})
    assert status == 200 and body["phase"] == "planned"
    status, body = http("roll_keys", "POST", url, ROUTE, {"fromKey": "primary", "waitSeconds": 0})
    assert status == 409 and body["phase"] == "pending"  # gw-1's west target has no restart list
    assert any("--confirm-restarted" in p for p in body["pending"])
    writes = app_world.store.writes
    status, body = http("roll_keys", "POST", url, ROUTE, {"fromKey": "secondary", "waitSeconds": 0})
    assert status == 400 and "a key roll from primary to secondary is pending" in body["error"]
    assert app_world.store.writes == writes and app_world.issuer.regenerated == []
    status, body = http("roll_keys", "POST", url, ROUTE,
                        {"fromKey": "primary", "waitSeconds": 0, "confirmRestarted": True})
    assert status == 200 and body["phase"] == "completed" and body["regenerated"] is True
    assert (body["fromKey"], body["toKey"]) == ("primary", "secondary")
    assert app_world.issuer.regenerated == [KeyType.PRIMARY]
    status, body = http("roll_keys", "POST", url, ROUTE, {"fromKey": "primary", "waitSeconds": 999})
    assert status == 400


def test_roll_keys_http_wait_leaves_room_in_the_230_second_http_limit(app_world: World) -> None:
    """Microsoft Learn, "Azure Functions hosting options" / function app timeout duration: "Regardless of
    the function app timeout setting, 230 seconds is the maximum amount of time that an HTTP triggered
    function can take to respond to a request" (Azure Load Balancer's idle timeout). Phase 1 has the
    deadline (20 s), phase 2 re-reads everything and regenerates: the rollout wait must leave room, or
    the caller loses the answer of a roll that goes on. The CLI has no such limit."""
    url = "http://localhost/api/gateways/contoso-apim/gw-1/roll-keys"
    status, body = http("roll_keys", "POST", url, ROUTE, {"fromKey": "primary", "waitSeconds": 151})
    assert status == 400 and "between 0 and 150" in body["error"] and "230" in body["error"]
    assert app_world.store.writes == 0 and app_world.issuer.regenerated == []


def test_health(app_world: World) -> None:
    status, body = http("health", "GET", "http://localhost/api/health")
    assert status == 200 and body["status"] == "ok" and (body["gateways"], body["clusters"]) == (2, 2)
    assert "in-process only" in body["warning"]  # LEASE_CONTAINER_URL unset: said loudly
    assert body["sweepSchedule"] == "0 0 * * * *"


def test_health_reports_invalid_settings() -> None:
    bootstrap.reset({"ROTATION_REGISTRY": '{"clusters": [], "gateways": [{}]}', "KEY_VAULT_URL": "https://kv"})
    try:
        status, body = http("health", "GET", "http://localhost/api/health")
        assert status == 503 and "gateways[0]: unknown field" not in body["error"]
        assert "gateways[0].id: is required" in body["error"]
        status, body = http("rotate", "POST", URL, ROUTE)
        assert status == 500 and "misconfigured" in body["error"]
    finally:
        bootstrap.reset()

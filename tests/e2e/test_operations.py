"""Operator paths on the devstack: status, dry run, the two-phase key roll, outcome events, the CLI."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import timedelta

import pytest

from devstack import stack as devstack
from rotation.cli import main as cli
from rotation.core.token import GatewayToken
from tests.e2e.conftest import World
from tests.functions.conftest import http


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli(list(argv), out)
    return code, out.getvalue()


def test_status_reports_expiry_sync_and_rollouts(world: World) -> None:
    from kubernetes import client

    client.CoreV1Api(world.stack.admin("west")).patch_namespaced_secret(
        "gw-shared-token", "gateways", {"stringData": {"value": "not a token"}})
    client.CoreV1Api(world.stack.admin("east")).delete_namespaced_secret("gw-east-token", "apim")
    code, text = run("status", "--json")
    assert code == 1  # not healthy
    gateways = {g["gateway"]: g for g in json.loads(text)["gateways"]}
    shared = gateways["gw-shared"]
    assert shared["keyType"] == "primary"
    assert shared["fingerprint"] == GatewayToken.parse(world.seeded["gw-shared"]).fingerprint
    assert [t["state"] for t in shared["targets"]] == ["in_sync", "stale"]
    assert gateways["gw-east"]["targets"][0]["state"] == "missing"
    assert shared["targets"][0]["rollouts"][0]["workload"] == "deployment/gw-shared"
    for token in world.seeded.values():
        assert token not in text
    world.reseed()  # put the deleted Secret back for the rest of the session


def test_status_over_http_matches_the_cli(world: World) -> None:
    status, body = http("get_gateway", "GET", "http://localhost/api/gateways/apim-devstack/gw-west",
                        {"service": "apim-devstack", "gateway": "gw-west"})
    assert status == 200 and body["targets"][0]["state"] == "in_sync"
    code, text = run("status", "apim-devstack/gw-west")
    assert code in (0, 1) and "in_sync" in text and "gateways/gw-west-token" in text


@pytest.mark.parametrize("argv", [
    ("rotate", "apim-devstack/gw-shared", "--dry-run", "--force"),
    ("sweep", "--dry-run"),
    ("roll-keys", "apim-devstack/gw-shared", "--from", "primary", "--dry-run"),
])
def test_dry_runs_write_nothing_anywhere(world: World, argv: tuple[str, ...]) -> None:
    before = world.snapshot()
    code, text = run(*argv, "--json")
    assert code == 0
    assert world.snapshot() == before
    assert world.calls("arm", method="POST") == []
    assert "planned" in text
    assert world.stack.outcome_events() == []


def test_roll_keys_invalidates_old_tokens_only_after_every_target_confirmed(world: World) -> None:
    old = world.seeded["gw-shared"]
    code, text = run("roll-keys", "apim-devstack/gw-shared", "--from", "primary", "--wait", "20", "--json")
    report = json.loads(text)
    assert code == 0 and report["phase"] == "completed" and report["regenerated"]
    assert (report["fromKey"], report["toKey"]) == ("primary", "secondary")
    token = GatewayToken.parse(world.vault()["apim-apim-devstack-gw-shared-token"]["value"])
    assert world.stack.verify("gw-shared", token.value) | {"expiresAt": None} == world.stack.verify(
        "gw-shared", token.value) | {"expiresAt": None}
    assert world.stack.verify("gw-shared", token.value)["keyType"] == "secondary"
    assert world.stack.verify("gw-shared", old)["valid"] is False  # the leaked key is gone
    # the other gateways' primary-key tokens are untouched
    assert world.stack.verify("gw-east", world.seeded["gw-east"])["valid"] is True
    calls = world.calls("arm", method="POST")
    assert [c["path"].rsplit("/", 1)[-1].split("?")[0] for c in calls] == ["generateToken", "regenerateKey"]
    tags = world.vault()["apim-apim-devstack-gw-shared-token"]["tags"]
    assert "keyRollFrom" not in tags and tags["keyType"] == "secondary"


def test_roll_keys_stops_before_regenerating_when_a_rollout_does_not_finish(world: World) -> None:
    old = world.seeded["gw-shared"]
    (world.stack.dir / "controller.paused").touch()
    code, text = run("roll-keys", "apim-devstack/gw-shared", "--from", "primary", "--wait", "1")
    assert code == 1 and "pending" in text and "rollout not finished" in text
    assert "NOT regenerated" in text
    assert world.stack.verify("gw-shared", old)["valid"] is True  # still valid: nothing regenerated
    assert world.vault()["apim-apim-devstack-gw-shared-token"]["tags"]["keyRollFrom"] == "primary"
    assert "regenerateKey" not in json.dumps(world.calls("arm"))
    (world.stack.dir / "controller.paused").unlink()
    code, text = run("roll-keys", "apim-devstack/gw-shared", "--from", "primary", "--wait", "20")
    assert code == 0 and "completed" in text and "(resumed)" in text
    assert len(world.calls("arm", "generateToken")) == 1  # resuming reused phase 1's token
    assert world.stack.verify("gw-shared", old)["valid"] is False


def test_outcome_events_are_published(world: World) -> None:
    code, _ = run("rotate", "apim-devstack/gw-west")
    assert code == 0
    (event,) = world.stack.outcome_events()
    assert event["type"] == "ApimTokenRotator.TokenRotated"
    assert event["subject"] == devstack.gateway_id("gw-west")
    assert event["data"]["targets"][0]["outcome"] == "updated"
    token = world.vault()["apim-apim-devstack-gw-west-token"]["value"]
    assert token not in json.dumps(event) and event["data"]["fingerprint"] == GatewayToken.parse(token).fingerprint


def test_a_failing_outcome_topic_never_fails_a_rotation(world: World) -> None:
    world.fault("eventgrid", path="/api/events", status=500, times=0)
    code, text = run("rotate", "apim-devstack/gw-west")
    assert code == 0 and "updated" in text
    assert world.stack.outcome_events() == []


def test_a_hanging_outcome_topic_is_abandoned_after_the_publish_timeout(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    from rotation.adapters.outcomes import PUBLISH_TIMEOUT_SECONDS

    world.fault("eventgrid", path="/api/events", delaySeconds=30, times=0)
    started = time.monotonic()
    code, text = run("rotate", "apim-devstack/gw-west")
    took = time.monotonic() - started
    assert code == 0 and "updated" in text
    assert took < PUBLISH_TIMEOUT_SECONDS + 3, f"the publish held the rotation for {took:.1f} s"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w for w in warnings if "could not publish the outcome event" in w] == [
        f"could not publish the outcome event for {devstack.gateway_id('gw-west')}: ServiceResponseTimeoutError"]
    assert not [w for w in warnings if "not a known attribute" in w]  # the SDK's model warning


def test_cli_errors_are_one_line(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("rotate", "apim-devstack/nope")[0] == 2
    assert run("rotate", "apim-devstack/..")[0] == 2
    assert run("rotate", "no-slash")[0] == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: gateway apim-devstack/nope is not in the registry",
                   "error: invalid gateway name '..'",
                   "error: gateway must be SERVICE/GATEWAY or a full ARM id, got 'no-slash'"]


def test_sweep_renews_every_near_expiry_gateway(world: World) -> None:
    code, text = run("sweep")
    assert code == 0 and "3 gateways, 3 rotated, 0 failed" in text
    code, text = run("sweep", "--json")
    body = json.loads(text)
    assert code == 0 and body["rotated"] == 0
    assert {t["outcome"] for r in body["reports"] for t in r["targets"]} == {"in_sync"}


def test_fresh_tokens_cost_one_listing(world: World) -> None:
    world.reseed(timedelta(days=20))
    assert run("sweep")[0] == 0  # a cold worker also reads the west kubeconfig once
    world.stack.control(world.stack.keyvault_url, "DELETE", "/_devstack/calls")
    code, _ = run("sweep")
    assert code == 0
    reads = [c for c in world.calls("keyvault") if c["method"] == "GET" and c["status"] == 200]
    assert [c["path"].split("?")[0] for c in reads] == ["/secrets"]
    assert world.calls("arm") == []

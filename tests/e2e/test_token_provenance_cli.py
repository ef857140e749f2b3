"""Token provenance through the CLI on the devstack: a value is gateway G's token because of where it
came from (one of G's Key Vault versions this product wrote, or reproduced by ARM's generateToken for
G's full ARM id), never because of the gateway name and expiry written in it.

The CLI runs as separate processes (`python -m rotation`) against real kube-apiservers with RBAC and
the ARM and Key Vault fakes over HTTPS; the ARM fake verifies tokens with the keys it issued them from
(devstack/arm.py `/_devstack/verify`). A token's expiry is capped at 30 days by ARM itself ("Gateway -
Generate Token", learn.microsoft.com/rest/api/apimanagement/current-ga/gateway/generate-token: "Maximum
token expiry time is set to 30 days"). Review cases 1 (planted Secret), 2 (forged far-future token),
3 (same gateway name in another APIM service) and 5 (the roll ignores what workloads read).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devstack import kube
from devstack import stack as devstack
from rotation import bootstrap
from rotation.core.model import GatewayRef, KeyType, TokenRecord
from rotation.core.registry import default_secret_name
from rotation.core.tags import CONTENT_TYPE, tags_for
from rotation.core.token import GatewayToken, fingerprint, parse_stored
from tests import leakcheck
from tests.e2e.conftest import World

REPO = Path(__file__).resolve().parents[2]
STAGING_ID = devstack.SERVICE_ID.replace("/service/apim-devstack", "/service/apim-staging")
TENANT = "tenant-a"


def cli(*argv: str) -> tuple[int, str, str]:
    """`python -m rotation ...` as an operator runs it, with the app settings of the devstack."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "rotation", *argv], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=180, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def forged(gateway: str, expiry: datetime) -> str:
    """The gateway's name, an expiry and 64 random bytes of base64: the shape of a token, nobody's token."""
    value = f"{gateway}&{expiry:%Y%m%d%H%M}&{base64.b64encode(secrets.token_bytes(64)).decode()}"
    leakcheck.register(value)
    return value


def no_token_in(text: str, *values: str) -> None:
    leaked = [fingerprint(v) for v in values if v in text or v.split("&")[-1] in text]
    assert not leaked, f"token(s) {leaked} in the output"


def core(world: World, cluster: str) -> Any:
    from kubernetes import client

    return client.CoreV1Api(world.stack.admin(cluster))


def apps(world: World, cluster: str) -> Any:
    from kubernetes import client

    return client.AppsV1Api(world.stack.admin(cluster))


def patch_key(world: World, cluster: str, namespace: str, secret: str, key: str, value: str) -> None:
    """What anyone with `patch` on that one Secret can do."""
    core(world, cluster).patch_namespaced_secret(secret, namespace, {"data": {key: base64.b64encode(
        value.encode()).decode()}})


def held(world: World, gateway: str) -> list[GatewayToken | None]:
    return [parse_stored(world.value(t["cluster"], t["namespace"], t["secret"], t.get("key", "config.service.auth.key")))
            for t in devstack.targets()[gateway]]


def assert_every_target_holds_a_verified_token(world: World, gateway: str) -> None:
    """Key Vault's latest verifies against the ARM fake, and every target holds exactly it."""
    latest = parse_stored(world.vault()[default_secret_name(GatewayRef.parse(devstack.gateway_id(gateway)))]["value"])
    assert latest is not None and world.stack.verify(gateway, latest.value)["valid"] is True
    tokens = held(world, gateway)
    assert tokens == [latest] * len(tokens)


@pytest.fixture
def registry_env() -> Iterator[dict[str, Any]]:
    """The registry every process reads (ROTATION_REGISTRY), restored afterwards."""
    saved = os.environ["ROTATION_REGISTRY"]
    doc: dict[str, Any] = json.loads(saved)
    try:
        yield doc
    finally:
        os.environ["ROTATION_REGISTRY"] = saved
        bootstrap.reset()


def use_registry(doc: dict[str, Any]) -> None:
    os.environ["ROTATION_REGISTRY"] = json.dumps(doc)
    bootstrap.reset()


# --- case 1: planted Secret ---------------------------------------------------------------------------


@pytest.fixture
def planted(world: World) -> Iterator[str]:
    """A tenant with edit rights in its own namespace only: a Secret holding `GatewayKey gw-east&<20 days>&
    <random base64>` and a Deployment reading it, shaped exactly like the devstack's real gw-east target."""
    value = f"GatewayKey {forged('gw-east', datetime.now(UTC) + timedelta(days=20))}"
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": "planted-token", "namespace": TENANT},
              "data": {"config.service.auth.key": base64.b64encode(value.encode()).decode()}}
    labels = {"app": "edge-gateway"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "edge-gateway", "namespace": TENANT},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{
                "name": "gateway", "image": "mcr.microsoft.com/azure-api-management/gateway:v2",
                "env": [{"name": "config.service.auth", "valueFrom": {"secretKeyRef": {
                    "name": "planted-token", "key": "config.service.auth.key"}}}]}]}}}}
    kube.apply(world.stack.cluster("east"), [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TENANT}}, secret, deployment])
    try:
        yield value
    finally:  # discover in other tests must not find it
        core(world, "east").delete_namespaced_secret("planted-token", TENANT)
        apps(world, "east").delete_namespaced_deployment("edge-gateway", TENANT)


def test_discover_does_not_propose_a_planted_secret_and_rotate_never_writes_it(
        world: World, planted: str, registry_env: dict[str, Any], tmp_path: Path) -> None:
    """Case 1: the planted value is no token of gw-east (ARM does not reproduce it, Key Vault never held
    it): discover reports it unmatched with the reason, and a rotation under the registry discover
    proposed (its RBAC applied, as an operator would) never writes the real token there."""
    out_file = tmp_path / "registry.json"
    code, text, err = cli("discover", "--service", devstack.SERVICE_ID, "--kubeconfig",
                          str(world.stack.dir / "kubeconfig"), "--context", "east", "--context", "west",
                          "--aks", "east", "--principal", devstack.APP_PRINCIPAL, "--json", "--out", str(out_file))
    no_token_in(text + err, planted.removeprefix("GatewayKey "))
    doc = json.loads(text)
    proposed = [t for g in doc["registry"]["gateways"] for t in g["targets"]]
    assert [t for t in proposed if t["namespace"] == TENANT] == []
    assert [u["secret"] for u in doc["unmatched"] if u.get("namespace") == TENANT] == ["planted-token"]

    for cluster, manifests in doc["manifests"].items():  # the operator applies what discover proposed
        kube.apply(world.stack.cluster(cluster), manifests)
    use_registry(doc["registry"])
    before = world.secret("east", TENANT, "planted-token").metadata.resource_version
    code, text, err = cli("rotate", "apim-devstack/gw-east", "--force", "--reason", "cli")
    assert code == 0, text + err
    assert world.secret("east", TENANT, "planted-token").metadata.resource_version == before
    assert parse_stored(world.value("east", TENANT, "planted-token")) == parse_stored(planted)


def test_validate_registry_live_never_calls_a_planted_value_consumed(
        world: World, planted: str, tmp_path: Path) -> None:
    """Case 1: registered by hand (with the Role the app needs), the planted target's workload does read
    its key, but what it reads is no token of gw-east: `--live` must not pass it."""
    doc = json.loads(os.environ["ROTATION_REGISTRY"])
    gw_east = next(g for g in doc["gateways"] if g["id"].endswith("/gw-east"))
    gw_east["targets"].append({"cluster": "east", "namespace": TENANT, "secret": "planted-token",
                               "restart": ["deployment/edge-gateway"]})
    kube.apply(world.stack.cluster("east"), kube.render_rbac(TENANT, "planted-token", ["deployment/edge-gateway"],
                                                             devstack.APP_PRINCIPAL, "aks"))
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(doc))
    code, text, err = cli("validate-registry", str(path), "--live", "--json")
    no_token_in(text + err, planted.removeprefix("GatewayKey "))
    live = json.loads(text)["live"]
    (result,) = [r for r in live if r["namespace"] == TENANT]
    assert result["state"] != "consumed", result
    assert code != 0
    assert [r["state"] for r in live if r["namespace"] != TENANT] == ["consumed"] * (len(live) - 1)


# --- case 2: forged far-future token --------------------------------------------------------------------


@pytest.mark.parametrize("command", [("rotate", "apim-devstack/gw-shared", "--force", "--reason", "suspected leak"),
                                     ("sweep",)], ids=["rotate-force", "sweep"])
def test_a_forged_far_future_token_is_overwritten_and_success_means_it_verifies(
        world: World, command: tuple[str, ...]) -> None:
    """Case 2: someone with patch on one Secret writes `gw-shared&209912312359&<random>` into the west
    target. The leak response (rotate --force) and the sweep exit 0 only when every target afterwards
    holds a token the ARM fake verifies."""
    fake = forged("gw-shared", datetime(2099, 12, 31, 23, 59, tzinfo=UTC))
    patch_key(world, "west", "gateways", "gw-shared-token", "value", fake)
    code, text, err = cli(*command)
    no_token_in(text + err, fake)
    assert code == 0, text + err
    assert_every_target_holds_a_verified_token(world, "gw-shared")


# --- case 3: same gateway name in another APIM service -------------------------------------------------


def test_the_same_named_gateway_of_another_service_keeps_its_token(world: World,
                                                                   registry_env: dict[str, Any]) -> None:
    """Case 3: dev/staging/prod share gateway names. apim-staging's gw-shared is registered too; prod's
    east target holds a verified staging token (one of staging's Key Vault versions, reproducible by
    ARM for staging's id). rotate must fail that target naming both services, leave it untouched,
    and `status` must call it a mismatch naming apim-staging."""
    staging_gw = f"{STAGING_ID}/gateways/gw-shared"
    world.stack.arm("POST", "/_devstack/gateways", {"id": staging_gw})
    value = str(world.stack.arm("POST", "/_devstack/sign", {
        "gatewayId": staging_gw, "keyType": "primary",
        "expiry": (datetime.now(UTC) + timedelta(days=10)).replace(second=0, microsecond=0).isoformat()})["value"])
    leakcheck.register(value)
    theirs = GatewayToken.parse(value)
    world.stack.keyvault("POST", "/_devstack/secrets", {
        "name": default_secret_name(GatewayRef.parse(staging_gw)), "value": theirs.value, "contentType": CONTENT_TYPE,
        "tags": tags_for(TokenRecord(theirs, KeyType.PRIMARY, staging_gw)), "expires": theirs.expires_at.isoformat()})
    registry_env["gateways"].append({"id": staging_gw, "targets": [
        {"cluster": "east", "namespace": "staging", "secret": "gw-shared-token", "key": "value"}]})
    use_registry(registry_env)
    patch_key(world, "east", "apim", "gw-shared-token", "value", theirs.formatted())

    code, text, err = cli("rotate", "apim-devstack/gw-shared", "--reason", "cli", "--json")
    no_token_in(text + err, theirs.value)
    assert code == 1, text + err
    (east,) = [t for t in json.loads(text)["targets"] if t["cluster"] == "east"]
    assert east["outcome"] == "failed" and "apim-staging" in east["error"] and "apim-devstack" in east["error"]
    assert parse_stored(world.value("east", "apim", "gw-shared-token", "value")) == theirs

    code, text, err = cli("status", "apim-devstack/gw-shared", "--json")
    no_token_in(text + err, theirs.value)
    (status,) = json.loads(text)["gateways"]
    (east_status,) = [t for t in status["targets"] if t["cluster"] == "east"]
    assert code == 1 and east_status["state"] == "mismatch" and "apim-staging" in (east_status["error"] or "")


# --- case 5: the roll respects what workloads read ---------------------------------------------------


def test_roll_keys_does_not_regenerate_a_key_a_registered_workload_still_reads(world: World) -> None:
    """Case 5: gw-east's registered Deployment reads key `legacy` of its Secret (the primary token),
    not the registered key; `status` calls it a mismatch. `roll-keys --from primary` writes the
    registered key only, so regenerating primary would cut the running pods off: it must stay pending."""
    leaked = world.seeded["gw-east"]
    patch_key(world, "east", "apim", "gw-east-token", "legacy", f"GatewayKey {leaked}")
    apps(world, "east").patch_namespaced_deployment("gw-east", "apim", {"spec": {"template": {"spec": {
        "containers": [{"name": "gateway", "env": [{"name": "config.service.auth", "valueFrom": {
            "secretKeyRef": {"name": "gw-east-token", "key": "legacy"}}}]}]}}}})
    try:
        code, text, err = cli("roll-keys", "apim-devstack/gw-east", "--from", "primary", "--wait", "30")
        no_token_in(text + err, leaked)
        assert world.calls("arm", "regenerateKey") == [], text + err
        assert world.stack.verify("gw-east", leaked)["valid"] is True  # the pods' token still works
        assert code == 1 and "pending" in text, text + err
    finally:
        core(world, "east").patch_namespaced_secret("gw-east-token", "apim", [
            {"op": "remove", "path": "/data/legacy"}])

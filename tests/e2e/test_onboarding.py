"""Onboarding on the devstack: discover, the consumption check and adoption, on real kube-apiservers.

The devstack's clusters hold one target per way gateways are deployed (the portal's YAML: key
`value`, `GatewayKey …`; the Helm chart: key `gateway-key`, label `app.kubernetes.io/managed-by:
Helm`, from Azure/api-management-self-hosted-gateway helm-charts/azure-api-management-gateway/
templates/secret.yaml and deployment.yaml; Microsoft's rotation doc: `config.service.auth.key`; a
raw token read through a volume), plus decoys: a token of a gateway APIM does not have, a value
that only looks like a token, an unrelated Secret. ARM (the devstack's fake, through
azure-mgmt-apimanagement's `client.gateway.list_by_service`) has one gateway no cluster runs.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devstack import kube
from devstack import stack as devstack
from rotation import bootstrap
from rotation import discover as discover_module
from rotation.cli import main
from rotation.cloud import cloud_named
from rotation.core.registry import load_registry
from rotation.core.token import GatewayToken
from tests import leakcheck
from tests.e2e.conftest import World

# The devstack's AKS cluster listens on loopback, which only the local-emulator rule admits.
DEVSTACK_AKS = cloud_named("").aks_rule(allow_loopback=True)

def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stderr(err):
        code = main(list(argv), out)
    bootstrap.reset()
    return code, out.getvalue(), err.getvalue()


def discover(world: World, *extra: str) -> tuple[int, str, str]:
    return run("discover", "--service", devstack.SERVICE_ID, "--kubeconfig", str(world.stack.dir / "kubeconfig"),
               "--context", "east", "--context", "west", *extra)


def no_token_in(text: str, world: World) -> None:
    for token in world.seeded.values():
        assert token not in text


def test_discover_reproduces_the_devstacks_registry_from_the_clusters_alone(world: World, tmp_path: Path) -> None:
    """Only ARM's gateway list and what the two clusters hold: the proposal IS the devstack's registry."""
    out_file = tmp_path / "registry.json"
    code, text, err = discover(world, "--aks", "east", "--principal", devstack.APP_PRINCIPAL, "--json",
                               "--out", str(out_file))
    no_token_in(text + err, world)
    assert text, err
    doc = json.loads(text)
    assert set(doc) == {"registry", "unmatched", "manifests", "warnings"}
    expected = load_registry(world.stack.settings["ROTATION_REGISTRY"], aks_servers=DEVSTACK_AKS)
    assert load_registry(doc["registry"], aks_servers=DEVSTACK_AKS) == expected
    assert load_registry(out_file.read_text(), aks_servers=DEVSTACK_AKS) == expected  # --out writes the registry alone
    # Not taken for targets, and reported: the gateway nobody runs, the token of a gateway APIM lacks.
    assert sorted((u["kind"], u.get("secret") or u.get("gateway")) for u in doc["unmatched"]) == [
        ("gateway-without-target", devstack.gateway_id(devstack.UNUSED_GATEWAY)),
        ("token-of-unknown-gateway", "legacy-gateway-token")]
    assert code == 1  # something needs a human's review
    helm = [w for w in doc["warnings"] if w["kind"] == "helm-managed"]
    assert [(w["cluster"], w["secret"]) for w in helm] == [("west", "gw-west-token")]
    assert "secret.existingSecretName=gw-west-token" in helm[0]["detail"]
    # The RBAC it proposes is what the devstack applied from infra/k8s/ for the app.
    for cluster in devstack.CLUSTERS:
        principal, auth = (devstack.APP_PRINCIPAL, "aks") if cluster == "east" else (kube.APP_USER, "kubeconfig")
        applied = [d for t in devstack.targets().values() for x in t if x["cluster"] == cluster
                   for d in kube.render_rbac(x["namespace"], x["secret"], x.get("restart", []), principal, auth)]
        assert sorted(doc["manifests"][cluster], key=json.dumps) == sorted(applied, key=json.dumps)
    # validate-registry accepts the file, and live, with the app's own access, finds every target consumed.
    code, text, _ = run("validate-registry", str(out_file), "--live")
    assert code == 0, text
    assert text.count("  consumed ") == 4 and "helm: Secret gw-west-token is managed by Helm" in text


def test_discover_prints_a_reviewable_proposal_without_tokens(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of one item: the kube-apiserver's `continue` tokens are followed to the end."""
    monkeypatch.setattr(discover_module, "PAGE", 1)
    code, text, err = discover(world)
    no_token_in(text + err, world)
    assert code == 1  # gw-unused and the retired gateway's token want a human's look
    assert "west/gateways/gw-west-token key 'gateway-key' format 'GatewayKey {token}'" in text
    assert "east/apim/gw-shared-token key 'value' format 'GatewayKey {token}'" in text
    assert "looks-like-a-token" not in text and "unrelated-secret" not in text
    assert '"kubeconfigSecret": "kubeconfig-east"' in text  # without --aks: a kubeconfig in Key Vault
    assert "kubectl --context west apply -f -" in text


def test_the_apps_least_privilege_identity_cannot_discover(world: World, tmp_path: Path) -> None:
    """The app's kubeconfig (the one in Key Vault) has get/patch on named objects and no list: discover
    fails clearly with it, and writes nothing; the admin context of the same cluster works."""
    app_kubeconfig = world.vault()["kubeconfig-west"]["value"]
    path = tmp_path / "app-kubeconfig"
    path.write_text(app_kubeconfig)
    out_file = tmp_path / "registry.json"
    code, text, err = run("discover", "--service", devstack.SERVICE_ID, "--kubeconfig", str(path),
                          "--context", "west", "--out", str(out_file))
    assert code == 2 and text == ""
    assert "context west: forbidden to list secrets in all namespaces" in err
    assert "least-privilege" in err and "cannot discover" in err
    assert not out_file.exists()
    code, _, _ = run("discover", "--service", devstack.SERVICE_ID, "--kubeconfig",
                     str(world.stack.dir / "kubeconfig"), "--context", "west", "--namespace", "gateways",
                     "--out", str(out_file))
    assert code == 1 and len(load_registry(out_file.read_text(), aks_servers=DEVSTACK_AKS).gateways) == 2  # gw-shared, gw-west


def test_bad_discover_input_is_a_clear_error_and_writes_nothing(world: World, tmp_path: Path) -> None:
    out_file = tmp_path / "registry.json"
    kubeconfig = str(world.stack.dir / "kubeconfig")
    for argv, message in (
        (["--service", "/subscriptions/x", "--kubeconfig", kubeconfig], "--service must look like"),
        (["--service", devstack.SERVICE_ID, "--kubeconfig", kubeconfig, "--context", "nowhere"],
         "context 'nowhere' is not in the kubeconfig (contexts: east, west)"),
        (["--service", devstack.SERVICE_ID, "--kubeconfig", str(tmp_path / "missing")], "No such file"),
        (["--service", devstack.SERVICE_ID.replace("apim-devstack", "apim-other"), "--kubeconfig", kubeconfig],
         "ARM list gateways of apim-other failed: 404"),
    ):
        code, text, err = run("discover", *argv, "--out", str(out_file))
        assert code == 2 and message in err and text == "", err
        assert not out_file.exists()


# --- the consumption check ------------------------------------------------------------------------


@contextmanager
def registry_env(world: World, edit: Any) -> Iterator[dict[str, Any]]:
    """The devstack's settings with an edited registry, as the app's environment."""
    registry = json.loads(world.stack.settings["ROTATION_REGISTRY"])
    edit(registry)
    saved = os.environ["ROTATION_REGISTRY"]
    os.environ["ROTATION_REGISTRY"] = json.dumps(registry)
    bootstrap.reset()
    try:
        yield registry
    finally:
        os.environ["ROTATION_REGISTRY"] = saved
        bootstrap.reset()


def test_the_consumption_check_catches_a_key_mismatch(world: World, tmp_path: Path) -> None:
    """The silent failure the check exists for: the registry writes `config.service.auth.key`, the portal-shaped
    Deployment reads `value`. A rotation says `updated`; status and validate-registry --live say
    `mismatch` and how to fix it."""
    def wrong_key(registry: dict[str, Any]) -> None:
        shared = next(g for g in registry["gateways"] if g["id"].endswith("/gw-shared"))
        shared["targets"][0].pop("key")  # the default, config.service.auth.key

    with registry_env(world, wrong_key) as registry:
        path = tmp_path / "wrong.json"
        path.write_text(json.dumps(registry))
        code, text, _ = run("validate-registry", str(path), "--live")
        assert code == 1
        assert ("mismatch    apim-devstack/gw-shared -> east/apim/gw-shared-token key 'config.service.auth.key': "
                "key 'config.service.auth.key' is not in the Secret") in text
        assert "deployment/gw-shared reads key 'value' of Secret gw-shared-token, not 'config.service.auth.key': " \
               "set the target's \"key\" to 'value'" in text
        code, text, _ = run("validate-registry", str(path), "--live", "--json")
        doc = json.loads(text)
        assert code == 1 and doc["valid"] is True
        assert [(r["secret"], r["state"]) for r in doc["live"]] == [
            ("gw-east-token", "consumed"), ("gw-shared-token", "mismatch"), ("gw-shared-token", "consumed"),
            ("gw-west-token", "consumed")]
        code, text, _ = run("status", "apim-devstack/gw-shared", "--json")
        target = json.loads(text)["gateways"][0]["targets"][0]
        assert code == 1 and target["state"] == "mismatch"
        assert target["consumption"]["state"] == "mismatch" and "set the target's" in target["consumption"]["fix"]


def test_status_catches_a_workload_that_stopped_reading_the_secret(world: World) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(world.stack.admin("west"))
    apps.patch_namespaced_daemon_set("gw-west", "gateways", {"spec": {"template": {"spec": {"containers": [
        {"name": "gateway", "env": [{"name": "config.service.auth", "valueFrom": {
            "secretKeyRef": {"name": "gw-west-token", "key": "value"}}}]}]}}}})
    code, text, _ = run("status", "apim-devstack/gw-west")
    assert code == 1 and "mismatch    west/gateways/gw-west-token" in text
    assert "daemonset/gw-west reads key 'value' of Secret gw-west-token, not 'gateway-key'" in text
    assert "secret.createSecret=false" in text


# --- adoption -------------------------------------------------------------------------------------


def fresh_vault_secret(registry: dict[str, Any], gateway: str, name: str) -> None:
    """Point a gateway at a Key Vault secret that does not exist yet: Key Vault has no token for it."""
    next(g for g in registry["gateways"] if g["id"].endswith(f"/{gateway}"))["keyVaultSecret"] = name


def held(world: World, gateway: str) -> list[str]:
    return [world.value(t["cluster"], t["namespace"], t["secret"], t.get("key", "config.service.auth.key"))
            for t in devstack.targets()[gateway]]


def put(world: World, target: dict[str, Any], value: str) -> None:
    from kubernetes import client

    client.CoreV1Api(world.stack.admin(target["cluster"])).patch_namespaced_secret(
        target["secret"], target["namespace"], {"stringData": {target.get("key", "config.service.auth.key"): value}})


def test_first_reconcile_adopts_the_newest_token_the_targets_run(world: World) -> None:
    """gw-shared: east runs a 25-day primary-key token, west a 30-day secondary-key one (the portal's
    maximum). Key Vault has none. The first rotate stores west's as Key Vault's first version (ARM
    reproduces it from the secondary key), brings east up to it, and mints nothing. Reproduction
    rests on HMAC signing, as Microsoft documents for APIM's SAS tokens of the same shape
    (learn.microsoft.com/rest/api/apimanagement/apimanagementrest/azure-api-management-rest-api-authentication:
    Base64(HMAC-SHA512(key, id + "\n" + expiry))); the devstack's ARM fake signs gateway tokens so."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    east_t, west_t = devstack.targets()["gw-shared"]
    older = GatewayToken.parse(world.stack.sign("gw-shared", now + timedelta(days=25)))
    newest = GatewayToken.parse(world.stack.sign("gw-shared", now + timedelta(days=30) - timedelta(minutes=1),
                                                 "secondary"))
    for token in (older, newest):
        leakcheck.register(token.value)
    put(world, east_t, older.formatted())
    put(world, west_t, newest.value)
    name = f"adopt-{os.getpid()}-{int(now.timestamp())}"
    with registry_env(world, lambda r: fresh_vault_secret(r, "gw-shared", name)):
        code, text, err = run("rotate", "apim-devstack/gw-shared")
        assert code == 0, text + err
        assert "apim-devstack/gw-shared: kept, token " + newest.fingerprint in text
        assert f"updated  {east_t['cluster']}/{east_t['namespace']}/{east_t['secret']}" in text
        stored = world.vault()[name]
        assert stored["value"] == newest.value and stored["tags"]["keyType"] == "secondary"
        assert stored["tags"]["origin"] == "adopted from west/gateways/gw-shared-token (secondary key, verified by ARM)"
        assert held(world, "gw-shared") == [newest.formatted(), newest.value]
        assert len(world.calls("arm", "/generateToken", "POST")) == 2  # reproducing it: primary (no match), then secondary; nothing minted
        code, text, _ = run("status", "apim-devstack/gw-shared")
        assert "token adopted from west/gateways/gw-shared-token (secondary key, verified by ARM)" in text
        no_token_in(text, world)
        assert newest.value not in text and older.value not in text


def test_adopt_command_previews_adopts_and_refuses_a_second_time(world: World) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    portal = GatewayToken.parse(world.stack.sign("gw-east", now + timedelta(days=29, hours=12)))
    leakcheck.register(portal.value)
    put(world, devstack.targets()["gw-east"][0], portal.formatted())
    name = f"adopt-east-{os.getpid()}-{int(now.timestamp())}"
    with registry_env(world, lambda r: fresh_vault_secret(r, "gw-east", name)):
        code, text, _ = run("adopt", "apim-devstack/gw-east", "--dry-run")
        assert code == 0 and f"would adopt {portal.fingerprint}" in text and name not in world.vault()
        code, text, _ = run("adopt", "apim-devstack/gw-east")
        assert code == 0 and "in_sync  east/apim/gw-east-token" in text
        assert "adopted from east/apim/gw-east-token (primary key, verified by ARM)" in text
        assert world.vault()[name]["value"] == portal.value
        code, text, _ = run("adopt", "apim-devstack/gw-east")
        assert code == 1 and "Key Vault already holds its token" in text
        assert portal.value not in text


def test_a_token_no_key_reproduces_is_not_adopted(world: World) -> None:
    """A token signed by a key regenerated since (here: a forged signature) is not adopted: the
    reconcile mints, and overwrites the value, which nothing verifies (neither a Key Vault version nor
    reproduced by ARM), however late it says it expires."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    real = GatewayToken.parse(world.stack.sign("gw-east", now + timedelta(days=29, hours=12)))
    forged = f"{real.value.rsplit('&', 1)[0]}&{'A' * 86}=="
    leakcheck.register(forged)
    put(world, devstack.targets()["gw-east"][0], f"GatewayKey {forged}")
    name = f"adopt-forged-{os.getpid()}-{int(now.timestamp())}"
    with registry_env(world, lambda r: fresh_vault_secret(r, "gw-east", name)):
        code, text, _ = run("adopt", "apim-devstack/gw-east")
        assert code == 1 and "no key reproduces these tokens (key type unknown" in text
        assert name not in world.vault()
        code, text, _ = run("rotate", "apim-devstack/gw-east")
        assert "rotated" in text and "updated  east/apim/gw-east-token" in text
        assert world.vault()[name]["value"] != forged and "origin" not in world.vault()[name]["tags"]
        assert world.value("east", "apim", "gw-east-token").endswith(world.vault()[name]["value"])


PARTIAL_OPERATOR = "discover-partial"


def _partial_operator_kubeconfig(world: World, path: Path) -> Path:
    """A real identity that may list Secrets and workloads in namespace `gateways` of `west` only: a
    ServiceAccount with a namespaced Role, its token from the TokenRequest API (kube-apiserver 1.20,
    --service-account-issuer set by devstack/kube.py). Nothing about the app's own RBAC changes."""
    from kubernetes import client

    cluster = world.stack.cluster("west")
    meta = {"name": PARTIAL_OPERATOR, "namespace": "gateways"}
    kube.apply(cluster, [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]},
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"], "verbs": ["list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PARTIAL_OPERATOR},
         "subjects": [{"kind": "ServiceAccount", "name": PARTIAL_OPERATOR, "namespace": "gateways"}]},
    ])
    api = world.stack.admin("west")
    try:
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=["https://kubernetes.default.svc"], expiration_seconds=600))
        answer: Any = client.CoreV1Api(api).create_namespaced_service_account_token(
            PARTIAL_OPERATOR, "gateways", request)
        token = str(answer.status.token)
    finally:
        api.close()
    path.write_text(kube.kubeconfig_text(cluster, token, user=PARTIAL_OPERATOR))
    return path


def test_a_namespace_the_operator_cannot_list_is_reported_not_fatal(world: World, tmp_path: Path) -> None:
    """403 on one namespace (Kubernetes RBAC is per namespace: an operator often has a few) must not
    lose what the other namespaces show: the scan goes on, the proposal has their targets, and the
    namespace it could not read is reported (exit 1: the proposal needs a human's review)."""
    kubeconfig = _partial_operator_kubeconfig(world, tmp_path / "partial-kubeconfig")
    out_file = tmp_path / "registry.json"
    code, text, err = run("discover", "--service", devstack.SERVICE_ID, "--kubeconfig", str(kubeconfig),
                          "--context", "west", "--namespace", "default", "--namespace", "gateways", "--json",
                          "--out", str(out_file))
    no_token_in(text + err, world)
    assert code == 1, err
    doc = json.loads(text)
    found = {(g["id"].rsplit("/", 1)[1], t["namespace"], t["secret"]) for g in doc["registry"]["gateways"]
             for t in g["targets"]}
    assert found == {("gw-shared", "gateways", "gw-shared-token"), ("gw-west", "gateways", "gw-west-token")}
    skipped = [u for u in doc["unmatched"] if u["kind"] == "namespace-not-scanned"]
    assert [(u["cluster"], u["namespace"]) for u in skipped] == [("west", "default")]
    assert "forbidden to list secrets in namespace default" in skipped[0]["detail"]
    assert load_registry(out_file.read_text(), aks_servers=DEVSTACK_AKS).gateways
    # the human-readable form says it too
    code, text, _ = run("discover", "--service", devstack.SERVICE_ID, "--kubeconfig", str(kubeconfig),
                        "--context", "west", "--namespace", "default", "--namespace", "gateways")
    assert code == 1 and "namespace-not-scanned" in text and "west/default" in text


def test_a_context_the_operator_cannot_scan_is_reported_and_the_others_proposed(world: World,
                                                                                 tmp_path: Path) -> None:
    """Several contexts at once (repeated --context): one whose identity may not list across the
    cluster must not lose what the others show. Here `east` is the admin context and `west` the
    partial operator (list in one namespace only, so an all-namespaces scan is forbidden there)."""
    import yaml

    partial = yaml.safe_load(_partial_operator_kubeconfig(world, tmp_path / "partial").read_text())
    admin = yaml.safe_load((world.stack.dir / "kubeconfig").read_text())
    merged = {**admin, "contexts": [c for c in admin["contexts"] if c["name"] == "east"] + partial["contexts"],
              "users": admin["users"] + partial["users"], "clusters": admin["clusters"]}
    path = tmp_path / "mixed-kubeconfig"
    path.write_text(yaml.safe_dump(merged))
    code, text, err = run("discover", "--service", devstack.SERVICE_ID, "--kubeconfig", str(path),
                          "--context", "east", "--context", "west", "--aks", "east", "--json")
    no_token_in(text + err, world)
    assert code == 1, err
    doc = json.loads(text)
    assert [c["name"] for c in doc["registry"]["clusters"]] == ["east"]
    skipped = [u for u in doc["unmatched"] if u["kind"] == "context-not-scanned"]
    assert [u["cluster"] for u in skipped] == ["west"] and "forbidden" in skipped[0]["detail"]

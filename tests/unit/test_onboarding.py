"""Onboarding's pure core: what a pod template reads, the consumption check, the registry proposal
and the choice of the token to adopt. The shapes are the three real ones: the portal's deployment
YAML (key `value`, `GatewayKey …`), the Helm chart (Azure/api-management-self-hosted-gateway,
helm-charts/azure-api-management-gateway/templates/secret.yaml and deployment.yaml: key
`gateway-key` from `gateway.auth.key`, env `config.service.auth` from a secretKeyRef, Secret created
unless `secret.createSecret=false`) and Microsoft's rotation doc (`config.service.auth.key`)."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devstack import kube
from rotation.cloud import cloud_named
from rotation.core.adoption import candidates
from rotation.core.consumption import ConsumptionState, SecretUse, UseKind, check, secret_uses
from rotation.core.discovery import (
    PRINCIPAL_PLACEHOLDER,
    ClusterScan,
    ScannedSecret,
    candidate_tokens,
    cluster_entry,
    parse_service_id,
    propose,
    role_manifests,
)
from rotation.core.errors import InvalidInput
from rotation.core.model import GatewayRef, Target, Workload, WorkloadKind
from rotation.core.registry import load_registry
from tests import leakcheck
from tests.samples import CA_DATA, SERVICE_ID, gateway_id

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

def proofs(refs: Any, scans: Any) -> dict[str, GatewayRef]:
    """What ARM would reproduce in these tests: every found token, for the one gateway of its name."""
    return {t.fingerprint: found[0] for t, found in candidate_tokens(refs, scans) if len(found) == 1}



def token(gateway: str, expires_in: timedelta = timedelta(days=20)) -> str:
    stamp = (NOW + expires_in).strftime("%Y%m%d%H%M")
    value = f"{gateway}&{stamp}&{base64.b64encode(secrets.token_bytes(64)).decode()}"
    leakcheck.register(value)
    return value


def env_ref(secret: str, key: str) -> dict[str, Any]:
    return {"name": "config.service.auth", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def template(**container: Any) -> dict[str, Any]:
    volumes = container.pop("volumes", None)
    spec: dict[str, Any] = {"containers": [{"name": "gateway", **container}]}
    if volumes:
        spec["volumes"] = volumes
    return {"metadata": {}, "spec": spec}


# --- what a pod template reads --------------------------------------------------------------------


def test_secret_uses_reads_env_envfrom_volumes_projected_and_init_containers() -> None:
    t = template(env=[env_ref("a", "value"), {"name": "PLAIN", "value": "x"}],
                 envFrom=[{"secretRef": {"name": "b"}}, {"configMapRef": {"name": "cm"}}],
                 volumeMounts=[{"name": "v1", "mountPath": "/v1"}, {"name": "v2", "mountPath": "/v2"}],
                 volumes=[{"name": "v1", "secret": {"secretName": "c", "items": [{"key": "k", "path": "k"}]}},
                          {"name": "v2", "projected": {"sources": [{"secret": {"name": "d"}}]}},
                          {"name": "unmounted", "secret": {"secretName": "e"}}])
    t["spec"]["initContainers"] = [{"name": "init", "env": [env_ref("f", "gateway-key")]}]
    assert set(secret_uses(t)) == {
        SecretUse("init", UseKind.ENV, "f", "gateway-key"), SecretUse("gateway", UseKind.ENV, "a", "value"),
        SecretUse("gateway", UseKind.ENV_FROM, "b"), SecretUse("gateway", UseKind.VOLUME, "c", "k"),
        SecretUse("gateway", UseKind.VOLUME, "d")}
    assert secret_uses(None) == () and secret_uses({"spec": "junk"}) == ()


# --- the consumption check ------------------------------------------------------------------------


GW = Workload(WorkloadKind.DEPLOYMENT, "gw")


def target(key: str = "config.service.auth.key", restart: tuple[Workload, ...] = (GW,)) -> Target:
    return Target("east", "apim", "gw-token", key=key, restart=restart)


def test_consumption_is_consumed_when_the_workload_reads_that_key() -> None:
    uses = secret_uses(template(env=[env_ref("gw-token", "config.service.auth.key")]))
    assert check(target(), {GW: uses}).state is ConsumptionState.CONSUMED
    every_key = secret_uses(template(envFrom=[{"secretRef": {"name": "gw-token"}}]))
    assert check(target(), {GW: every_key}).state is ConsumptionState.CONSUMED


def test_consumption_catches_a_key_mismatch_and_says_the_fix() -> None:
    """The silent failure the check exists for: the token goes to `config.service.auth.key`, the portal's YAML reads `value`."""
    uses = secret_uses(template(env=[env_ref("gw-token", "value")]))
    result = check(target(), {GW: uses})
    assert result.state is ConsumptionState.MISMATCH
    assert result.fix is not None and "reads key 'value'" in result.fix and 'set the target\'s "key" to \'value\'' \
        in result.fix


def test_consumption_catches_another_secret_and_unknown_specs() -> None:
    other = check(target(), {GW: secret_uses(template(env=[env_ref("other", "value")]))})
    assert other.state is ConsumptionState.MISMATCH and "reads Secret(s) other" in (other.fix or "")
    assert check(target(), {GW: None}).state is ConsumptionState.UNCHECKED
    none = check(target(restart=()), {})
    assert none.state is ConsumptionState.UNCHECKED and "no workload registered" in (none.fix or "")


def test_a_helm_managed_secret_gets_the_chart_settings_that_stop_drift() -> None:
    uses = secret_uses(template(env=[env_ref("gw-token", "gateway-key")]))
    result = check(target("gateway-key"), {GW: uses}, {"app.kubernetes.io/managed-by": "Helm"})
    assert result.state is ConsumptionState.CONSUMED
    assert result.helm is not None
    for needle in ("secret.createSecret=false", "secret.existingSecretName=gw-token", "helm.sh/resource-policy=keep"):
        assert needle in result.helm
    assert check(target("gateway-key"), {GW: uses}, {"app.kubernetes.io/managed-by": "kubectl"}).helm is None


# --- the proposal ---------------------------------------------------------------------------------


def scan(name: str, secrets_: list[ScannedSecret], workloads: dict[str, Any], auth: str = "kubeconfig") -> ClusterScan:
    entry = cluster_entry(name, server="https://127.0.0.1:6443", ca_data=CA_DATA,
                          aks=auth == "aks")
    return ClusterScan(name, entry, secrets_, workloads)


def test_propose_finds_targets_in_every_shape_and_reports_the_rest() -> None:
    refs = [GatewayRef.parse(gateway_id(n)) for n in ("gw-portal", "gw-helm", "gw-idle")]
    portal, helm, raw, foreign = token("gw-portal"), token("gw-helm"), token("gw-portal", timedelta(days=3)), \
        token("gw-gone")
    east = scan("east", [
        ScannedSecret("apim", "gw-portal-token", {}, {"value": f"GatewayKey {portal}"}),
        ScannedSecret("apim", "gw-helm", {"app.kubernetes.io/managed-by": "Helm"}, {"gateway-key": helm}),
        ScannedSecret("apim", "decoy", {}, {"value": "GatewayKey gw-portal&soon&not-a-signature",
                                            "password": "hunter2"}),
        ScannedSecret("apim", "legacy", {}, {"token": foreign}),
        ScannedSecret("tools", "copy", {}, {"raw": raw}),
    ], {"apim": [(Workload(WorkloadKind.DEPLOYMENT, "gw-portal"),
                  secret_uses(template(env=[env_ref("gw-portal-token", "value")]))),
                 (Workload(WorkloadKind.DEPLOYMENT, "gw-helm"),
                  secret_uses(template(env=[env_ref("gw-helm", "gateway-key")]))),
                 (Workload(WorkloadKind.DEPLOYMENT, "unrelated"), secret_uses(template(env=[env_ref("x", "y")])))]},
        auth="aks")
    proposal = propose(refs, [east], principal=None, proven=proofs(refs, [east]))

    registry = load_registry(proposal.registry, aks_servers=cloud_named('').aks_rule(allow_loopback=True))  # what validate-registry accepts
    found = {(str(g.ref), t.namespace, t.secret, t.key, t.format, tuple(map(str, t.restart)))
             for g in registry.gateways for t in g.targets}
    assert found == {
        ("contoso-apim/gw-helm", "apim", "gw-helm", "gateway-key", "{token}", ("deployment/gw-helm",)),
        ("contoso-apim/gw-portal", "apim", "gw-portal-token", "value", "GatewayKey {token}", ("deployment/gw-portal",)),
        ("contoso-apim/gw-portal", "tools", "copy", "raw", "{token}", ()),
    }
    kinds = sorted((u["kind"], u.get("gateway", "")) for u in proposal.unmatched)
    assert kinds == [("gateway-without-target", gateway_id("gw-idle")), ("token-of-unknown-gateway", "gw-gone")]
    warned = sorted((w["kind"], w["secret"]) for w in proposal.warnings)
    assert warned == [("helm-managed", "gw-helm"), ("no-workload", "copy")]
    text = json.dumps(proposal.to_dict())
    for value in (portal, helm, raw, foreign, "hunter2"):
        assert value not in text
    roles = proposal.manifests["east"]
    assert {d["kind"] for d in roles} == {"Role", "RoleBinding"} and len(roles) == 6
    assert {d["subjects"][0]["name"] for d in roles if d["kind"] == "RoleBinding"} == {PRINCIPAL_PLACEHOLDER}


def test_a_gateway_name_in_two_services_is_decided_by_arm_not_guessed() -> None:
    """Two services have a gateway `gw-1` (dev/staging/prod share names): the name inside the value says
    nothing about which one it is. ARM reproducing it for one of them decides; nothing reproduced, nothing
    proposed."""
    other_service = SERVICE_ID.replace("contoso-apim", "fabrikam-apim")
    refs = [GatewayRef.parse(gateway_id("gw-1")), GatewayRef.parse(gateway_id("gw-1", other_service))]
    east = scan("east", [ScannedSecret("apim", "gw-1", {}, {"value": token("gw-1")})], {})
    (found,) = candidate_tokens(refs, [east])
    proposal = propose(refs, [east], proven={found[0].fingerprint: refs[1]})
    assert [g["id"] for g in proposal.registry["gateways"]] == [refs[1].id]
    unproven = propose(refs, [east], proven={})
    assert unproven.registry["gateways"] == []
    assert [u["kind"] for u in unproven.unmatched].count("unverified-token") == 1


def test_a_planted_or_forged_value_is_never_proposed() -> None:
    """A tenant with edit rights in its own namespace plants `GatewayKey gw-1&<expiry>&<random base64>`
    and a Deployment reading it: ARM does not reproduce it, so it is reported unverified and never
    proposed (the rotator would otherwise deliver the real token there). A value expiring more than 30
    days ahead is impossible (APIM issues tokens for at most 30 days) whatever ARM says."""
    refs = [GatewayRef.parse(gateway_id("gw-1"))]
    planted, forged = token("gw-1"), "gw-1&209912312359&" + base64.b64encode(secrets.token_bytes(64)).decode()
    east = scan("east", [ScannedSecret("tenant", "planted", {}, {"value": f"GatewayKey {planted}"}),
                         ScannedSecret("tenant", "forged", {}, {"value": forged})], {})
    every = {t.fingerprint: refs[0] for t, _ in candidate_tokens(refs, [east])}
    proposal = propose(refs, [east], proven={}, now=datetime.now(UTC))
    assert proposal.registry["gateways"] == []
    assert sorted(u["secret"] for u in proposal.unmatched if u["kind"] == "unverified-token") == ["forged", "planted"]
    far = propose(refs, [east], proven=every, now=datetime.now(UTC))
    assert [u["secret"] for u in far.unmatched if u["kind"] == "unverified-token"] == ["forged"]
    text = json.dumps(proposal.to_dict())
    assert planted not in text and forged not in text


def test_role_manifests_are_the_infra_k8s_templates_rendered() -> None:
    workloads = ("deployment/gw", "statefulset/gw-sts", "daemonset/gw-ds")
    ours = role_manifests("apim", "gw-token", [Workload(WorkloadKind(w.split("/")[0]), w.split("/")[1])
                                               for w in workloads], "apim-token-rotator")
    assert ours == kube.render_rbac("apim", "gw-token", workloads, "apim-token-rotator", "kubeconfig")
    assert role_manifests("apim", "s", [], "p") == kube.render_rbac("apim", "s", [], "p", "aks")


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="--service must look like"):
        parse_service_id("/subscriptions/x/resourceGroups/rg")
    with pytest.raises(InvalidInput, match="not a valid registry cluster name"):
        cluster_entry("arn:aws:eks:eu-west-1:1:cluster/prod", server="https://x", ca_data="eA==", aks=False)
    with pytest.raises(InvalidInput, match="--aks needs an https server"):
        cluster_entry("east", server="http://x", ca_data="eA==", aks=True)
    # '_' is not allowed in a Key Vault name: replaced, with a hash of the context so that west-1 stays distinct
    assert cluster_entry("west_1", server=None, ca_data=None, aks=False)["kubeconfigSecret"] == "kubeconfig-west-1-99c725b9"


# --- adoption -------------------------------------------------------------------------------------


def test_adoption_candidates_are_this_gateways_valid_tokens_newest_first() -> None:
    t1, t2, t3 = Target("east", "apim", "a"), Target("west", "gw", "b"), Target("west", "gw", "c")
    newest, older = token("gw-1", timedelta(days=29, hours=23)), token("gw-1", timedelta(days=20))
    held = [(t1, f"GatewayKey {older}"), (t2, newest), (t3, f"GatewayKey {newest}"),
            (t1, token("gw-2", timedelta(days=30))),             # another gateway
            (t2, token("gw-1", timedelta(days=-1))),             # expired
            (t3, token("gw-1", timedelta(days=6))),              # due for renewal anyway
            (t1, "not a token"), (t2, None)]
    found = candidates(held, "GW-1", NOW, timedelta(days=7))
    assert [c.token.value for c in found] == [newest, older]
    assert found[0].held_by == (t2, t3) and found[0].where == "west/gw/b and 1 more"

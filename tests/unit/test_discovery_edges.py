"""discover on the Secrets an operator's clusters really hold: each odd shape, one test.

The proposal's rules are rotation.core.discovery's (pure); the decoding of a Secret's `data` is
rotation.discover's `_decoded` (what the kube-apiserver returns: base64 of arbitrary bytes, Kubernetes
API reference "Secret v1": `data` values are base64-encoded, keys match [-._a-zA-Z0-9]+).
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import timedelta
from typing import Any

from rotation.cloud import cloud_named
from rotation.core.consumption import secret_uses
from rotation.core.discovery import ScannedSecret, candidate_tokens, propose
from rotation.core.model import GatewayRef, Workload, WorkloadKind
from rotation.core.registry import load_registry
from rotation.discover import MAX_VALUE, _decoded
from tests.samples import gateway_id
from tests.unit.test_onboarding import env_ref, scan, template, token

AKS = cloud_named("").aks_rule(allow_loopback=True)
GW1, GW2 = GatewayRef.parse(gateway_id("gw-1")), GatewayRef.parse(gateway_id("gw-2"))

def proofs(refs: Any, scans: Any) -> dict[str, GatewayRef]:
    """What ARM would reproduce in these tests: every found token, for the one gateway of its name."""
    return {t.fingerprint: found[0] for t, found in candidate_tokens(refs, scans) if len(found) == 1}



def targets(proposal: Any) -> set[tuple[str, str, str, str]]:
    registry = load_registry(proposal.registry, aks_servers=AKS)  # what validate-registry accepts
    return {(g.ref.gateway, t.secret, t.key, t.format) for g in registry.gateways for t in g.targets}


def test_raw_and_prefixed_tokens_of_one_gateway_keep_their_own_format() -> None:
    prefixed, raw = token("gw-1"), token("gw-1", timedelta(days=10))
    east = scan("east", [ScannedSecret("apim", "portal", {}, {"value": f"GatewayKey {prefixed}\n"}),
                         ScannedSecret("apim", "mounted", {}, {"token": raw})], {})
    assert targets(propose([GW1], [east], proven=proofs([GW1], [east]))) == {("gw-1", "portal", "value", "GatewayKey {token}"),
                                               ("gw-1", "mounted", "token", "{token}")}


def test_keys_with_dots_and_several_token_keys_in_one_secret() -> None:
    """Microsoft's rotation doc uses key `config.service.auth.key`; one Secret can hold two gateways'
    tokens (two keys): each key is its own target, and the workload reading it is found per key."""
    east = scan("east", [ScannedSecret("apim", "tokens", {}, {
        "config.service.auth.key": f"GatewayKey {token('gw-1')}", "gw-2.key": token("gw-2"),
        "not.a.token": "x" * 40})],
        {"apim": [(Workload(WorkloadKind.DEPLOYMENT, "one"),
                   secret_uses(template(env=[env_ref("tokens", "config.service.auth.key")]))),
                  (Workload(WorkloadKind.DEPLOYMENT, "two"), secret_uses(template(volumes=[
                      {"name": "t", "secret": {"secretName": "tokens",
                                                "items": [{"key": "gw-2.key", "path": "token"}]}}],
                      volumeMounts=[{"name": "t", "mountPath": "/t"}])))]})
    proposal = propose([GW1, GW2], [east], proven=proofs([GW1, GW2], [east]))
    assert targets(proposal) == {("gw-1", "tokens", "config.service.auth.key", "GatewayKey {token}"),
                                 ("gw-2", "tokens", "gw-2.key", "{token}")}
    restart = {t.key: [str(w) for w in t.restart] for t in proposal.targets}
    assert restart == {"config.service.auth.key": ["deployment/one"], "gw-2.key": ["deployment/two"]}
    # one Role for the Secret, granting both workloads
    (role,) = [d for d in proposal.manifests["east"] if d["kind"] == "Role"]
    assert role["rules"][1]["resourceNames"] == ["", "one", "two"]


def test_huge_binary_and_malformed_values_are_skipped_not_fatal() -> None:
    good = token("gw-1")
    data = {"token": base64.b64encode(good.encode()).decode(),
            "huge": base64.b64encode(b"A" * (MAX_VALUE * 4)).decode(),
            "binary": base64.b64encode(b"\xff\xfe" + secrets.token_bytes(64)).decode(),
            "not-base64": "%%%%", "number": 12}
    decoded = _decoded(data)
    assert decoded == {"token": good}
    assert _decoded(None) == {} and _decoded(["x"]) == {}


def test_values_that_only_look_like_tokens_are_not_targets() -> None:
    """A token names its gateway and expiry in clear; the signature is base64 of an HMAC (Microsoft
    documents APIM's SAS tokens as Base64(HMAC-SHA512(key, id + "\\n" + expiry)): 64 bytes; the
    devstack's ARM signs gateway tokens the same way). A value of the right shape whose "signature"
    is a word or too short to be an HMAC is a decoy (a placeholder in a template, a note): it is
    reported for review, never proposed as a target to overwrite."""
    real = token("gw-1")
    decoys = {"placeholder": "gw-1&202612312359&placeholder", "short": "GatewayKey gw-1&202612312359&c2lnbmF0dXJl",
              "empty-sig": "gw-1&202612312359&", "bad-expiry": "GatewayKey gw-1&in-twenty-days&see-the-portal",
              "query": "gw-1&202612312359&next=page2", "jwt": "eyJhbGciOiJIUzI1NiJ9.e30.sig"}
    east = scan("east", [ScannedSecret("apim", "real", {}, {"value": real}),
                         ScannedSecret("apim", "decoys", {}, decoys)], {})
    proposal = propose([GW1], [east], proven=proofs([GW1], [east]))
    assert targets(proposal) == {("gw-1", "real", "value", "{token}")}
    flagged = sorted(u["key"] for u in proposal.unmatched if u["kind"] == "token-like-value")
    assert flagged == ["placeholder", "query", "short"]  # right shape, no signature: shown for review
    assert "page2" not in json.dumps(proposal.to_dict())  # a value is never echoed

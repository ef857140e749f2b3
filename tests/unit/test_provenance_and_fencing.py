"""Provenance decides whose token a value is; the lease's head decides which Key Vault version counts.

Pure rules of `rotation.core.provenance` and `rotation.core.fencing`: a token's own name and expiry
fields are written by whoever wrote the value, so they never make it a gateway's token; Key Vault's
Set Secret takes no precondition (learn.microsoft.com/rest/api/keyvault/secrets/set-secret/set-secret:
no If-Match), so its latest version counts only when it is the head the lease holder committed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rotation.core.fencing import Chain, FenceHead, chain_state, off_chain
from rotation.core.model import KeyType, TokenInfo
from rotation.core.convergence import TargetAction
from rotation.core.provenance import Evidence, Provenance, classify, target_action, worth_proving
from rotation.core.token import GatewayToken
from tests.memory import sign

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
G = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ApiManagement/service/prod/gateways/gw-east"
STAGING = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ApiManagement/service/staging/gateways/gw-east"


def token(days: float, key: bytes = b"k1", gateway: str = "gw-east") -> GatewayToken:
    return GatewayToken.parse(sign(gateway, (NOW + timedelta(days=days)).replace(second=0, microsecond=0), key))


def test_a_token_named_for_the_gateway_is_not_its_token_without_evidence() -> None:
    planted = token(20, b"attacker")
    verdict = classify(planted.formatted(), Evidence(G), NOW)
    assert verdict.provenance is Provenance.UNVERIFIED and not verdict.verified


def test_key_vault_versions_and_arm_proofs_are_evidence() -> None:
    stored, proven = token(20), token(25)
    evidence = Evidence(G, versions=frozenset({stored.fingerprint})).with_proof(proven.fingerprint, KeyType.PRIMARY)
    assert classify(stored.formatted(), evidence, NOW).provenance is Provenance.OURS
    assert classify(proven.value, evidence, NOW).provenance is Provenance.OURS


def test_an_expiry_beyond_thirty_days_is_impossible_whatever_the_evidence() -> None:
    forged = GatewayToken.parse(sign("gw-east", datetime(2099, 12, 31, 23, 59, tzinfo=UTC), b"x"))
    evidence = Evidence(G, versions=frozenset({forged.fingerprint}))
    verdict = classify(forged.value, evidence, NOW)
    assert verdict.provenance is Provenance.UNVERIFIED and verdict.why is not None and "30 days" in verdict.why
    assert not worth_proving(verdict, "gw-east", NOW + 29 * DAY, NOW)


def test_a_same_named_gateway_of_another_service_is_foreign_only_when_verified_there() -> None:
    staging = token(10, b"staging-key")
    assert classify(staging.value, Evidence(G), NOW).provenance is Provenance.UNVERIFIED
    verdict = classify(staging.value, Evidence(G, foreign={staging.fingerprint: STAGING}), NOW)
    assert verdict.provenance is Provenance.FOREIGN and verdict.owner == STAGING


def test_placeholders_are_no_token() -> None:
    for value in (None, "", "GatewayKey <paste token>", "gw-east&20261231&x"):
        assert classify(value, Evidence(G), NOW).provenance is Provenance.NONE


def test_target_actions_follow_provenance_not_shape() -> None:
    desired = token(29)
    later_ours, later_forged, older = token(30, b"k2"), token(30, b"attacker"), token(3)
    evidence = Evidence(G, versions=frozenset({desired.fingerprint, later_ours.fingerprint, older.fingerprint}))

    def action(value: str, doomed: frozenset[str] = frozenset()) -> TargetAction:
        return target_action(classify(value, evidence, NOW), value, desired.fingerprint, desired.expires_at,
                             "GatewayKey {token}", doomed)

    assert action(desired.formatted()) is TargetAction.IN_SYNC
    assert action(desired.value) is TargetAction.WRITE  # the registered format differs
    assert action(later_ours.formatted()) is TargetAction.NEWER
    assert action(later_ours.formatted(), frozenset({later_ours.fingerprint})) is TargetAction.WRITE
    assert action(later_forged.formatted()) is TargetAction.WRITE
    assert action(older.formatted()) is TargetAction.WRITE


def test_only_a_later_unverified_token_of_this_name_is_worth_an_arm_proof() -> None:
    desired = token(29)
    candidates = {
        "later, same name": (token(29.5, b"portal"), True),
        "earlier": (token(10, b"portal"), False),
        "other name": (token(29.5, b"portal", "gw-west"), False),
        "expired": (token(-1, b"portal"), False),
    }
    for what, (value, expected) in candidates.items():
        verdict = classify(value.value, Evidence(G), NOW)
        assert worth_proving(verdict, "gw-east", desired.expires_at, NOW) is expected, what


def _info(fp: str, generation: int | None) -> TokenInfo:
    return TokenInfo("s", G, KeyType.PRIMARY, NOW, fp, generation=generation)


def test_the_latest_version_counts_only_as_the_committed_head() -> None:
    head = FenceHead("v2", "fp2", 7)
    assert chain_state("v2", "fp2", head) is Chain.HEAD
    assert chain_state(None, "fp2", head) is Chain.HEAD  # a listing knows the fingerprint only
    assert chain_state("v3", "fp3", head) is Chain.FORK  # a late write after the head
    assert chain_state("v3", "fp2", head) is Chain.FORK  # same value, other version: tags may differ
    assert chain_state("v2", "fp9", head) is Chain.FORK  # a head of another vault's secret
    assert chain_state("v1", "fp1", None) is Chain.UNFENCED
    assert chain_state(None, None, head) is Chain.EMPTY


def test_versions_written_after_a_later_generation_are_off_chain() -> None:
    versions = [_info("a", None), _info("b", 3), _info("c", 4), _info("late", 3), _info("d", 4), _info("e", 5)]
    assert off_chain(versions) == frozenset({"late"})

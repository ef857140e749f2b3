"""Whose token a value is, decided by where it came from, never by what it says about itself.

A gateway token reads `{gateway}&{yyyyMMddHHmm}&{signature}`, but the gateway name and the expiry in
it are written by whoever wrote the value: anyone who may edit one Secret can write
`gw-east&209912312359&<random>`, and gateways of different APIM services (dev, staging, prod) share
names. The signature is an HMAC the product cannot check: the app has no right to read gateway keys.
So a value is a token of gateway G (its full ARM id) only if

- Key Vault holds it as one of G's versions that this product wrote, on the fenced chain
  (`rotation.core.fencing`): `Evidence.versions`; or
- ARM reproduces it: generateToken for G with the token's own expiry minute and one of G's keys gives
  the identical value (`Evidence.proven`, recorded so the proof is paid once per worker).

Anything else is *unverified*: never `newer` (it would block renewals for ever), never adopted, never
proposed by discovery, never counted as consumed; it is overwritten when it sits in a target
registered to G. A token of another registered gateway is *foreign* only when verified the same way
for that gateway (`Evidence.foreign`): then the target is reported and never overwritten, since the
gateway that really reads the Secret would be cut off.

An expiry later than now + 30 days is impossible (APIM issues tokens for at most 30 days), whatever
the evidence says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from rotation.core.convergence import TargetAction
from rotation.core.model import KeyType
from rotation.core.token import GatewayToken, parse_stored

MAX_LIFETIME = timedelta(days=30)
# Tokens carry whole minutes, and ARM may round a requested expiry up to the next minute.
EXPIRY_SLACK = timedelta(minutes=2)


class Provenance(StrEnum):
    NONE = "none"              # empty, missing, or not a token at all (a placeholder)
    OURS = "ours"              # a verified token of this gateway
    FOREIGN = "foreign"        # a verified token of another registered gateway
    UNVERIFIED = "unverified"  # token-shaped, but nobody vouches for it


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a reader knows, by fingerprint, about whose tokens are whose."""

    gateway_id: str
    versions: frozenset[str] = frozenset()  # G's Key Vault versions on the chain
    proven: Mapping[str, KeyType] = field(default_factory=dict)  # ARM reproduced these for G, with this key
    foreign: Mapping[str, str] = field(default_factory=dict)  # verified tokens of other gateways: their ids

    def with_proof(self, fingerprint: str, key_type: KeyType) -> Evidence:
        return Evidence(self.gateway_id, self.versions, {**self.proven, fingerprint: key_type}, self.foreign)


@dataclass(frozen=True, slots=True)
class Verdict:
    provenance: Provenance
    token: GatewayToken | None = None
    owner: str | None = None  # the other gateway's id, for FOREIGN
    why: str | None = None    # for UNVERIFIED: why it was not believed

    @property
    def verified(self) -> bool:
        return self.provenance is Provenance.OURS


def possible(token: GatewayToken, now: datetime) -> bool:
    """APIM never issues a token expiring later than 30 days from now."""
    return token.expires_at <= now + MAX_LIFETIME + EXPIRY_SLACK


def classify(value: str | None, evidence: Evidence, now: datetime) -> Verdict:
    """The provenance of a value found in a Secret (or anywhere else that is not Key Vault's head)."""
    token = parse_stored(value)
    if token is None:
        return Verdict(Provenance.NONE)
    if not possible(token, now):
        return Verdict(Provenance.UNVERIFIED, token, why=(
            f"expires {token.expires_at:%Y-%m-%d %H:%M} UTC, more than 30 days ahead: APIM issues no such token"))
    fp = token.fingerprint
    if fp in evidence.versions or fp in evidence.proven:
        return Verdict(Provenance.OURS, token)
    owner = evidence.foreign.get(fp)
    if owner is not None:
        return Verdict(Provenance.FOREIGN, token, owner=owner)
    return Verdict(Provenance.UNVERIFIED, token, why=(
        "neither one of the gateway's Key Vault versions nor reproduced by ARM"))


def worth_proving(verdict: Verdict, gateway: str, desired_expires_at: datetime | None, now: datetime) -> bool:
    """Whether an unverified value is worth an ARM proof: only one that would change the decision,
    i.e. that names this gateway, is possible and unexpired, and expires later than what the target
    is about to get (it would be kept as `newer` if it were the gateway's). Anything else is
    overwritten either way, so no ARM call is spent on it (a forged value costs nothing)."""
    token = verdict.token
    if verdict.provenance is not Provenance.UNVERIFIED or token is None:
        return False
    if not possible(token, now) or token.expires_at <= now or token.gateway.lower() != gateway.lower():
        return False
    return desired_expires_at is None or token.expires_at > desired_expires_at


def target_action(verdict: Verdict, secret_value: str | None, fingerprint: str, expires_at: datetime, fmt: str,
                  doomed: frozenset[str] = frozenset()) -> TargetAction:
    """What a target registered to G gets, given what it holds (`verdict`) and the token it should hold
    (`fingerprint`, `expires_at`): in sync only for the exact formatted token; a later-expiring
    verified token of G is kept (never downgrade) unless `doomed` (its key is being regenerated by a
    pending roll); a verified token of another gateway is never overwritten; the rest is written."""
    if verdict.provenance is Provenance.FOREIGN:
        return TargetAction.FOREIGN
    token = verdict.token
    if verdict.provenance is not Provenance.OURS or token is None:
        return TargetAction.WRITE
    if token.fingerprint == fingerprint:
        return TargetAction.IN_SYNC if secret_value == token.formatted(fmt) else TargetAction.WRITE
    if token.expires_at > expires_at and token.fingerprint not in doomed:
        return TargetAction.NEWER
    return TargetAction.WRITE

"""Adoption: Key Vault's first version of a gateway's token is the one its targets already run.

A gateway onboarded with a token from the portal (up to 30 days) would otherwise get a freshly
minted 29-day token its targets call older: they stay `newer` (never downgrade) and `status` is
unhealthy for weeks, or, if the minted one wins, every pod restarts for nothing. So when Key Vault
has no token, the newest token the targets hold is stored instead, if it is worth keeping: of this
gateway, not expired, and not due for renewal anyway (then minting is the right thing).

A signature cannot be checked without the gateway's key, and the app has no right to read keys.
The I/O half (`rotation.app.adoption`) asks ARM to generate a token of the same expiry from each key and
compares: a match proves which key signed it. Pure here: which tokens are candidates, newest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from rotation.core.model import KeyType, Target
from rotation.core.token import GatewayToken, parse_stored


@dataclass(frozen=True, slots=True)
class Candidate:
    token: GatewayToken
    held_by: tuple[Target, ...]

    @property
    def where(self) -> str:
        first = self.held_by[0]
        more = f" and {len(self.held_by) - 1} more" if len(self.held_by) > 1 else ""
        return f"{first.cluster}/{first.namespace}/{first.secret}{more}"


def candidates(held: Iterable[tuple[Target, str | None]], gateway: str, now: datetime,
               renew_before: timedelta) -> list[Candidate]:
    """Distinct tokens of `gateway` held by targets, worth adopting, newest expiry first."""
    by_fingerprint: dict[str, tuple[GatewayToken, list[Target]]] = {}
    for target, value in held:
        token = parse_stored(value)
        if token is None or token.gateway.lower() != gateway.lower():
            continue
        if token.expires_at - now <= renew_before:  # expired or due: a new token is the right answer
            continue
        by_fingerprint.setdefault(token.fingerprint, (token, []))[1].append(target)
    ranked = sorted(by_fingerprint.values(), key=lambda e: (e[0].expires_at, e[0].fingerprint), reverse=True)
    return [Candidate(token, tuple(targets)) for token, targets in ranked]


def key_order(configured: KeyType | None) -> Sequence[KeyType]:
    """Which key to try reproducing a token with first (the registry's choice, else primary)."""
    first = configured or KeyType.PRIMARY
    return (first, first.other)


def origin(candidate: Candidate, key_type: KeyType) -> str:
    """The Key Vault tag (and status line) saying where the token came from."""
    return f"adopted from {candidate.where} ({key_type.value} key, verified by ARM)"

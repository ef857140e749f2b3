"""How each target converges on Key Vault's token: pure decisions of what was read.

Never hand a target something that expires sooner than what it already holds (unless a key roll
dooms that token), never overwrite another gateway's token, and make a later-expiring version the
targets kept Key Vault's latest again so every target ends on what Key Vault says.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from rotation.core.model import KeyType, TokenInfo, TokenRecord
from rotation.core.token import GatewayToken, parse_stored


class TargetAction(StrEnum):
    IN_SYNC = "in_sync"
    NEWER = "newer"
    WRITE = "write"
    FOREIGN = "foreign"  # a token of another gateway: the registry names the wrong Secret or key


@dataclass(frozen=True, slots=True)
class Desired:
    """What every target should hold, known without the token value (fingerprint and expiry)."""

    gateway: str
    fingerprint: str
    expires_at: datetime

    @classmethod
    def of(cls, token: GatewayToken) -> Desired:
        return cls(token.gateway, token.fingerprint, token.expires_at)


def target_action(secret_value: str | None, desired: Desired, fmt: str,
                  doomed: frozenset[str] = frozenset()) -> TargetAction:
    """In sync only when the exact formatted token is there; never replace a later-expiring token,
    unless it is `doomed`: signed by the key a key roll is about to regenerate (fingerprints); never
    replace another gateway's token: the gateway that really reads this Secret would be cut off."""
    current = parse_stored(secret_value)
    if current is None:
        return TargetAction.WRITE
    if current.gateway.lower() != desired.gateway.lower():
        return TargetAction.FOREIGN
    if current.fingerprint == desired.fingerprint:
        return TargetAction.IN_SYNC if secret_value == current.formatted(fmt) else TargetAction.WRITE
    if current.expires_at > desired.expires_at and current.fingerprint not in doomed:
        return TargetAction.NEWER
    return TargetAction.WRITE


def doomed_by_roll(versions: Sequence[TokenInfo], roll_from: KeyType) -> frozenset[str]:
    """Fingerprints of Key Vault's versions signed by `roll_from`: a key roll regenerates that key, so
    these tokens stop working and a target holding one must take the new token even if it expires
    sooner. (A later-expiring token Key Vault never held is not known to be doomed and is kept.)"""
    return frozenset(v.fingerprint for v in versions if v.key_type is roll_from and v.fingerprint)


def promotable(latest: TokenRecord, versions: Sequence[TokenInfo], held: Iterable[GatewayToken],
               gateway: str) -> GatewayToken | None:
    """The token targets hold that Key Vault should store again as its latest version, if any.

    Racing rotations (two instances, different lifetimes) can each write a version; never-downgrade
    then keeps targets on a version that expires later than the one written last. Such a token is
    promoted when it is one of Key Vault's own versions written since the last key change (an older
    one may be signed by a key regenerated since) and no key roll is pending (the roll decides).
    `versions` is oldest first.
    """
    if latest.roll_from is not None:
        return None
    same_key = _since_last_key_change(latest, versions)
    best: GatewayToken | None = None
    for token in held:
        if (token.gateway.lower() != gateway.lower() or token.fingerprint not in same_key
                or token.expires_at <= latest.token.expires_at):
            continue
        if best is None or (token.expires_at, token.fingerprint) > (best.expires_at, best.fingerprint):
            best = token
    return best


def _since_last_key_change(latest: TokenRecord, versions: Sequence[TokenInfo]) -> set[str]:
    same_key: set[str] = set()
    for info in reversed(versions):
        if info.key_type is not latest.key_type or info.roll_from is not None:
            break
        if info.fingerprint:
            same_key.add(info.fingerprint)
    return same_key


def token_stored_at(versions: Sequence[TokenInfo], fingerprint: str) -> datetime | None:
    """When Key Vault first stored this token: the earliest version holding it. (Clearing a roll's tag
    or promoting writes the same token again; pods restarted after the first write run it already.)"""
    times = [v.created_at for v in versions if v.fingerprint == fingerprint and v.created_at is not None]
    return min(times) if times else None

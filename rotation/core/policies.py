"""The decisions of a reconcile, as pure functions of what was gathered and the time.

Modelled on cert-manager's renewal policy: renew a fixed window before expiry, never hand out
something that expires sooner than what a target already holds, and keep the signing key stable
unless a key roll explicitly moves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from rotation.core.model import KeyType, TokenInfo, TokenRecord
from rotation.core.token import GatewayToken, parse_stored

MAX_LIFETIME = timedelta(days=30)


def renewal_reason(current: TokenRecord | None, now: datetime, renew_before: timedelta,
                   force: bool = False) -> str | None:
    """Why a new token is needed, or None when the stored one is good for longer than the window."""
    if force:
        return "forced"
    if current is None:
        return "no token in Key Vault"
    left = current.token.expires_at - now
    if left <= timedelta(0):
        return "stored token has expired"
    if left <= renew_before:
        return f"stored token expires in {_human(left)} (renew window {_human(renew_before)})"
    return None


def new_expiry(now: datetime, lifetime: timedelta) -> datetime:
    """now + lifetime, capped at APIM's 30 days and truncated to whole minutes (the token's precision)."""
    return (now + min(lifetime, MAX_LIFETIME)).replace(second=0, microsecond=0)


def key_type_for(configured: KeyType | None, current: TokenRecord | None) -> KeyType:
    """A pending key roll first (never sign with the key being retired, whatever the registry pins),
    then the registry's choice, else stay on the key that signed the current token, else primary."""
    if current is not None and current.roll_from is not None:
        return current.roll_from.other
    if configured is not None:
        return configured
    if current is not None:
        return current.key_type
    return KeyType.PRIMARY


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
    same_key: set[str] = set()
    for info in reversed(versions):
        if info.key_type is not latest.key_type or info.roll_from is not None:
            break
        if info.fingerprint:
            same_key.add(info.fingerprint)
    best: GatewayToken | None = None
    for token in held:
        if (token.gateway.lower() != gateway.lower() or token.fingerprint not in same_key
                or token.expires_at <= latest.token.expires_at):
            continue
        if best is None or (token.expires_at, token.fingerprint) > (best.expires_at, best.fingerprint):
            best = token
    return best


def token_stored_at(versions: Sequence[TokenInfo], fingerprint: str) -> datetime | None:
    """When Key Vault first stored this token: the earliest version holding it. (Clearing a roll's tag
    or promoting writes the same token again; pods restarted after the first write run it already.)"""
    times = [v.created_at for v in versions if v.fingerprint == fingerprint and v.created_at is not None]
    return min(times) if times else None


# Clock difference tolerated between Key Vault's `created` and the restartedAt this app writes.
CLOCK_SKEW = timedelta(seconds=60)


class HealAction(StrEnum):
    RESTART = "restart"    # its pods started before the token was stored: restart them
    CURRENT = "current"    # restarted since the token was stored: its pods run it (or are rolling to it)
    COOLDOWN = "cooldown"  # restarted too recently to restart again (per-instance duplicate events)


def heal_action(restarted_at: datetime | None, stored_at: datetime | None, now: datetime,
                cooldown: timedelta) -> HealAction:
    """Whether a workload of an in-sync target must be restarted so its pods load the stored token."""
    if restarted_at is not None and stored_at is not None and restarted_at >= stored_at - CLOCK_SKEW:
        return HealAction.CURRENT
    if restarted_at is not None and now - restarted_at < cooldown:
        return HealAction.COOLDOWN
    return HealAction.RESTART


def instance_is_stale(instance_expires_at: datetime | None, stored_expires_at: datetime) -> bool:
    """An event's instance runs an older token than Key Vault's when its token expires earlier (tokens
    carry whole minutes; an event without an expiry is taken at its word)."""
    return instance_expires_at is None or instance_expires_at < stored_expires_at - timedelta(minutes=1)


def _human(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24}d{hours % 24}h" if hours >= 24 else f"{hours}h{int(delta.total_seconds() % 3600 // 60)}m"

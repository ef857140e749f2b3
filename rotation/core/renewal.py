"""Whether a gateway needs a new token, and which key signs it: a chain of small pure decisions.

Modelled on cert-manager's renewal policy: renew a fixed window before expiry and keep the signing
key stable unless a key roll explicitly moves it. A pending roll (Key Vault's latest carries
`keyRollFrom`) is carried forward by every write: the roll only ever ends by regenerating the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rotation.core.convergence import Desired
from rotation.core.model import KeyType, TokenInfo, TokenRecord

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


def fresh_in_listing(known: TokenInfo | None, gateway: str, now: datetime, renew_before: timedelta, *,
                     force: bool = False, key_type: KeyType | None = None) -> Desired | None:
    """What targets should hold when the sweep's one Key Vault listing already says the stored token is
    fresh (no per-gateway read needed); None when Key Vault must be read. A forced rotation, a key
    roll's reconcile and a pending roll always read."""
    if known is None or force or key_type is not None or known.roll_from is not None:
        return None
    if not known.fingerprint or known.expires_at is None or known.expires_at - now <= renew_before:
        return None
    return Desired(gateway, known.fingerprint, known.expires_at)


@dataclass(frozen=True, slots=True)
class RenewalPlan:
    """What the reconcile does with Key Vault's token before any target is looked at."""

    reason: str | None         # why a new token is needed; None: the stored token stays
    key_type: KeyType          # the key of the token targets get (the stored one's, when it stays)
    roll_from: KeyType | None  # the key a pending roll retires: carried by every new token
    adopt: bool = False        # onboarding: try the token the targets already run before minting

    @property
    def keeps(self) -> bool:
        return self.reason is None


def plan_renewal(current: TokenRecord | None, now: datetime, renew_before: timedelta, *,
                 configured: KeyType | None = None, force: bool = False, key_type: KeyType | None = None,
                 roll_from: KeyType | None = None, adopt_existing: bool = False) -> RenewalPlan:
    """`key_type`/`roll_from`: what a key roll's own reconcile asks for; `configured`: the registry's pin."""
    rolling = roll_from or (current.roll_from if current is not None else None)
    why = renewal_reason(current, now, renew_before, force)
    chosen = rolling.other if rolling is not None else key_type or key_type_for(configured, current)
    if current is not None:
        why = why or _roll_reason(current, chosen, rolling, explicit=key_type is not None)
    if why is None and current is not None:
        return RenewalPlan(None, current.key_type, rolling)
    adopt = current is None and adopt_existing and not force and key_type is None and rolling is None
    return RenewalPlan(why, chosen, rolling, adopt)


def _roll_reason(current: TokenRecord, chosen: KeyType, rolling: KeyType | None, *, explicit: bool) -> str | None:
    """A fresh token still needs replacing when a key roll moves the signing key or starts."""
    if current.key_type is not chosen and (explicit or rolling):
        return f"key roll to {chosen.value}"
    if rolling is not None and current.roll_from is not rolling:
        return f"key roll from {rolling.value} starts"
    return None


def _human(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24}d{hours % 24}h" if hours >= 24 else f"{hours}h{int(delta.total_seconds() % 3600 // 60)}m"

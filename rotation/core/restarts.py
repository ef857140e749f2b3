"""When a target's workloads must restart to load its token, decided on one clock: none.

Pods read the token at start, so a Secret in sync says nothing about what they run. Every restart
this product makes records, on the workload's pod template, the fingerprint of the token it restarted
the workload for (`TOKEN_FINGERPRINT_ANNOTATION`; changing it rolls the pods as `restartedAt` does).
Whether a workload still owes a restart is then a comparison of two fingerprints, never of the
restarting machine's clock with Key Vault's: a writer whose clock is minutes off restarts nothing
extra and misses nothing. A workload with no annotation (restarted by hand, or before this product
recorded fingerprints) is restarted once, which records it.

An event for a gateway whose Key Vault and Secrets are current means one of its instances runs an
older token (its pods were not restarted): a *heal*. APIM sends one event per instance; the first
restarts the workloads (recording the fingerprint) and the duplicates find them current.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Heal:
    """Restart the workloads of in-sync targets whose pods still run an older token."""

    instance: str | None = None                 # the gateway instance (pod) an event named
    instance_expires_at: datetime | None = None  # its token's expiry, from the event
    unrestartable_fails: bool = True  # a target without `restart` list fails (the event is retried)


class RestartAction(StrEnum):
    RESTART = "restart"  # restarted for another token (or never by this product): restart it
    CURRENT = "current"  # restarted for this token: its pods run it, or are rolling to it


def restart_action(workload_fingerprint: str | None, token_fingerprint: str) -> RestartAction:
    """Whether a workload of a target holding the token `token_fingerprint` must be restarted."""
    return RestartAction.CURRENT if workload_fingerprint == token_fingerprint else RestartAction.RESTART


def instance_is_stale(instance_expires_at: datetime | None, stored_expires_at: datetime) -> bool:
    """An event's instance runs an older token than Key Vault's when its token expires earlier (tokens
    carry whole minutes; an event without an expiry is taken at its word)."""
    return instance_expires_at is None or instance_expires_at < stored_expires_at - timedelta(minutes=1)


def heal_needed(heal: Heal | None, stored_expires_at: datetime | None) -> Heal | None:
    """The heal to do, if any: none when there is no token to heal to, or the event's instance already
    runs one at least as recent as Key Vault's."""
    if heal is None or stored_expires_at is None:
        return None
    return heal if instance_is_stale(heal.instance_expires_at, stored_expires_at) else None

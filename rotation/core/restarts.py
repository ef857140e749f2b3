"""When a target's workloads must restart to load its token, and how that is remembered.

Pods read the token at start: a Secret in sync says nothing about what they run. A write leaves the
restart-pending marker on the Secret until its workloads restarted; an event for a gateway whose Key
Vault and Secrets are current means one instance still runs an older token (a heal).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

# Set on a Secret between its token write and the end of its workloads' restart, so a restart that
# failed (or a process that died) is redone by the next reconcile even though the token is in sync.
RESTART_PENDING = "apim-token-rotator/restart-pending"
# An event restarts a workload at most once per this interval (APIM sends one event per instance).
HEAL_COOLDOWN = timedelta(minutes=10)
# Clock difference tolerated between Key Vault's `created` and the restartedAt this app writes.
CLOCK_SKEW = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Heal:
    """Restart the workloads of in-sync targets whose pods still run an older token.

    An event for a gateway whose Key Vault and Secrets are current means one of its instances runs
    an old token (its pods were not restarted); a key roll needs the same before regenerating.
    """

    instance: str | None = None                 # the gateway instance (pod) an event named
    instance_expires_at: datetime | None = None  # its token's expiry, from the event
    cooldown: timedelta = HEAL_COOLDOWN
    unrestartable_fails: bool = True  # a target without `restart` list fails (the event is retried)


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


def heal_needed(heal: Heal | None, stored_expires_at: datetime | None) -> Heal | None:
    """The heal to do, if any: none when there is no token to heal to, or the event's instance already
    runs one at least as recent as Key Vault's."""
    if heal is None or stored_expires_at is None:
        return None
    return heal if instance_is_stale(heal.instance_expires_at, stored_expires_at) else None

"""What status reports: where each gateway's token stands, compared by fingerprint only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from rotation.core.consumption import Consumption
from rotation.core.model import KeyType, RolloutState, RotationReport, SyncState
from rotation.core.printable import printable
from rotation.core.token import parse_stored


def sync_state(secret_value: str | None, fingerprint: str | None, fmt: str) -> SyncState:
    """in_sync when the Secret holds exactly the Key Vault token in the target's format."""
    current = parse_stored(secret_value)
    if current is None:
        return SyncState.MISSING if secret_value is None else SyncState.STALE
    if fingerprint and current.fingerprint == fingerprint and secret_value == current.formatted(fmt):
        return SyncState.IN_SYNC
    return SyncState.STALE


def foreign_token(secret_value: str | None, gateway: str) -> str | None:
    """Why a target is a mismatch when its Secret holds a token of another gateway (None if not): a
    rotation would overwrite that gateway's token. The token names its gateway in clear."""
    held = parse_stored(secret_value)
    if held is None or held.gateway.lower() == gateway.lower():
        return None
    return (f"the Secret key holds a token of gateway {printable(held.gateway)} (fingerprint {held.fingerprint}), not "
            f"{gateway}: is this target registered to the wrong gateway? A rotation would overwrite it")


@dataclass(frozen=True, slots=True)
class TargetStatus:
    cluster: str
    namespace: str
    secret: str
    state: SyncState
    fingerprint: str | None = None
    expires_at: datetime | None = None
    rollouts: tuple[RolloutState, ...] = ()
    error: str | None = None
    consumption: Consumption | None = None  # do the registered workloads read this Secret key?
    restart_pending: str | None = None  # a writer's restart onto this token is not done (its fingerprint)

    def to_dict(self) -> dict[str, object]:
        return {
            "cluster": self.cluster, "namespace": self.namespace, "secret": self.secret,
            "state": self.state.value, "fingerprint": self.fingerprint,
            "expiresAt": self.expires_at.isoformat() if self.expires_at else None,
            "rollouts": [{"workload": str(r.workload), "ready": r.ready, "detail": r.detail}
                         for r in self.rollouts],
            "error": self.error,
            "consumption": self.consumption.to_dict() if self.consumption else None,
            "restartPending": self.restart_pending,
        }


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    gateway_id: str
    service: str
    gateway: str
    key_vault_secret: str
    expires_at: datetime | None
    key_type: KeyType | None
    fingerprint: str | None
    targets: tuple[TargetStatus, ...]
    key_roll_pending: KeyType | None = None
    error: str | None = None
    warning: str | None = None  # e.g. leases are in-process only (LEASE_CONTAINER_URL unset)
    origin: str | None = None  # set while Key Vault's token is one adopted from a target

    @property
    def healthy(self) -> bool:
        """Every target in sync with rolled-out workloads that were restarted onto it, Key Vault's token
        unexpired (`error` says so otherwise), and no key roll pending (a pending roll leaves the key it
        retires valid: the compromise is not contained yet)."""
        return self.error is None and self.key_roll_pending is None and all(
            t.state is SyncState.IN_SYNC and t.restart_pending is None and all(r.ready for r in t.rollouts)
            for t in self.targets
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "gatewayId": self.gateway_id, "service": self.service, "gateway": self.gateway,
            "keyVaultSecret": self.key_vault_secret,
            "expiresAt": self.expires_at.isoformat() if self.expires_at else None,
            "keyType": self.key_type.value if self.key_type else None,
            "fingerprint": self.fingerprint,
            "keyRollPending": self.key_roll_pending.value if self.key_roll_pending else None,
            "healthy": self.healthy, "error": self.error, "warning": self.warning, "origin": self.origin,
            "targets": [t.to_dict() for t in self.targets],
        }


@dataclass(frozen=True, slots=True)
class SweepReport:
    reports: tuple[RotationReport, ...]
    duration_ms: int

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok, "durationMs": self.duration_ms, "gateways": len(self.reports),
            "rotated": sum(r.rotated for r in self.reports),
            "failed": sum(not r.ok for r in self.reports),
            "reports": [r.to_dict() for r in self.reports],
        }


class KeyRollPhase(StrEnum):
    PLANNED = "planned"       # dry run: what would happen
    PENDING = "pending"       # phase 1 not confirmed everywhere: the old key was NOT regenerated
    COMPLETED = "completed"   # every target confirmed, the old key regenerated


@dataclass(frozen=True, slots=True)
class KeyRollReport:
    gateway_id: str
    from_key: KeyType
    to_key: KeyType
    phase: KeyRollPhase
    rotation: RotationReport
    pending: tuple[str, ...] = ()
    regenerated: bool = False
    resumed: bool = False  # phase 1 had already run (Key Vault's keyRollFrom tag said so)

    @property
    def ok(self) -> bool:
        return self.phase is not KeyRollPhase.PENDING

    def to_dict(self) -> dict[str, object]:
        return {
            "gatewayId": self.gateway_id, "fromKey": self.from_key.value, "toKey": self.to_key.value,
            "phase": self.phase.value, "regenerated": self.regenerated, "resumed": self.resumed,
            "pending": list(self.pending),
            "ok": self.ok, "rotation": self.rotation.to_dict(),
        }

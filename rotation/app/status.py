"""What every gateway and target holds now, from one Key Vault listing and parallel target reads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rotation.app.context import Deps, deadline
from rotation.app.sweep import listing
from rotation.core.consumption import ConsumptionState
from rotation.core.consumption import check as check_consumption
from rotation.core.deadline import Deadline
from rotation.core.errors import NotFound, RotationError
from rotation.core.model import GatewayConfig, SyncState, Target, TokenInfo
from rotation.core.restarts import RESTART_PENDING
from rotation.core.status import GatewayStatus, TargetStatus, foreign_token, sync_state
from rotation.core.token import parse_stored
from rotation.telemetry import Executor

MAX_READS = 128
LOCAL_LEASE_WARNING = ("leases are in-process only (LEASE_CONTAINER_URL is unset): other instances and the "
                       "CLI are not serialised with this one")


def status(deps: Deps, configs: Sequence[GatewayConfig], *, timeout: float, lease_shared: bool) -> list[GatewayStatus]:
    """Token expiry from one Key Vault listing; every target read in parallel, compared by fingerprint."""
    infos = listing(deps, timeout)
    jobs = [(c, t) for c in configs for t in c.targets]
    budget = deadline(timeout)
    with Executor(max_workers=max(1, min(len(jobs), MAX_READS)), thread_name_prefix="status") as pool:
        futures = [pool.submit(target_status, deps, t, infos.get(c.key_vault_secret.lower()), budget, c.ref.gateway)
                   for c, t in jobs]
        results = iter([f.result() for f in futures])
    warning = None if lease_shared else LOCAL_LEASE_WARNING
    return [_gateway_status(deps, config, infos.get(config.key_vault_secret.lower()), results, warning)
            for config in configs]


def _gateway_status(deps: Deps, config: GatewayConfig, info: TokenInfo | None, results: Iterator[TargetStatus],
                    warning: str | None) -> GatewayStatus:
    error = None if info else "no token in Key Vault"
    if info is not None and info.expires_at is not None and info.expires_at <= deps.clock():
        error = (f"Key Vault's token expired at {info.expires_at:%Y-%m-%d %H:%M} UTC: no target's copy "
                 "verifies; run rotate")
    return GatewayStatus(
        gateway_id=config.ref.id, service=config.ref.service, gateway=config.ref.gateway,
        key_vault_secret=config.key_vault_secret,
        expires_at=info.expires_at if info else None, key_type=info.key_type if info else None,
        fingerprint=info.fingerprint if info else None,
        targets=tuple(next(results) for _ in config.targets),
        key_roll_pending=info.roll_from if info else None,
        error=error,
        warning=warning,
        origin=info.origin if info else None,
    )


def target_status(deps: Deps, target: Target, info: TokenInfo | None, budget: Deadline,
                  gateway: str | None = None) -> TargetStatus:
    def status(state: SyncState, **kw: Any) -> TargetStatus:
        return TargetStatus(target.cluster, target.namespace, target.secret, state, **kw)

    try:
        client = deps.clusters.client(deps.registry.clusters[target.cluster])
        secret = client.read_secret(target.namespace, target.secret, target.key,
                                    timeout=budget.check("reading the Secret"))
        rollouts = tuple(client.rollout(target.namespace, w, timeout=budget.check("reading rollout"))
                         for w in target.restart)
    except NotFound as exc:
        return status(SyncState.MISSING, error=str(exc))
    except RotationError as exc:
        return status(SyncState.UNREACHABLE, error=str(exc))
    held = parse_stored(secret.value)
    state = sync_state(secret.value, info.fingerprint if info else None, target.format)
    consumption = check_consumption(target, {r.workload: r.uses for r in rollouts}, secret.labels)
    if consumption.state is ConsumptionState.MISMATCH:  # rotating cannot help: the pods read another key
        state = SyncState.MISMATCH
    foreign = foreign_token(secret.value, gateway) if gateway else None
    if foreign is not None:  # another gateway's token: the registry, not the token, is wrong
        state = SyncState.MISMATCH
    # The marker is only ever cleared for a target with workloads to restart (see rotation.app.targets).
    pending = secret.annotations.get(RESTART_PENDING) if target.restart else None
    return status(state, fingerprint=held.fingerprint if held else None,
                  expires_at=held.expires_at if held else None, rollouts=rollouts, consumption=consumption,
                  restart_pending=pending, error=foreign)

"""What every gateway and target holds now, from one Key Vault listing and parallel target reads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rotation.app.context import Deps, deadline
from rotation.app.holding import lease_name
from rotation.app.sweep import listing
from rotation.core.consumption import ConsumptionState
from rotation.core.consumption import check as check_consumption
from rotation.core.deadline import Deadline
from rotation.core.errors import NotFound, RotationError
from rotation.core.fencing import Chain, FenceHead, chain_state
from rotation.core.model import GatewayConfig, SyncState, Target, TokenInfo
from rotation.core.ports import Lease
from rotation.core.status import GatewayStatus, TargetStatus, sync_state
from rotation.core.token import parse_stored
from rotation.telemetry import Executor

MAX_READS = 128
LOCAL_LEASE_WARNING = ("leases are in-process only (LEASE_CONTAINER_URL is unset): other instances and the "
                       "CLI are not serialised with this one")


def status(deps: Deps, configs: Sequence[GatewayConfig], *, timeout: float, lease: Lease) -> list[GatewayStatus]:
    """Token expiry from one Key Vault listing and the committed heads from one lease listing; every
    target read in parallel, compared by fingerprint."""
    budget = deadline(timeout)
    infos = listing(deps, timeout)
    heads_error = None
    try:
        heads = lease.heads([lease_name(c) for c in configs], timeout=budget.check("listing the lease heads"))
    except RotationError as exc:
        heads, heads_error = {}, f"cannot tell whether Key Vault's latest version is the committed one: {exc}"
    # Another registered gateway's current token in a target: the registry, not the token, is wrong.
    others = {i.fingerprint: c.ref.id for c in deps.registry.gateways
              if (i := infos.get(c.key_vault_secret.lower())) is not None and i.fingerprint}
    jobs = [(c, t) for c in configs for t in c.targets]
    with Executor(max_workers=max(1, min(len(jobs), MAX_READS)), thread_name_prefix="status") as pool:
        futures = [pool.submit(target_status, deps, t, infos.get(c.key_vault_secret.lower()), budget,
                               {fp: g for fp, g in others.items() if g.lower() != c.ref.id.lower()})
                   for c, t in jobs]
        results = iter([f.result() for f in futures])
    warning = None if lease.shared else LOCAL_LEASE_WARNING
    return [_gateway_status(deps, config, infos.get(config.key_vault_secret.lower()), results, warning,
                            heads.get(lease_name(config)), heads_error)
            for config in configs]


def _key_vault_problem(deps: Deps, config: GatewayConfig, info: TokenInfo | None, head: FenceHead | None,
                       heads_error: str | None) -> str | None:
    """Why Key Vault's token is not one the product may stand behind (None: it is)."""
    if info is None:
        return "no token in Key Vault"
    if (info.gateway_id or "").lower() != config.ref.id.lower():
        return (f"Key Vault's token was written for {info.gateway_id or 'no gateway'}, not this gateway: it is "
                "never pushed; run rotate with force")
    if head is not None and chain_state(None, info.fingerprint, head) is Chain.FORK:
        return (f"Key Vault's latest version (fingerprint {info.fingerprint}) is not the one the gateway's lease "
                f"holder committed ({head.fingerprint}, generation {head.generation}): a late or foreign write, "
                "never pushed; the next rotate stores the committed token again")
    if heads_error is not None:
        return heads_error
    if info.expires_at is not None and info.expires_at <= deps.clock():
        return (f"Key Vault's token expired at {info.expires_at:%Y-%m-%d %H:%M} UTC: no target's copy "
                "verifies; run rotate")
    return None


def _gateway_status(deps: Deps, config: GatewayConfig, info: TokenInfo | None, results: Iterator[TargetStatus],
                    warning: str | None, head: FenceHead | None, heads_error: str | None) -> GatewayStatus:
    targets = tuple(next(results) for _ in config.targets)
    if info is None:
        return GatewayStatus(config.ref.id, config.ref.service, config.ref.gateway, config.key_vault_secret,
                             None, None, None, targets, error="no token in Key Vault", warning=warning)
    return GatewayStatus(
        gateway_id=config.ref.id, service=config.ref.service, gateway=config.ref.gateway,
        key_vault_secret=config.key_vault_secret, expires_at=info.expires_at, key_type=info.key_type,
        fingerprint=info.fingerprint, targets=targets, key_roll_pending=info.roll_from,
        error=_key_vault_problem(deps, config, info, head, heads_error), warning=warning, origin=info.origin,
    )


def target_status(deps: Deps, target: Target, info: TokenInfo | None, budget: Deadline,
                  others: dict[str, str] | None = None) -> TargetStatus:
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
    owner = (others or {}).get(held.fingerprint) if held is not None else None
    foreign = None
    if owner is not None:  # another registered gateway's current token: the registry names the wrong key
        state = SyncState.MISMATCH
        foreign = (f"holds the current token of gateway {owner} (its Key Vault version): the target is probably "
                   "registered to the wrong gateway")
    # Workloads not restarted for the Secret's token (their pod template's fingerprint; none recorded counts
    # as not restarted for it, see rotation.core.restarts).
    pending = held.fingerprint if held is not None and any(
        r.token_fingerprint != held.fingerprint for r in rollouts) else None
    return status(state, fingerprint=held.fingerprint if held else None,
                  expires_at=held.expires_at if held else None, rollouts=rollouts, consumption=consumption,
                  restart_pending=pending, error=foreign)

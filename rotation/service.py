"""The reconcile loop every entry point ends in: gather → decide → act, over the ports.

Gather reads Key Vault (or takes what a sweep's listing already told) and each target's Secret;
decide is `rotation.core.policies`; act writes Key Vault first, then fans out to the targets in
parallel under one deadline. Nothing here imports an SDK.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, as_completed, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from rotation.core.errors import (
    Conflict,
    InvalidToken,
    NotFound,
    RotationError,
    UnknownGateway,
    UpstreamError,
)
from rotation.core.model import (
    GatewayConfig,
    KeyType,
    Outcome,
    Registry,
    RotationReport,
    SyncState,
    Target,
    TargetReport,
    TokenInfo,
    TokenRecord,
    Workload,
)
from rotation.core.policies import (
    Desired,
    TargetAction,
    doomed_by_roll,
    key_type_for,
    new_expiry,
    promotable,
    renewal_reason,
    target_action,
)
from rotation.core.ports import ClusterClient, Clusters, OutcomePublisher, TokenIssuer, TokenStore
from rotation.core.status import GatewayStatus, KeyRollPhase, KeyRollReport, SweepReport, TargetStatus, sync_state
from rotation.core.token import GatewayToken, parse_stored
from rotation.telemetry import Executor, emit, error_class

log = logging.getLogger("rotation")

# Set on a Secret between its token write and the end of its workloads' restart, so a restart that
# failed (or a process that died) is redone by the next reconcile even though the token is in sync.
RESTART_PENDING = "apim-token-rotator/restart-pending"
MAX_FANOUT = 128

Clock = Callable[[], datetime]


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def check(self, what: str) -> float:
        left = self.left()
        if left <= 0:
            raise UpstreamError(f"deadline passed before {what}")
        return left


@dataclass
class _TokenSource:
    """The token targets should hold; its value is fetched from Key Vault only if a target needs it."""

    desired: Desired
    load: Callable[[], GatewayToken]
    _token: GatewayToken | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def token(self) -> GatewayToken:
        with self._lock:
            if self._token is None:
                self._token = self.load()
            return self._token


@dataclass
class Rotator:
    registry: Registry
    issuer: TokenIssuer
    store: TokenStore
    clusters: Clusters
    clock: Clock
    token_lifetime: timedelta = timedelta(days=29)
    renew_before: timedelta = timedelta(days=7)
    publisher: OutcomePublisher | None = None
    sweep_concurrency: int = 8
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    # --- lookup -----------------------------------------------------------------------------------

    def gateway(self, service: str, gateway: str) -> GatewayConfig:
        config = self.registry.find(service, gateway)
        if config is None:
            raise UnknownGateway(f"gateway {service}/{gateway} is not in the registry")
        return config

    @contextmanager
    def _exclusive(self, config: GatewayConfig, deadline: _Deadline) -> Iterator[None]:
        """Per-instance events for one gateway arrive together: serialise them in this worker."""
        with self._locks_guard:
            lock = self._locks.setdefault(config.ref.key, threading.Lock())
        if not lock.acquire(timeout=deadline.left()):
            raise UpstreamError(f"{config.ref}: another reconcile of this gateway is still running")
        try:
            yield
        finally:
            lock.release()

    # --- reconcile --------------------------------------------------------------------------------

    def reconcile(self, config: GatewayConfig, *, reason: str, deadline_seconds: float,
                  force: bool = False, dry_run: bool = False, known: TokenInfo | None = None,
                  key_type: KeyType | None = None, roll_from: KeyType | None = None) -> RotationReport:
        """Bring every target of one gateway to the Key Vault token, renewing it first if due.

        If targets kept a later-expiring Key Vault version (racing rotations), that version is made
        the latest and a second pass brings the others up to it. During a key roll (`roll_from`),
        tokens of the key about to be regenerated are replaced even if they expire later.

        Raises a RotationError when Key Vault or ARM fail (nothing reached a cluster); target
        failures are reported per target instead.
        """
        started = time.monotonic()
        deadline = _Deadline(deadline_seconds)
        try:
            return self._reconcile(config, reason, deadline, started, force, dry_run, known, key_type, roll_from)
        except Exception as exc:
            # A failure before the targets (ARM 403, Key Vault 5xx, a bad setting) is an outcome too.
            self._record(config, _failed(config, reason, dry_run, started, exc), error_class(exc), deadline=deadline)
            raise

    def _reconcile(self, config: GatewayConfig, reason: str, deadline: _Deadline, started: float, force: bool,
                   dry_run: bool, known: TokenInfo | None, key_type: KeyType | None,
                   roll_from: KeyType | None) -> RotationReport:
        with self._exclusive(config, deadline):
            source, rotated, chosen_key = self._gather_and_renew(
                config, deadline, force, dry_run, known, key_type, roll_from)
            doomed = self._doomed(config, roll_from, deadline) if roll_from is not None and source else frozenset()
            held: dict[Target, GatewayToken] = {}
            targets = self._fan_out(config, source, deadline, dry_run or source is None, held, doomed)
            # A straggler thread past the deadline may still add to `held`: take a snapshot. A key
            # roll decides alone what targets hold, so it promotes nothing.
            newer = tuple(held.values())
            promote = newer and not dry_run and roll_from is None
            promoted = self._promote(config, newer, deadline) if promote else None
            if promoted is not None:
                source, rotated = promoted, True
                targets = self._fan_out(config, source, deadline, False, {}, doomed)
        report = RotationReport(
            gateway_id=config.ref.id,
            rotated=rotated,
            expires_at=source.desired.expires_at if source else None,
            key_type=chosen_key,
            fingerprint=source.desired.fingerprint if source else None,
            reason=reason,
            duration_ms=int((time.monotonic() - started) * 1000),
            targets=targets,
            dry_run=dry_run,
        )
        self._record(config, report, deadline=deadline)
        return report

    def _gather_and_renew(
        self, config: GatewayConfig, deadline: _Deadline, force: bool, dry_run: bool,
        known: TokenInfo | None, key_type: KeyType | None, roll_from: KeyType | None,
    ) -> tuple[_TokenSource | None, bool, KeyType]:
        now = self.clock()
        secret = config.key_vault_secret
        if (known is not None and not force and key_type is None and known.fingerprint
                and known.expires_at is not None and known.expires_at - now > self.renew_before):
            # The sweep's one listing already says the stored token is fresh: no per-gateway read.
            desired = Desired(config.ref.gateway, known.fingerprint, known.expires_at)
            return (_TokenSource(desired, lambda: self._load(config, deadline)), False,
                    known.key_type or KeyType.PRIMARY)

        current = self.store.get(secret, timeout=deadline.check("reading Key Vault"))
        why = renewal_reason(current, now, self.renew_before, force)
        if key_type is not None and current is not None and current.key_type is not key_type:
            why = why or f"key roll to {key_type.value}"
        chosen = key_type or key_type_for(config.key_type, current)
        if why is None and current is not None:
            token = current.token
            return _TokenSource(_desired(token), lambda: token, token), False, current.key_type
        if dry_run:
            return None, False, chosen

        expiry = new_expiry(now, self.token_lifetime)
        value = self.issuer.generate_token(config.ref, chosen, expiry, timeout=deadline.check("generateToken"))
        try:
            token = GatewayToken.parse(value)
        except InvalidToken as exc:
            raise UpstreamError(f"ARM generateToken for {config.ref} returned an unusable token: {exc}") from None
        if token.gateway.lower() != config.ref.gateway.lower():
            raise UpstreamError(f"ARM generateToken for {config.ref} returned a token for another gateway")
        record = TokenRecord(token=token, key_type=chosen, gateway_id=config.ref.id, roll_from=roll_from)
        # Key Vault before any cluster: a target never holds a token Key Vault does not.
        self.store.put(secret, record, timeout=deadline.check("writing Key Vault"))
        emit("rotation.token", {"gatewayId": config.ref.id, "fingerprint": token.fingerprint,
                                "expiresAt": token.expires_at.isoformat(), "keyType": chosen.value,
                                "why": why})
        return _TokenSource(_desired(token), lambda: token, token), True, chosen

    def _load(self, config: GatewayConfig, deadline: _Deadline) -> GatewayToken:
        record = self.store.get(config.key_vault_secret, timeout=deadline.check("reading Key Vault"))
        if record is None:
            raise NotFound(f"Key Vault secret {config.key_vault_secret} disappeared")
        return record.token

    def _promote(self, config: GatewayConfig, held: Sequence[GatewayToken],
                 deadline: _Deadline) -> _TokenSource | None:
        """Makes a later-expiring version that targets hold Key Vault's latest again (see
        `policies.promotable`), so that every target converges on what Key Vault says. Best effort:
        the targets already hold valid tokens, so a failure here is logged, not raised."""
        secret = config.key_vault_secret
        try:
            latest = self.store.get(secret, timeout=deadline.check("reading Key Vault"))
            if latest is None:
                return None
            versions = self.store.versions(secret, timeout=deadline.check("listing Key Vault versions"))
            token = promotable(latest, versions, held, config.ref.gateway)
            if token is None:
                return None
            record = TokenRecord(token=token, key_type=latest.key_type, gateway_id=config.ref.id)
            self.store.put(secret, record, timeout=deadline.check("writing Key Vault"))
        except RotationError as exc:
            log.warning("%s: could not make the later-expiring version targets hold Key Vault's latest: %s",
                        config.ref, exc)
            return None
        emit("rotation.token", {"gatewayId": config.ref.id, "fingerprint": token.fingerprint,
                                "expiresAt": token.expires_at.isoformat(), "keyType": latest.key_type.value,
                                "why": "a target held a later-expiring earlier version: stored it as the latest"})
        return _TokenSource(_desired(token), lambda: token, token)

    def _doomed(self, config: GatewayConfig, roll_from: KeyType, deadline: _Deadline) -> frozenset[str]:
        """During a key roll: the stored tokens of the key about to be regenerated. Best effort: without
        them a target holding such a token stays `newer`, and the roll stops before regenerating."""
        try:
            versions = self.store.versions(config.key_vault_secret,
                                           timeout=deadline.check("listing Key Vault versions"))
        except RotationError as exc:
            log.warning("%s: could not list Key Vault versions for the key roll: %s", config.ref, exc)
            return frozenset()
        return doomed_by_roll(versions, roll_from)

    def _fan_out(self, config: GatewayConfig, source: _TokenSource | None, deadline: _Deadline,
                 plan_only: bool, held: dict[Target, GatewayToken],
                 doomed: frozenset[str] = frozenset()) -> tuple[TargetReport, ...]:
        """`held` collects the tokens of targets found `newer` than `source`; a target holding a
        `doomed` token is overwritten even if that token expires later."""
        targets = config.targets
        started = time.monotonic()
        pool = Executor(max_workers=min(len(targets), MAX_FANOUT), thread_name_prefix="target")
        try:
            futures: list[Future[TargetReport]] = [
                pool.submit(self._sync_target, config, t, source, deadline, plan_only, held, doomed)
                for t in targets
            ]
            wait(futures, timeout=deadline.left())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return tuple(
            f.result() if f.done() and not f.cancelled()
            else TargetReport(t.cluster, t.namespace, t.secret, Outcome.TIMEOUT,
                              error="deadline passed before the target answered",
                              duration_ms=int((time.monotonic() - started) * 1000))
            for t, f in zip(targets, futures, strict=True)
        )

    def _sync_target(self, config: GatewayConfig, target: Target, source: _TokenSource | None,
                     deadline: _Deadline, plan_only: bool, held: dict[Target, GatewayToken],
                     doomed: frozenset[str]) -> TargetReport:
        started = time.monotonic()

        def done(outcome: Outcome, restarted: Sequence[str] = (), error: str | None = None) -> TargetReport:
            return TargetReport(target.cluster, target.namespace, target.secret, outcome, tuple(restarted),
                                error, int((time.monotonic() - started) * 1000))

        try:
            client = self.clusters.client(self.registry.clusters[target.cluster])
            for attempt in (1, 2):
                state = client.read_secret(target.namespace, target.secret, target.key,
                                           timeout=deadline.check("reading the Secret"))
                pending = RESTART_PENDING in state.annotations
                if source is None:
                    return done(Outcome.PLANNED, [str(w) for w in target.restart])
                action = target_action(state.value, source.desired, target.format, doomed)
                if action is TargetAction.NEWER:
                    newer = parse_stored(state.value)
                    if newer is not None:
                        held[target] = newer
                    return done(Outcome.NEWER)
                if action is TargetAction.IN_SYNC and not (pending and target.restart):
                    return done(Outcome.IN_SYNC)
                if plan_only:
                    return done(Outcome.PLANNED, [str(w) for w in target.restart])
                if action is TargetAction.WRITE:
                    value = source.token().formatted(target.format)
                    marker = {RESTART_PENDING: source.desired.fingerprint} if target.restart else None
                    try:
                        client.write_secret_key(target.namespace, target.secret, target.key, value,
                                                state.resource_version,
                                                timeout=deadline.check("writing the Secret"), annotations=marker)
                    except Conflict:
                        if attempt == 2:
                            raise
                        continue  # someone else wrote meanwhile: re-read and decide again
                restarted = self._restart(client, target, deadline)
                return done(Outcome.UPDATED if action is TargetAction.WRITE else Outcome.IN_SYNC, restarted)
            raise Conflict("unreachable")  # pragma: no cover - the loop always returns or raises
        except RotationError as exc:
            return done(Outcome.TIMEOUT if deadline.left() <= 0 else Outcome.FAILED, error=str(exc))
        except Exception as exc:  # a bug must not take the other targets down with it
            log.exception("unexpected error syncing %s", target)
            return done(Outcome.FAILED, error=f"internal error: {type(exc).__name__}")

    def _restart(self, client: ClusterClient, target: Target, deadline: _Deadline) -> list[str]:
        if not target.restart:
            return []
        at = self.clock()
        restarted = []
        for workload in target.restart:
            client.restart(target.namespace, workload, at, timeout=deadline.check(f"restarting {workload}"))
            restarted.append(str(workload))
        client.annotate_secret(target.namespace, target.secret, {RESTART_PENDING: None},
                                       timeout=deadline.check("clearing the restart marker"))
        return restarted

    # --- two-phase key roll -----------------------------------------------------------------------

    def roll_keys(self, config: GatewayConfig, *, deadline_seconds: float, rollout_wait_seconds: float = 60.0,
                  dry_run: bool = False, poll_seconds: float = 1.0) -> KeyRollReport:
        """Move the gateway to its other key; regenerate the old key only once every target confirmed.

        Phase 1 writes a token from the other key (tagged with the key it rolls away from) and
        pushes it everywhere; phase 2 regenerates the old key, which invalidates every token it
        signed. A target that did not take the new token, or whose restarted workloads did not
        finish rolling out, stops the roll before phase 2; running it again resumes.
        """
        current = self.store.get(config.key_vault_secret, timeout=deadline_seconds)
        if current is not None and current.roll_from is not None:
            old, resumed = current.roll_from, True
        else:
            old, resumed = (current.key_type if current else key_type_for(config.key_type, None)), False
        new = old.other
        reason = f"key roll {old.value} -> {new.value}" + (" (resumed)" if resumed else "")
        rotation = self.reconcile(config, reason=reason, deadline_seconds=deadline_seconds, dry_run=dry_run,
                                  key_type=new, roll_from=old)

        def result(phase: KeyRollPhase, pending: Sequence[str] = (), regenerated: bool = False) -> KeyRollReport:
            report = KeyRollReport(config.ref.id, old, new, phase, rotation, tuple(pending), regenerated, resumed)
            emit("rotation.keyroll", {"gatewayId": config.ref.id, "from": old.value, "to": new.value,
                                      "phase": phase.value, "pending": list(pending)})
            return report

        if dry_run:
            return result(KeyRollPhase.PLANNED)
        pending = [f"{t.cluster}/{t.namespace}/{t.secret}: {t.outcome.value}" + (f" ({t.error})" if t.error else "")
                   for t in rotation.targets if t.outcome not in (Outcome.UPDATED, Outcome.IN_SYNC)]
        if not pending:
            pending = self._await_rollouts(config, rollout_wait_seconds, poll_seconds)
        if pending:
            return result(KeyRollPhase.PENDING, pending)
        self.issuer.regenerate_key(config.ref, old, timeout=deadline_seconds)
        latest = self.store.get(config.key_vault_secret, timeout=deadline_seconds)
        if latest is not None and latest.roll_from is not None:
            self.store.put(config.key_vault_secret, replace(latest, roll_from=None, version=None),
                           timeout=deadline_seconds)
        return result(KeyRollPhase.COMPLETED, regenerated=True)

    def _await_rollouts(self, config: GatewayConfig, wait_seconds: float, poll_seconds: float) -> list[str]:
        deadline = _Deadline(wait_seconds)
        waiting = [(t, w) for t in config.targets for w in t.restart]
        while True:
            still: list[tuple[Target, Workload, str]] = []
            for target, workload in waiting:
                try:
                    client = self.clusters.client(self.registry.clusters[target.cluster])
                    state = client.rollout(target.namespace, workload, timeout=max(deadline.left(), 1.0))
                    if not state.ready:
                        still.append((target, workload, state.detail))
                except RotationError as exc:
                    still.append((target, workload, str(exc)))
            if not still or deadline.left() <= 0:
                return [f"{t.cluster}/{t.namespace}/{w}: rollout not finished ({detail})" for t, w, detail in still]
            waiting = [(t, w) for t, w, _ in still]
            time.sleep(min(poll_seconds, deadline.left()))

    # --- sweep and status -------------------------------------------------------------------------

    def sweep(self, *, deadline_seconds: float, dry_run: bool = False,
              progress: Callable[[RotationReport], None] | None = None) -> SweepReport:
        """Reconcile every registered gateway; one Key Vault listing decides which need a token read."""
        started = time.monotonic()
        infos = self._listing(deadline_seconds)
        now = self.clock()
        for config in self.registry.gateways:
            info = infos.get(config.key_vault_secret.lower())
            if info is not None and info.expires_at is not None:
                emit("rotation.expiry", {"gatewayId": config.ref.id, "expiresAt": info.expires_at.isoformat(),
                                         "hoursLeft": round((info.expires_at - now).total_seconds() / 3600, 1)})
        reports: list[RotationReport] = []
        with Executor(max_workers=self.sweep_concurrency, thread_name_prefix="sweep") as pool:
            futures = [
                pool.submit(self.reconcile_safely, config, reason="sweep", deadline_seconds=deadline_seconds,
                            dry_run=dry_run, known=infos.get(config.key_vault_secret.lower()))
                for config in self.registry.gateways
            ]
            for future in as_completed(futures):
                report = future.result()
                reports.append(report)
                if progress is not None:
                    progress(report)
        order = {c.ref.id: i for i, c in enumerate(self.registry.gateways)}
        reports.sort(key=lambda r: order.get(r.gateway_id, 0))
        return SweepReport(tuple(reports), int((time.monotonic() - started) * 1000))

    def reconcile_safely(self, config: GatewayConfig, **kwargs: Any) -> RotationReport:
        """reconcile(), with a failure before the targets turned into a report instead of raised."""
        started = time.monotonic()
        try:
            return self.reconcile(config, **kwargs)
        except RotationError as exc:  # reconcile() recorded it
            return _failed(config, str(kwargs.get("reason", "")), bool(kwargs.get("dry_run", False)), started, exc)

    def _listing(self, timeout: float) -> dict[str, TokenInfo]:
        return {i.secret_name.lower(): i for i in self.store.list(timeout=timeout)}

    def status(self, configs: Sequence[GatewayConfig] | None = None, *, timeout: float = 20.0,
               ) -> list[GatewayStatus]:
        """Token expiry from one Key Vault listing; every target read in parallel, compared by fingerprint."""
        configs = list(self.registry.gateways if configs is None else configs)
        infos = self._listing(timeout)
        jobs = [(c, t) for c in configs for t in c.targets]
        deadline = _Deadline(timeout)
        with Executor(max_workers=max(1, min(len(jobs), MAX_FANOUT)),
                                thread_name_prefix="status") as pool:
            futures = [pool.submit(self._target_status, t, infos.get(c.key_vault_secret.lower()), deadline)
                       for c, t in jobs]
            results = iter([f.result() for f in futures])
        out = []
        for config in configs:
            info = infos.get(config.key_vault_secret.lower())
            out.append(GatewayStatus(
                gateway_id=config.ref.id, service=config.ref.service, gateway=config.ref.gateway,
                key_vault_secret=config.key_vault_secret,
                expires_at=info.expires_at if info else None, key_type=info.key_type if info else None,
                fingerprint=info.fingerprint if info else None,
                targets=tuple(next(results) for _ in config.targets),
                key_roll_pending=info.roll_from if info else None,
                error=None if info else "no token in Key Vault",
            ))
        return out

    def _target_status(self, target: Target, info: TokenInfo | None, deadline: _Deadline) -> TargetStatus:
        def status(state: SyncState, **kw: Any) -> TargetStatus:
            return TargetStatus(target.cluster, target.namespace, target.secret, state, **kw)

        try:
            client = self.clusters.client(self.registry.clusters[target.cluster])
            secret = client.read_secret(target.namespace, target.secret, target.key,
                                        timeout=deadline.check("reading the Secret"))
            rollouts = tuple(client.rollout(target.namespace, w, timeout=deadline.check("reading rollout"))
                             for w in target.restart)
        except NotFound as exc:
            return status(SyncState.MISSING, error=str(exc))
        except RotationError as exc:
            return status(SyncState.UNREACHABLE, error=str(exc))
        held = parse_stored(secret.value)
        return status(sync_state(secret.value, info.fingerprint if info else None, target.format),
                      fingerprint=held.fingerprint if held else None,
                      expires_at=held.expires_at if held else None, rollouts=rollouts)

    # --- reporting --------------------------------------------------------------------------------

    def _record(self, config: GatewayConfig, report: RotationReport, failure: str | None = None, *,
                deadline: _Deadline | None = None) -> None:
        base = {"gatewayId": report.gateway_id, "service": config.ref.service, "gateway": config.ref.gateway,
                "rotated": report.rotated, "fingerprint": report.fingerprint, "keyType":
                report.key_type.value if report.key_type else None,
                "expiresAt": report.expires_at.isoformat() if report.expires_at else None,
                "reason": report.reason, "dryRun": report.dry_run}
        for t in report.targets:
            emit("rotation.target", {**base, **t.to_dict()},
                 logging.INFO if t.outcome.ok else logging.WARNING)
        emit("rotation.reconcile", {**base, "durationMs": report.duration_ms,
                                    "outcome": "ok" if report.ok else "failed",
                                    "failed": len(report.failed_targets), "errorClass": failure,
                                    "error": report.error},
             logging.INFO if report.ok else logging.WARNING)
        if self.publisher is not None and not report.dry_run and (report.rotated or not report.ok):
            # Inside the caller's deadline: the event handler must answer Event Grid in time.
            self.publisher.publish(report, timeout=deadline.left() if deadline else None)


def _failed(config: GatewayConfig, reason: str, dry_run: bool, started: float, exc: Exception) -> RotationReport:
    message = str(exc) if isinstance(exc, RotationError) else f"internal error: {type(exc).__name__}"
    return RotationReport(
        gateway_id=config.ref.id, rotated=False, expires_at=None, key_type=None, fingerprint=None, reason=reason,
        duration_ms=int((time.monotonic() - started) * 1000), targets=(), dry_run=dry_run, error=message,
    )


def _desired(token: GatewayToken) -> Desired:
    return Desired(token.gateway, token.fingerprint, token.expires_at)

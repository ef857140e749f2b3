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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rotation.core.consumption import ConsumptionState
from rotation.core.consumption import check as check_consumption
from rotation.core.errors import (
    Conflict,
    InvalidToken,
    NotFound,
    RotationError,
    UnknownGateway,
    UnusableSecret,
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
)
from rotation.core.policies import (
    Desired,
    HealAction,
    TargetAction,
    doomed_by_roll,
    heal_action,
    instance_is_stale,
    key_type_for,
    new_expiry,
    promotable,
    renewal_reason,
    target_action,
    token_stored_at,
)
from rotation.core.ports import (
    ClusterClient,
    Clusters,
    HeldLease,
    Lease,
    OutcomePublisher,
    TokenIssuer,
    TokenStore,
)
from rotation.core.redact import clean_reason
from rotation.core.status import (
    GatewayStatus,
    KeyRollReport,
    SweepReport,
    TargetStatus,
    foreign_token,
    sync_state,
)
from rotation.core.token import GatewayToken, parse_stored
from rotation.telemetry import Executor, attributed, error_class
from rotation.telemetry import emit as emit  # re-exported: keyroll and adoption record through it

log = logging.getLogger("rotation")

# Set on a Secret between its token write and the end of its workloads' restart, so a restart that
# failed (or a process that died) is redone by the next reconcile even though the token is in sync.
RESTART_PENDING = "apim-token-rotator/restart-pending"
MAX_FANOUT = 128
# One blob lease per gateway (15-60 s); renewed in the background every third of it while held.
LEASE_SECONDS = 30.0
# The timer's functionTimeout is 5 minutes (host.json): a sweep starts no gateway after this budget.
SWEEP_BUDGET_SECONDS = 240.0
LOCAL_LEASE_WARNING = ("leases are in-process only (LEASE_CONTAINER_URL is unset): other instances and the "
                       "CLI are not serialised with this one")
# An event restarts a workload at most once per this interval (APIM sends one event per instance).
HEAL_COOLDOWN = timedelta(minutes=10)

Clock = Callable[[], datetime]
Guard = Callable[[], None]  # raises UpstreamError when the caller no longer holds the gateway's lease


def _unguarded() -> None:
    return None


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


Deadline = _Deadline


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


@dataclass
class _TokenSource:
    """The token targets should hold; its value is fetched from Key Vault only if a target needs it."""

    desired: Desired
    load: Callable[[], GatewayToken]
    _token: GatewayToken | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    stored_at: Callable[[], datetime | None] = lambda: None

    def token(self) -> GatewayToken:
        with self._lock:
            if self._token is None:
                self._token = self.load()
            return self._token


class _Holding:
    """A held gateway lease, renewed in the background so a long roll wait cannot lose it silently.

    Every write under it (Key Vault, a Secret, a restart, regenerateKey) first calls `check` (or
    `renew`): a holder that lost its lease, e.g. paused longer than its duration while another instance
    took it, must stop writing rather than carry on as the gateway's one writer.
    """

    def __init__(self, held: HeldLease, name: str, interval: float) -> None:
        self._held = held
        self._name = name
        self._stop = threading.Event()
        self.lost: str | None = None
        self._thread = threading.Thread(target=attributed(lambda: self._run(interval)), name="lease-renew",
                                        daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._held.renew()
            except Exception as exc:  # noqa: BLE001 - any failure: stop counting on the lease
                self.lost = str(exc) if isinstance(exc, RotationError) else f"internal error: {type(exc).__name__}"
                log.warning("lease %s lost while held: %s", self._name, self.lost)
                return

    def renew(self) -> None:
        """Proves the lease is still ours (before an irreversible step); raises UpstreamError if not."""
        if self.lost is not None:
            raise UpstreamError(f"lease {self._name} was lost: {self.lost}")
        try:
            self._held.renew()
        except RotationError as exc:
            self.lost = str(exc)
            raise

    def check(self) -> None:
        """Before each write: raises UpstreamError if the lease was lost, including while this process
        was paused past its duration (then it renews first; that fails if another holder took it)."""
        if self.lost is not None:
            raise UpstreamError(f"lease {self._name} was lost: {self.lost}")
        try:
            self._held.check()
        except RotationError as exc:
            self.lost = str(exc)
            raise

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._held.release()


def lease_name(config: GatewayConfig) -> str:
    """One blob per gateway; service and gateway names are validated to [A-Za-z0-9_-]."""
    return f"{config.ref.service}/{config.ref.gateway}".lower()


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
    lease: Lease | None = None  # None: an in-process lease (local runs; see rotation.adapters.lease)
    sweep_budget_seconds: float = SWEEP_BUDGET_SECONDS
    adopt_existing: bool = False  # Key Vault's first token: the one targets run (rotation.adoption)

    def __post_init__(self) -> None:
        if self.lease is None:
            from rotation.adapters.lease import LocalLease

            self.lease = LocalLease()

    # --- lookup -----------------------------------------------------------------------------------

    def gateway(self, service: str, gateway: str) -> GatewayConfig:
        config = self.registry.find(service, gateway)
        if config is None:
            raise UnknownGateway(f"gateway {service}/{gateway} is not in the registry")
        return config

    @property
    def lease_shared(self) -> bool:
        return self.lease is not None and self.lease.shared

    @contextmanager
    def exclusive(self, config: GatewayConfig, deadline: _Deadline) -> Iterator[_Holding]:
        """The gateway's lease, across every instance and the CLI: one writer per gateway. Not getting
        it within the deadline raises UpstreamError (transient: Event Grid redelivers)."""
        assert self.lease is not None
        name = lease_name(config)
        held = self.lease.acquire(name, duration=LEASE_SECONDS, wait=deadline.check("taking the gateway lease"))
        holding = _Holding(held, name, LEASE_SECONDS / 3)
        try:
            yield holding
        finally:
            holding.release()

    # --- reconcile --------------------------------------------------------------------------------

    def reconcile(self, config: GatewayConfig, *, reason: str, deadline_seconds: float,
                  force: bool = False, dry_run: bool = False, known: TokenInfo | None = None,
                  heal: Heal | None = None) -> RotationReport:
        """Bring every target of one gateway to the Key Vault token, renewing it first if due, under the
        gateway's lease.

        If targets kept a later-expiring Key Vault version (racing rotations), that version is made
        the latest and a second pass brings the others up to it. While a key roll is pending (Key
        Vault's latest carries `keyRollFrom`), every new token is signed by the key rolled to and
        carries the roll forward; tokens of the retiring key are replaced even if they expire later.
        With `heal` (events), workloads of in-sync targets whose pods predate the token are restarted.

        Raises a RotationError when the lease, Key Vault or ARM fail (nothing reached a cluster);
        target failures are reported per target instead.
        """
        started = time.monotonic()
        reason = clean_reason(reason)  # free text from an operator: never log or publish a pasted secret
        deadline = _Deadline(deadline_seconds)
        entered = False
        try:
            with self.exclusive(config, deadline) as holding:
                entered = True
                return self.reconcile_held(config, reason=reason, deadline=deadline, started=started, force=force,
                                           dry_run=dry_run, known=known, heal=heal, guard=holding.check)
        except Exception as exc:
            if not entered:  # the lease failed: reconcile_held did not run, so nothing recorded the outcome
                self._record(config, _failed(config, reason, dry_run, started, exc), error_class(exc),
                             deadline=deadline)
            raise

    def reconcile_held(self, config: GatewayConfig, *, reason: str, deadline: _Deadline, started: float,
                       force: bool = False, dry_run: bool = False, known: TokenInfo | None = None,
                       heal: Heal | None = None, key_type: KeyType | None = None,
                       roll_from: KeyType | None = None, guard: Guard = _unguarded) -> RotationReport:
        """reconcile() for a caller that holds the gateway's lease (the key roll); `guard` is that
        lease's check, called before every write.

        Every outcome is recorded once, a failure before the targets (ARM 403, Key Vault 5xx, a bad
        setting) included: that is what the failed-rotation alert counts.
        """
        try:
            return self._reconcile_held(config, reason=reason, deadline=deadline, started=started, force=force,
                                        dry_run=dry_run, known=known, heal=heal, key_type=key_type,
                                        roll_from=roll_from, guard=guard)
        except Exception as exc:
            self._record(config, _failed(config, reason, dry_run, started, exc), error_class(exc),
                         deadline=deadline)
            raise

    def _reconcile_held(self, config: GatewayConfig, *, reason: str, deadline: _Deadline, started: float,
                        force: bool, dry_run: bool, known: TokenInfo | None, heal: Heal | None,
                        key_type: KeyType | None, roll_from: KeyType | None, guard: Guard) -> RotationReport:
        source, rotated, chosen_key, rolling = self._gather_and_renew(
            config, deadline, force, dry_run, known, key_type, roll_from, guard)
        doomed = self._doomed(config, rolling, deadline) if rolling is not None and source else frozenset()
        if heal is not None and (source is None or not instance_is_stale(heal.instance_expires_at,
                                                                           source.desired.expires_at)):
            heal = None
        held: dict[Target, GatewayToken] = {}
        targets = self._fan_out(config, source, deadline, dry_run or source is None, held, doomed, heal, guard)
        # A straggler thread past the deadline may still add to `held`: take a snapshot. During a key
        # roll the roll decides alone what targets hold, so nothing is promoted.
        newer = tuple(held.values())
        promote = newer and not dry_run and rolling is None
        promoted = self._promote(config, newer, deadline, guard) if promote else None
        if promoted is not None:
            source, rotated = promoted, True
            targets = self._fan_out(config, source, deadline, False, {}, doomed, guard=guard)
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
            instance=heal.instance if heal else None,
        )
        self._record(config, report, deadline=deadline)
        return report

    def _gather_and_renew(
        self, config: GatewayConfig, deadline: _Deadline, force: bool, dry_run: bool,
        known: TokenInfo | None, key_type: KeyType | None, roll_from: KeyType | None, guard: Guard = _unguarded,
    ) -> tuple[_TokenSource | None, bool, KeyType, KeyType | None]:
        """(source, rotated, key type, the key a pending roll retires)."""
        now = self.clock()
        secret = config.key_vault_secret
        if (known is not None and not force and key_type is None and known.fingerprint
                and known.roll_from is None
                and known.expires_at is not None and known.expires_at - now > self.renew_before):
            # The sweep's one listing already says the stored token is fresh: no per-gateway read.
            desired = Desired(config.ref.gateway, known.fingerprint, known.expires_at)
            return (_TokenSource(desired, lambda: self._load(config, deadline),
                                 stored_at=self._stored_at(config, desired.fingerprint, deadline)),
                    False, known.key_type or KeyType.PRIMARY, None)

        try:
            current = self.store.get(secret, timeout=deadline.check("reading Key Vault"))
            if current is not None:
                _check_gateway(config, current.token)
        except UnusableSecret:
            if not force:
                raise  # the routine path reports it; a forced rotation overwrites it
            current = None
        # A pending roll is carried forward by every write: the roll only ever ends by regenerating.
        rolling = roll_from or (current.roll_from if current is not None else None)
        why = renewal_reason(current, now, self.renew_before, force)
        chosen = rolling.other if rolling is not None else key_type or key_type_for(config.key_type, current)
        if current is not None and current.key_type is not chosen and (key_type is not None or rolling):
            why = why or f"key roll to {chosen.value}"
        if rolling is not None and current is not None and current.roll_from is not rolling:
            why = why or f"key roll from {rolling.value} starts"
        if why is None and current is not None:
            token = current.token
            return (_TokenSource(_desired(token), lambda: token, token,
                                 stored_at=self._stored_at(config, token.fingerprint, deadline)),
                    False, current.key_type, rolling)
        if dry_run:
            return None, False, chosen, rolling
        if current is None and self.adopt_existing and not force and key_type is None and rolling is None:
            # Onboarding: Key Vault's first version is the newest valid token the targets already run.
            from rotation.adoption import adopt

            def check(what: str) -> float:  # adoption writes Key Vault: only while this holds the lease
                guard()
                return deadline.check(what)

            adopted = adopt(self, config, now, check)
            if adopted is not None:
                held = adopted.token
                return (_TokenSource(_desired(held), lambda: held, held, stored_at=lambda: now),
                        False, adopted.key_type, None)

        expiry = new_expiry(now, self.token_lifetime)
        value = self.issuer.generate_token(config.ref, chosen, expiry, timeout=deadline.check("generateToken"))
        try:
            token = GatewayToken.parse(value)
        except InvalidToken as exc:
            raise UpstreamError(f"ARM generateToken for {config.ref} returned an unusable token: {exc}") from None
        if token.gateway.lower() != config.ref.gateway.lower():
            raise UpstreamError(f"ARM generateToken for {config.ref} returned a token for another gateway")
        record = TokenRecord(token=token, key_type=chosen, gateway_id=config.ref.id, roll_from=rolling)
        # Key Vault before any cluster: a target never holds a token Key Vault does not. Still the
        # gateway's writer? (ARM may have taken long, or this process was paused past its lease.)
        guard()
        self.store.put(secret, record, timeout=deadline.check("writing Key Vault"))
        emit("rotation.token", {"gatewayId": config.ref.id, "fingerprint": token.fingerprint,
                                "expiresAt": token.expires_at.isoformat(), "keyType": chosen.value,
                                "keyRollFrom": rolling.value if rolling else None, "why": why})
        stored = now
        return _TokenSource(_desired(token), lambda: token, token, stored_at=lambda: stored), True, chosen, rolling

    def _stored_at(self, config: GatewayConfig, fingerprint: str,
                   deadline: _Deadline) -> Callable[[], datetime | None]:
        """When Key Vault first stored the token, looked up only if a heal needs it (one listing)."""
        lock = threading.Lock()
        box: list[datetime | None] = []

        def load() -> datetime | None:
            with lock:
                if not box:
                    versions = self.store.versions(config.key_vault_secret,
                                                   timeout=deadline.check("listing Key Vault versions"))
                    box.append(token_stored_at(versions, fingerprint))
                return box[0]

        return load

    def _load(self, config: GatewayConfig, deadline: _Deadline) -> GatewayToken:
        record = self.store.get(config.key_vault_secret, timeout=deadline.check("reading Key Vault"))
        if record is None:
            raise NotFound(f"Key Vault secret {config.key_vault_secret} disappeared")
        _check_gateway(config, record.token)
        return record.token

    def _promote(self, config: GatewayConfig, held: Sequence[GatewayToken],
                 deadline: _Deadline, guard: Guard = _unguarded) -> _TokenSource | None:
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
            guard()
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
                 doomed: frozenset[str] = frozenset(), heal: Heal | None = None,
                 guard: Guard = _unguarded) -> tuple[TargetReport, ...]:
        """`held` collects the tokens of targets found `newer` than `source`; a target holding a
        `doomed` token is overwritten even if that token expires later."""
        targets = config.targets
        started = time.monotonic()
        pool = Executor(max_workers=min(len(targets), MAX_FANOUT), thread_name_prefix="target")
        try:
            futures: list[Future[TargetReport]] = [
                pool.submit(self._sync_target, config, t, source, deadline, plan_only, held, doomed, heal, guard)
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
                     doomed: frozenset[str], heal: Heal | None = None, guard: Guard = _unguarded) -> TargetReport:
        started = time.monotonic()

        def done(outcome: Outcome, restarted: Sequence[str] = (), error: str | None = None) -> TargetReport:
            return TargetReport(target.cluster, target.namespace, target.secret, outcome, tuple(restarted),
                                error, int((time.monotonic() - started) * 1000))

        try:
            client = self.clusters.client(self.registry.clusters[target.cluster])
            for attempt in (1, 2):
                state = client.read_secret(target.namespace, target.secret, target.key,
                                           timeout=deadline.check("reading the Secret"))
                marker = state.annotations.get(RESTART_PENDING)
                if source is None:
                    return done(Outcome.PLANNED, [str(w) for w in target.restart])
                action = target_action(state.value, source.desired, target.format, doomed)
                if action is TargetAction.FOREIGN:
                    other = parse_stored(state.value)
                    return done(Outcome.FAILED, error=(
                        f"key {target.key!r} holds a token of gateway {other.gateway if other else '?'!r}, not "
                        f"{config.ref.gateway!r}: the registry names the wrong Secret or key (nothing written; fix "
                        "the registry, or empty the key if this Secret really belongs to this gateway)"))
                if action is TargetAction.NEWER:
                    newer = parse_stored(state.value)
                    if newer is not None:
                        held[target] = newer
                    return done(Outcome.NEWER)
                if action is TargetAction.IN_SYNC and not (marker and target.restart):
                    if heal is not None and not plan_only:
                        return self._heal(config, client, target, source, heal, deadline, done, guard)
                    return done(Outcome.IN_SYNC)
                if plan_only:
                    return done(Outcome.PLANNED, [str(w) for w in target.restart])
                if action is TargetAction.WRITE:
                    value = source.token().formatted(target.format)
                    marker = source.desired.fingerprint if target.restart else None
                    guard()
                    try:
                        version = client.write_secret_key(
                            target.namespace, target.secret, target.key, value, state.resource_version,
                            timeout=deadline.check("writing the Secret"),
                            annotations={RESTART_PENDING: marker} if marker else None)
                    except Conflict:
                        if attempt == 2:
                            raise
                        continue  # someone else wrote meanwhile: re-read and decide again
                else:
                    version = state.resource_version  # restarting for a marker found as read
                restarted = self._restart(client, target, deadline, marker, guard, version)
                return done(Outcome.UPDATED if action is TargetAction.WRITE else Outcome.IN_SYNC, restarted)
            raise Conflict("unreachable")  # pragma: no cover - the loop always returns or raises
        except RotationError as exc:
            return done(Outcome.TIMEOUT if deadline.left() <= 0 else Outcome.FAILED, error=str(exc))
        except Exception as exc:  # a bug must not take the other targets down with it
            log.exception("unexpected error syncing %s", target)
            return done(Outcome.FAILED, error=f"internal error: {type(exc).__name__}")

    def _heal(self, config: GatewayConfig, client: ClusterClient, target: Target, source: _TokenSource, heal: Heal,
              deadline: _Deadline, done: Callable[..., TargetReport], guard: Guard = _unguarded) -> TargetReport:
        """The Secret holds the current token but pods may still run an older one from their
        environment: restart the workloads that last restarted before the token was stored."""
        who = f"gateway instance {heal.instance}" if heal.instance else "a gateway instance"
        if not target.restart:
            if not heal.unrestartable_fails:
                return done(Outcome.IN_SYNC)
            return done(Outcome.FAILED, error=(
                f"{who} still runs an older token than this Secret's, and the target has no `restart` list: "
                f"restart the gateway's pods in namespace {target.namespace} (kubectl rollout restart), "
                "or add its workloads to the target's `restart` list in the registry"))
        stored_at = source.stored_at()
        now = self.clock()
        restarted: list[str] = []
        waiting: list[str] = []
        for workload in target.restart:
            state = client.rollout(target.namespace, workload, timeout=deadline.check(f"reading {workload}"))
            action = heal_action(state.restarted_at, stored_at, now, heal.cooldown)
            if action is HealAction.RESTART:
                guard()  # the rate limit reads restartedAt: only the gateway's writer may act on it
                client.restart(target.namespace, workload, now, timeout=deadline.check(f"restarting {workload}"))
                restarted.append(str(workload))
            elif action is HealAction.COOLDOWN:
                waiting.append(f"{workload} was restarted at {state.restarted_at:%H:%M:%S} UTC, before the token "
                               f"was stored; not restarted again within {heal.cooldown} (retry later)")
        if restarted:
            emit("rotation.heal", {"gatewayId": config.ref.id, "instance": heal.instance,
                                   "target": str(target), "restarted": restarted})
        if waiting:
            return done(Outcome.FAILED, restarted, f"{who} runs an older token: " + "; ".join(waiting))
        return done(Outcome.IN_SYNC, restarted)

    def _restart(self, client: ClusterClient, target: Target, deadline: _Deadline, marker: str | None,
                 guard: Guard = _unguarded, version: str | None = None) -> list[str]:
        if not target.restart:
            return []
        at = self.clock()
        restarted = []
        for workload in target.restart:
            guard()
            client.restart(target.namespace, workload, at, timeout=deadline.check(f"restarting {workload}"))
            restarted.append(str(workload))
        if marker:
            self._clear_marker(client, target, marker, deadline, version)
        return restarted

    def _clear_marker(self, client: ClusterClient, target: Target, marker: str, deadline: _Deadline,
                      version: str | None = None) -> None:
        """Removes the restart-pending marker only if it is still the one this writer set or saw (a
        later writer's marker names its own token, whose restart it owes), with a resourceVersion
        precondition so a write landing in between is never unmarked.

        `version` is the Secret's resourceVersion when this writer set or saw `marker` (the write's
        answer): if the Secret is still at it, the marker is this writer's, so no read is needed."""
        if version:
            try:
                client.annotate_secret(target.namespace, target.secret, {RESTART_PENDING: None},
                                       timeout=deadline.check("clearing the restart marker"),
                                       resource_version=version)
                return
            except Conflict:
                pass  # written since: read whose marker it is now
        for attempt in (1, 2):
            state = client.read_secret(target.namespace, target.secret, target.key,
                                       timeout=deadline.check("reading the Secret"))
            if state.annotations.get(RESTART_PENDING) != marker:
                return
            try:
                client.annotate_secret(target.namespace, target.secret, {RESTART_PENDING: None},
                                       timeout=deadline.check("clearing the restart marker"),
                                       resource_version=state.resource_version)
                return
            except Conflict:
                if attempt == 2:
                    raise

    # --- two-phase key roll (rotation.keyroll) ----------------------------------------------------

    def roll_keys(self, config: GatewayConfig, *, from_key: KeyType, deadline_seconds: float,
                  rollout_wait_seconds: float = 60.0, dry_run: bool = False, poll_seconds: float = 1.0,
                  confirm_restarted: bool = False) -> KeyRollReport:
        """See `rotation.keyroll.KeyRoll`."""
        from rotation.keyroll import KeyRoll

        return KeyRoll(self).run(config, from_key=from_key, deadline_seconds=deadline_seconds,
                                 rollout_wait_seconds=rollout_wait_seconds, dry_run=dry_run,
                                 poll_seconds=poll_seconds, confirm_restarted=confirm_restarted)

    # --- sweep and status -------------------------------------------------------------------------

    def sweep(self, *, deadline_seconds: float, dry_run: bool = False,
              progress: Callable[[RotationReport], None] | None = None,
              budget_seconds: float | None = None) -> SweepReport:
        """Reconcile every registered gateway; one Key Vault listing decides which need a token read.

        Within an overall budget (the timer's functionTimeout): a gateway not started while a whole
        reconcile still fits is reported as not reached and left for the next run.
        """
        started = time.monotonic()
        budget = _Deadline(self.sweep_budget_seconds if budget_seconds is None else budget_seconds)
        infos = self._listing(min(deadline_seconds, budget.left()) or 0.001)
        now = self.clock()
        for config in self.registry.gateways:
            info = infos.get(config.key_vault_secret.lower())
            if info is not None and info.expires_at is not None:
                emit("rotation.expiry", {"gatewayId": config.ref.id, "expiresAt": info.expires_at.isoformat(),
                                         "hoursLeft": round((info.expires_at - now).total_seconds() / 3600, 1)})

        def one(config: GatewayConfig) -> RotationReport:
            if budget.left() < deadline_seconds:
                report = RotationReport(
                    gateway_id=config.ref.id, rotated=False, expires_at=None, key_type=None, fingerprint=None,
                    reason="sweep", duration_ms=0, targets=(), dry_run=dry_run,
                    error="not reached within the sweep's budget; left for the next run")
                self._record(config, report, "NotReached", deadline=budget)
                return report
            return self.reconcile_safely(config, reason="sweep", deadline_seconds=deadline_seconds,
                                         dry_run=dry_run, known=infos.get(config.key_vault_secret.lower()))

        reports: list[RotationReport] = []
        with Executor(max_workers=self.sweep_concurrency, thread_name_prefix="sweep") as pool:
            futures = [pool.submit(one, config) for config in self.registry.gateways]
            for future in as_completed(futures):
                report = future.result()
                reports.append(report)
                if progress is not None:
                    progress(report)
        order = {c.ref.id: i for i, c in enumerate(self.registry.gateways)}
        reports.sort(key=lambda r: order.get(r.gateway_id, 0))
        return SweepReport(tuple(reports), int((time.monotonic() - started) * 1000))

    def reconcile_safely(self, config: GatewayConfig, **kwargs: Any) -> RotationReport:
        """reconcile(), with a failure before the targets (or a bug) turned into a report, not raised."""
        started = time.monotonic()
        try:
            return self.reconcile(config, **kwargs)
        except RotationError as exc:  # reconcile() recorded the outcome
            failure: Exception = exc
        except Exception as exc:  # a bug in one gateway must not lose the other gateways' reports
            log.exception("unexpected error reconciling %s", config.ref)
            failure = exc
        return _failed(config, str(kwargs.get("reason", "")), bool(kwargs.get("dry_run", False)), started, failure)

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
            futures = [pool.submit(self._target_status, t, infos.get(c.key_vault_secret.lower()), deadline,
                                   c.ref.gateway)
                       for c, t in jobs]
            results = iter([f.result() for f in futures])
        out = []
        now = self.clock()
        for config in configs:
            info = infos.get(config.key_vault_secret.lower())
            error = None if info else "no token in Key Vault"
            if info is not None and info.expires_at is not None and info.expires_at <= now:
                error = (f"Key Vault's token expired at {info.expires_at:%Y-%m-%d %H:%M} UTC: no target's copy "
                         "verifies; run rotate")
            out.append(GatewayStatus(
                gateway_id=config.ref.id, service=config.ref.service, gateway=config.ref.gateway,
                key_vault_secret=config.key_vault_secret,
                expires_at=info.expires_at if info else None, key_type=info.key_type if info else None,
                fingerprint=info.fingerprint if info else None,
                targets=tuple(next(results) for _ in config.targets),
                key_roll_pending=info.roll_from if info else None,
                error=error,
                warning=None if self.lease_shared else LOCAL_LEASE_WARNING,
                origin=info.origin if info else None,
            ))
        return out

    def _target_status(self, target: Target, info: TokenInfo | None, deadline: _Deadline,
                       gateway: str | None = None) -> TargetStatus:
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
        state = sync_state(secret.value, info.fingerprint if info else None, target.format)
        consumption = check_consumption(target, {r.workload: r.uses for r in rollouts}, secret.labels)
        if consumption.state is ConsumptionState.MISMATCH:  # rotating cannot help: the pods read another key
            state = SyncState.MISMATCH
        foreign = foreign_token(secret.value, gateway) if gateway else None
        if foreign is not None:  # another gateway's token: the registry, not the token, is wrong
            state = SyncState.MISMATCH
        # The marker is only ever cleared for a target with workloads to restart (see _sync_target).
        pending = secret.annotations.get(RESTART_PENDING) if target.restart else None
        return status(state, fingerprint=held.fingerprint if held else None,
                      expires_at=held.expires_at if held else None, rollouts=rollouts, consumption=consumption,
                      restart_pending=pending, error=foreign)

    # --- reporting --------------------------------------------------------------------------------

    def _record(self, config: GatewayConfig, report: RotationReport, failure: str | None = None, *,
                deadline: _Deadline | None = None) -> None:
        base = {"gatewayId": report.gateway_id, "service": config.ref.service, "gateway": config.ref.gateway,
                "rotated": report.rotated, "fingerprint": report.fingerprint, "keyType":
                report.key_type.value if report.key_type else None,
                "expiresAt": report.expires_at.isoformat() if report.expires_at else None,
                "reason": report.reason, "dryRun": report.dry_run, "instance": report.instance}
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


def _check_gateway(config: GatewayConfig, token: GatewayToken) -> None:
    """Key Vault's value is input too: a token of another gateway (pasted into the wrong secret) is never
    pushed to this gateway's targets; a forced rotation overwrites it."""
    if token.gateway.lower() != config.ref.gateway.lower():
        raise UnusableSecret(f"Key Vault secret {config.key_vault_secret!r} holds a token of another gateway "
                             f"(fingerprint {token.fingerprint}), not of {config.ref.gateway} "
                             "(rotate with force to overwrite it)")


def _failed(config: GatewayConfig, reason: str, dry_run: bool, started: float, exc: Exception) -> RotationReport:
    message = str(exc) if isinstance(exc, RotationError) else f"internal error: {type(exc).__name__}"
    return RotationReport(
        gateway_id=config.ref.id, rotated=False, expires_at=None, key_type=None, fingerprint=None, reason=reason,
        duration_ms=int((time.monotonic() - started) * 1000), targets=(), dry_run=dry_run, error=message,
    )


def _desired(token: GatewayToken) -> Desired:
    return Desired(token.gateway, token.fingerprint, token.expires_at)

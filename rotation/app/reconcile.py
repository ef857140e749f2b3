"""One reconcile of one gateway: gather → plan → act → promote, under the gateway's lease.

Gather and plan are `rotation.app.renewal` (Key Vault, then `rotation.core.renewal`); act writes Key
Vault first, then syncs every target in parallel (`rotation.app.targets`), each returning its result;
promote makes a later-expiring version the targets kept Key Vault's latest and brings the rest to it.
Every outcome is recorded exactly once, a failure before the targets (ARM 403, Key Vault 5xx, a lease
not free in time) included: that is what the failed-rotation alert counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace

from rotation.app import fanout
from rotation.app.context import Deps, Fence, Guard, Scope, deadline, unguarded
from rotation.app.evidence import EvidenceLoader
from rotation.app.holding import exclusive
from rotation.app.promotion import doomed, promote
from rotation.app.records import failed, record
from rotation.app.renewal import Renewal, renew
from rotation.app.targets import Synced, TargetPlan, restart_workloads, sync_secret, write_owed
from rotation.core.deadline import Deadline
from rotation.core.errors import RotationError
from rotation.core.model import GatewayConfig, KeyType, Outcome, RotationReport, TargetReport, TokenInfo
from rotation.core.ports import Lease
from rotation.core.restarts import Heal, heal_needed
from rotation.telemetry import error_class

log = logging.getLogger("rotation")
_EMPTY = TargetReport("", "", "", Outcome.PLANNED)


@dataclass(frozen=True, slots=True)
class Request:
    """What a caller asks of one reconcile. `known`: the sweep's listing entry for the gateway;
    `key_type`/`roll_from`: a key roll's own reconcile (sign with this key, carry this roll)."""

    reason: str
    force: bool = False
    dry_run: bool = False
    known: TokenInfo | None = None
    heal: Heal | None = None
    key_type: KeyType | None = None
    roll_from: KeyType | None = None


@dataclass(frozen=True, slots=True)
class Reconcile:
    """One reconcile's explicit state. With `lease` it takes the gateway's lease itself; without, the
    caller holds it (the key roll) and `guard` is that lease's check, called before every write."""

    deps: Deps
    config: GatewayConfig
    request: Request
    deadline: Deadline
    started: float
    lease: Lease | None = None
    guard: Guard = unguarded
    fence: Fence | None = None

    @classmethod
    def taking(cls, lease: Lease, deps: Deps, config: GatewayConfig, request: Request,
               deadline_seconds: float) -> Reconcile:
        return cls(deps, config, request, deadline(deadline_seconds), time.monotonic(), lease)

    def run(self) -> RotationReport:
        """Raises a RotationError when the lease, Key Vault or ARM fail (nothing reached a cluster);
        target failures are reported per target instead."""
        request = self.request
        with self._recorded(), self._writer() as (guard, fence):
            scope = Scope(self.config, self.deadline, guard, fence)
            renewal = renew(self.deps, scope, known=request.known, force=request.force, dry_run=request.dry_run,
                            key_type=request.key_type, roll_from=request.roll_from)
            plan: TargetPlan | None = self._plan(scope, renewal)
            heal = plan.heal if plan else None  # the event's heal, unless its instance already runs the token
            source, rotated = renewal.source, renewal.rotated
            synced: tuple[Synced, ...] = ()
            if plan is not None:
                # Look first (the happy path writes at once), so a promotion is decided before any
                # read target is written: each target is written and restarted once.
                look = replace(plan, look_only=not plan.plan_only)
                synced = self._pass(scope, look, (), cutoff=self._look_deadline(plan))
                promoted = self._after_promotion(scope, renewal, synced, plan.evidence)
                if promoted is not None:
                    source, rotated = promoted.source, True
                    synced = self._pass(scope, promoted, synced)
                elif any(s.owed for s in synced):
                    synced = self._pass(scope, plan, synced, owed_only=True)
            if not request.dry_run and source is not None:
                synced = self._restarts(scope, synced, heal)
            report = RotationReport(
                gateway_id=self.config.ref.id, rotated=rotated,
                expires_at=source.desired.expires_at if source else None, key_type=renewal.key_type,
                fingerprint=source.desired.fingerprint if source else None, reason=request.reason,
                duration_ms=int((time.monotonic() - self.started) * 1000),
                targets=tuple(s.report for s in synced), dry_run=request.dry_run,
                instance=heal.instance if heal else None)
            record(self.deps.publisher, self.config, report, deadline=self.deadline)
            return report

    def _look_deadline(self, plan: TargetPlan) -> Deadline | None:
        """When the look stops waiting for the targets that have not answered, if one that did owes a
        write: half the time left, so one slow or hung cluster is reported `timeout` while the targets
        that answered still get their writes and restarts (a target that has not answered cannot be
        promoted from anyway). None: wait up to the deadline."""
        if plan.plan_only:
            return None
        clock = self.deadline.clock
        return Deadline(min(self.deadline.end, clock() + self.deadline.left() / 2), clock)

    def _pass(self, scope: Scope, plan: TargetPlan, before: tuple[Synced, ...], *,
              owed_only: bool = False, cutoff: Deadline | None = None) -> tuple[Synced, ...]:
        """Phase 1 for every target in parallel (`owed_only`: only the writes a look-only pass owes); a
        second pass keeps the first pass's `written`, so each target's workloads restart once, for the
        token it ends with. `cutoff`: see `_look_deadline`."""
        targets = self.config.targets
        started = time.monotonic()
        with fanout.pool(len(targets)) as pool:
            futures: list[Future[Synced]] = [
                pool.submit(write_owed, self.deps, scope, t, plan, b) if owed_only
                else pool.submit(sync_secret, self.deps, scope, t, plan)
                for t, b in zip(targets, before or [Synced(_EMPTY)] * len(targets), strict=True)]
            until = self.deadline
            if cutoff is not None:
                wait(futures, timeout=cutoff.left())
                if any(f.done() and not f.cancelled() and f.exception() is None and f.result().owed
                       for f in futures):
                    until = cutoff
            synced = fanout.collect(targets, futures, until, started)
        if not before:
            return synced
        return tuple(s if not b.written or s.written else replace(s, written=True) for s, b in zip(synced, before,
                                                                                                   strict=True))

    def _restarts(self, scope: Scope, synced: tuple[Synced, ...], heal: Heal | None) -> tuple[Synced, ...]:
        """Phase 2 for every target in parallel: workloads restarted for the token their Secret holds."""
        targets = self.config.targets
        started = time.monotonic()
        with fanout.pool(len(targets)) as pool:
            futures: list[Future[Synced]] = [pool.submit(restart_workloads, self.deps, scope, t, s, heal)
                                             for t, s in zip(targets, synced, strict=True)]
            done = fanout.collect(targets, futures, self.deadline, started)
        # A target whose restart did not answer in time keeps its Secret's outcome, marked timeout.
        return tuple(d if d.report.outcome is not Outcome.TIMEOUT or s.report.outcome is Outcome.TIMEOUT
                     else replace(s, report=replace(s.report, outcome=Outcome.TIMEOUT, error=d.report.error))
                     for s, d in zip(synced, done, strict=True))

    def _plan(self, scope: Scope, renewal: Renewal) -> TargetPlan:
        source = renewal.source
        rolling = renewal.roll_from
        evidence = EvidenceLoader(self.deps, scope, source.desired.fingerprint if source else None)
        return TargetPlan(
            source, self.request.dry_run or source is None, evidence,
            doomed(self.deps, scope, rolling) if rolling is not None and source else frozenset(),
            heal_needed(self.request.heal, source.desired.expires_at if source else None),
            renewal.previous, self.deps.clock(), retiring=rolling if source else None)

    def _after_promotion(self, scope: Scope, renewal: Renewal, synced: tuple[Synced, ...],
                         evidence: EvidenceLoader | None) -> TargetPlan | None:
        """The second pass, if a target kept a later-expiring verified token of the gateway that is now
        Key Vault's latest (during a key roll only one signed by the key rolled to). `evidence` is the
        first pass's: the proofs that made a token `newer` (ARM reproducing it) must also let it be
        promoted."""
        newer = tuple(s.newer for s in synced if s.newer is not None)
        if not newer or self.request.dry_run or renewal.source is None:
            return None
        if evidence is None:
            evidence = EvidenceLoader(self.deps, scope, renewal.source.desired.fingerprint)
        promoted = promote(self.deps, scope, newer, evidence, renewal)
        if promoted is None:
            return None
        return TargetPlan(promoted, False, EvidenceLoader(self.deps, scope, promoted.desired.fingerprint),
                          now=self.deps.clock())

    @contextmanager
    def _writer(self) -> Iterator[tuple[Guard, Fence | None]]:
        if self.lease is None:
            yield self.guard, self.fence
            return
        with exclusive(self.lease, self.config, self.deadline) as holding:
            yield holding.check, holding

    @contextmanager
    def _recorded(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            request = self.request
            record(self.deps.publisher, self.config,
                   failed(self.config, request.reason, request.dry_run, self.started, exc), error_class(exc),
                   deadline=self.deadline)
            raise


def reconcile_safely(deps: Deps, lease: Lease, config: GatewayConfig, request: Request,
                     deadline_seconds: float) -> RotationReport:
    """A reconcile with a failure before the targets (or a bug) turned into a report, not raised."""
    started = time.monotonic()
    try:
        return Reconcile.taking(lease, deps, config, request, deadline_seconds).run()
    except RotationError as exc:  # the reconcile recorded the outcome
        failure: Exception = exc
    except Exception as exc:  # a bug in one gateway must not lose the other gateways' reports
        log.exception("unexpected error reconciling %s", config.ref)
        failure = exc
    return failed(config, request.reason, request.dry_run, started, failure)

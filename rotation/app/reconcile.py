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
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass

from rotation.app import fanout
from rotation.app.context import Deps, Guard, Scope, deadline, unguarded
from rotation.app.holding import exclusive
from rotation.app.promotion import doomed, promote
from rotation.app.records import failed, record
from rotation.app.renewal import Renewal, renew
from rotation.app.targets import Synced, TargetPlan, sync_target
from rotation.core.deadline import Deadline
from rotation.core.errors import RotationError
from rotation.core.model import GatewayConfig, KeyType, RotationReport, TokenInfo
from rotation.core.ports import Lease
from rotation.core.restarts import Heal, heal_needed
from rotation.telemetry import error_class

log = logging.getLogger("rotation")


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

    @classmethod
    def taking(cls, lease: Lease, deps: Deps, config: GatewayConfig, request: Request,
               deadline_seconds: float) -> Reconcile:
        return cls(deps, config, request, deadline(deadline_seconds), time.monotonic(), lease)

    def run(self) -> RotationReport:
        """Raises a RotationError when the lease, Key Vault or ARM fail (nothing reached a cluster);
        target failures are reported per target instead."""
        request, targets = self.request, self.config.targets
        with self._recorded(), self._writer() as guard:
            scope = Scope(self.config, self.deadline, guard)
            renewal = renew(self.deps, scope, known=request.known, force=request.force, dry_run=request.dry_run,
                            key_type=request.key_type, roll_from=request.roll_from)
            plan: TargetPlan | None = self._plan(scope, renewal)
            heal = plan.heal if plan else None  # the event's heal, unless its instance already runs the token
            source, rotated, first = renewal.source, renewal.rotated, True
            synced: tuple[Synced, ...] = ()
            while plan is not None:  # at most twice: the second pass follows a promotion
                started = time.monotonic()
                with fanout.pool(len(targets)) as pool:
                    futures: list[Future[Synced]] = []
                    for target in targets:
                        futures.append(pool.submit(sync_target, self.deps, scope, target, plan))
                    synced = fanout.collect(targets, futures, self.deadline, started)
                plan = self._after_promotion(scope, renewal, synced) if first else None
                if plan is not None:
                    source, rotated = plan.source, True
                first = False
            report = RotationReport(
                gateway_id=self.config.ref.id, rotated=rotated,
                expires_at=source.desired.expires_at if source else None, key_type=renewal.key_type,
                fingerprint=source.desired.fingerprint if source else None, reason=request.reason,
                duration_ms=int((time.monotonic() - self.started) * 1000),
                targets=tuple(s.report for s in synced), dry_run=request.dry_run,
                instance=heal.instance if heal else None)
            record(self.deps.publisher, self.config, report, deadline=self.deadline)
            return report

    def _plan(self, scope: Scope, renewal: Renewal) -> TargetPlan:
        source = renewal.source
        rolling = renewal.roll_from
        return TargetPlan(
            source, self.request.dry_run or source is None,
            doomed(self.deps, scope, rolling) if rolling is not None and source else frozenset(),
            heal_needed(self.request.heal, source.desired.expires_at if source else None))

    def _after_promotion(self, scope: Scope, renewal: Renewal, synced: tuple[Synced, ...]) -> TargetPlan | None:
        """The second pass, if a target kept a later-expiring version that is now Key Vault's latest
        again. During a key roll the roll decides alone what targets hold, so nothing is promoted."""
        newer = tuple(s.newer for s in synced if s.newer is not None)
        if not newer or self.request.dry_run or renewal.roll_from is not None:
            return None
        promoted = promote(self.deps, scope, newer)
        return TargetPlan(promoted, False) if promoted is not None else None

    @contextmanager
    def _writer(self) -> Iterator[Guard]:
        if self.lease is None:
            yield self.guard
            return
        with exclusive(self.lease, self.config, self.deadline) as holding:
            yield holding.check

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

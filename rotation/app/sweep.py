"""Every registered gateway reconciled, with one Key Vault listing deciding which need a token read."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass

from rotation.app.context import Deps, deadline
from rotation.app.reconcile import Request, reconcile_safely
from rotation.app.records import record
from rotation.core.model import GatewayConfig, RotationReport, TokenInfo
from rotation.core.ports import Lease
from rotation.core.status import SweepReport
from rotation.telemetry import Executor, emit

# The timer's functionTimeout is 5 minutes (host.json): a sweep starts no gateway after this budget.
SWEEP_BUDGET_SECONDS = 240.0


def listing(deps: Deps, timeout: float) -> dict[str, TokenInfo]:
    """Key Vault's tokens by lower-cased secret name (one call for every gateway)."""
    return {i.secret_name.lower(): i for i in deps.store.list(timeout=timeout)}


@dataclass(frozen=True, slots=True)
class Sweep:
    deps: Deps
    lease: Lease
    concurrency: int = 8

    def run(self, *, deadline_seconds: float, budget_seconds: float, dry_run: bool = False,
            progress: Callable[[RotationReport], None] | None = None) -> SweepReport:
        """Within an overall budget (the timer's functionTimeout): a gateway not started while a whole
        reconcile still fits is reported as not reached and left for the next run."""
        started = time.monotonic()
        budget = deadline(budget_seconds)
        gateways = self.deps.registry.gateways
        infos = listing(self.deps, min(deadline_seconds, budget.left()) or 0.001)
        self._expiries(infos)

        def one(config: GatewayConfig) -> RotationReport:
            if budget.left() < deadline_seconds:
                report = RotationReport(
                    gateway_id=config.ref.id, rotated=False, expires_at=None, key_type=None, fingerprint=None,
                    reason="sweep", duration_ms=0, targets=(), dry_run=dry_run,
                    error="not reached within the sweep's budget; left for the next run")
                record(self.deps.publisher, config, report, "NotReached", deadline=budget)
                return report
            request = Request("sweep", dry_run=dry_run, known=infos.get(config.key_vault_secret.lower()))
            return reconcile_safely(self.deps, self.lease, config, request, deadline_seconds)

        reports: list[RotationReport] = []
        with Executor(max_workers=self.concurrency, thread_name_prefix="sweep") as pool:
            futures = [pool.submit(one, config) for config in gateways]
            for future in as_completed(futures):
                report = future.result()
                reports.append(report)
                if progress is not None:
                    progress(report)
        order = {c.ref.id: i for i, c in enumerate(gateways)}
        reports.sort(key=lambda r: order.get(r.gateway_id, 0))
        return SweepReport(tuple(reports), int((time.monotonic() - started) * 1000))

    def _expiries(self, infos: dict[str, TokenInfo]) -> None:
        """One `rotation.expiry` record per gateway: what the expiry alert and workbook chart."""
        now = self.deps.clock()
        for config in self.deps.registry.gateways:
            info = infos.get(config.key_vault_secret.lower())
            if info is not None and info.expires_at is not None:
                emit("rotation.expiry", {"gatewayId": config.ref.id, "expiresAt": info.expires_at.isoformat(),
                                         "hoursLeft": round((info.expires_at - now).total_seconds() / 3600, 1)})

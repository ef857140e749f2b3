"""The records of a reconcile (`rotation.target` per target, `rotation.reconcile` once) and its
published outcome: what the failed-rotation alert and the outcome topic's subscribers count."""

from __future__ import annotations

import logging
import time

from rotation.core.deadline import Deadline
from rotation.core.errors import RotationError
from rotation.core.model import GatewayConfig, RotationReport
from rotation.core.ports import OutcomePublisher
from rotation.telemetry import emit


def record(publisher: OutcomePublisher | None, config: GatewayConfig, report: RotationReport,
           failure: str | None = None, *, deadline: Deadline | None = None) -> None:
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
    if publisher is not None and not report.dry_run and (report.rotated or not report.ok):
        # Inside the caller's deadline: the event handler must answer Event Grid in time.
        publisher.publish(report, timeout=deadline.left() if deadline else None)


def failed(config: GatewayConfig, reason: str, dry_run: bool, started: float, exc: Exception) -> RotationReport:
    """The report of a reconcile that failed before its targets (or on a bug): never the raw text of
    an unexpected exception, which may quote anything."""
    message = str(exc) if isinstance(exc, RotationError) else f"internal error: {type(exc).__name__}"
    return RotationReport(
        gateway_id=config.ref.id, rotated=False, expires_at=None, key_type=None, fingerprint=None, reason=reason,
        duration_ms=int((time.monotonic() - started) * 1000), targets=(), dry_run=dry_run, error=message,
    )

"""What the Azure Portal sees: structured records, attributed to their invocation, and metrics.

Three things break Portal monitoring of a threaded Functions app, and this module answers each:

* Attribution: `rotation.runtime.attribution` (re-exported here: `invocation`, `Executor`,
  `attributed`), a lower layer the adapters use too; this module imports nothing else of `rotation`.
* Structure. Fields travel as LogRecord attributes (`extra`): the OpenTelemetry logging handler
  that azure-monitor-opentelemetry installs turns them into customDimensions. The message stays
  readable `event key=value ...` text, which is all the classic (non-OpenTelemetry) path forwards.
* Metrics. With OpenTelemetry loaded (the worker configures the distro when
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true), `emit` also records counters and the token's
  hours left, which Application Insights stores as custom metrics for metric alerts.

Nothing here imports OpenTelemetry unless the worker already did: cold start stays cheap.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rotation.runtime.attribution import (
    Executor,
    InvocationContext,
    attributed,
    current_invocation_id,
    invocation,
)

__all__ = ["Executor", "InvocationContext", "attributed", "current_invocation_id", "emit", "error_class",
           "fields_of", "hours_left", "invocation"]

from rotation.boundary import shown
from rotation.core.printable import printable

log = logging.getLogger("rotation")

# Metric names as Application Insights stores them (customMetrics.name; the alert's metricName).
RECONCILES = "rotation_reconciles"
TARGETS = "rotation_targets"
HOURS_LEFT = "rotation_token_hours_left"
SWEEPS = "rotation_sweeps"

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


# --- structured records ----------------------------------------------------------------------------


# Fields whose values are the registry's validated names, enumerations, fingerprints and times: no
# secret fits their shapes, so only non-printables are escaped (scrubbing every field of every record
# would cost a fan-out more than its Kubernetes calls). Every other field goes through the boundary.
_STRUCTURAL = frozenset({"gatewayId", "service", "gateway", "cluster", "namespace", "secret", "keyType", "from",
                         "to", "outcome", "fingerprint", "expiresAt", "errorClass", "restarted", "schedule"})


def _dimension(key: str, value: object) -> str | bool | int | float | None:
    """A value OpenTelemetry accepts as an attribute (and Application Insights as a dimension). Text
    is the boundary's: known secrets and secret-shaped text cut out, non-printables escaped."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    text = ",".join(str(v) for v in value) if isinstance(value, list | tuple | set | frozenset) else str(value)
    return printable(text) if key in _STRUCTURAL else shown(text)


def _text(value: object) -> str:
    text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    if text and text.isprintable() and not any(c in text for c in ' "=\n'):
        return text
    return json.dumps(text)


def emit(event: str, fields: Mapping[str, object], level: int = logging.INFO) -> None:
    """One structured record: fields as attributes (customDimensions), `event k=v ...` as the message."""
    dimensions = {k: v for k, v in ((k, _dimension(k, v)) for k, v in fields.items())
                  if v is not None and k not in _STANDARD}
    dimensions["event"] = event
    message = " ".join([event, *(f"{k}={_text(v)}" for k, v in dimensions.items() if k != "event")])
    log.log(level, "%s", message, extra=dimensions)
    _metrics(event, dimensions)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record `emit` wrote (what becomes customDimensions); {} otherwise."""
    if not str(getattr(record, "event", "")).startswith("rotation."):
        return {}
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


# --- metrics ---------------------------------------------------------------------------------------


class _Instruments:
    def __init__(self) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter("apim-token-rotator")
        self.reconciles = meter.create_counter(
            RECONCILES, unit="1", description="Reconciles by outcome (ok, failed) and error class")
        self.targets = meter.create_counter(
            TARGETS, unit="1", description="Cluster Secret syncs by outcome")
        self.sweeps = meter.create_counter(SWEEPS, unit="1", description="Sweeps by outcome")
        self.hours_left = meter.create_histogram(
            HOURS_LEFT, unit="h", description="Hours until the gateway's stored token expires")


_instruments: _Instruments | None = None
_instruments_lock = threading.Lock()


def _get_instruments() -> _Instruments | None:
    global _instruments
    if "opentelemetry.metrics" not in sys.modules:
        return None  # OpenTelemetry was never configured in this process: nothing would export
    with _instruments_lock:
        if _instruments is None:
            _instruments = _Instruments()
        return _instruments


def hours_left(expires_at: object, now: datetime | None = None) -> float | None:
    if isinstance(expires_at, str):
        try:
            expires_at = datetime.fromisoformat(expires_at)
        except ValueError:
            return None
    if not isinstance(expires_at, datetime):
        return None
    return round((expires_at - (now or datetime.now(UTC))).total_seconds() / 3600, 1)


def _metrics(event: str, d: Mapping[str, Any]) -> None:
    instruments = _get_instruments()
    if instruments is None:
        return
    if event == "rotation.reconcile":
        instruments.reconciles.add(1, {"gatewayId": str(d.get("gatewayId", "")), "outcome": str(d.get("outcome")),
                                       "rotated": bool(d.get("rotated")),
                                       "errorClass": str(d.get("errorClass", ""))})
        left = hours_left(d.get("expiresAt"))
        if left is not None and not d.get("dryRun"):
            instruments.hours_left.record(left, {"gatewayId": str(d.get("gatewayId", ""))})
    elif event == "rotation.target":
        instruments.targets.add(1, {"cluster": str(d.get("cluster", "")), "outcome": str(d.get("outcome"))})
    elif event == "rotation.expiry":
        left = d.get("hoursLeft")
        if isinstance(left, int | float):
            instruments.hours_left.record(float(left), {"gatewayId": str(d.get("gatewayId", ""))})
    elif event == "rotation.sweep":
        instruments.sweeps.add(1, {"outcome": str(d.get("outcome"))})


def error_class(exc: BaseException) -> str:
    """The name alerts group failures by: the taxonomy class (AccessDenied, UpstreamError, ...)."""
    return type(exc).__name__

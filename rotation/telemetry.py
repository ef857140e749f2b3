"""What the Azure Portal sees: structured records, attributed to their invocation, and metrics.

Three things break Portal monitoring of a threaded Functions app, and this module answers each:

* Attribution. The Python worker tags a record with an invocation only from state of the thread
  that logs it: the classic worker (azure_functions_worker/dispatcher.py, `on_logging` →
  `get_current_invocation_id`) reads the thread-local `context.thread_local_storage`; the worker
  library azure-functions-runtime (utils/executor.py `run_sync_func`) sets a context variable
  `invocation_id_cv` as well, which the proxy worker reads first. Neither reaches a pool thread
  (`ThreadPoolExecutor` copies no context variables), and a record without an invocation id is not
  one of the function's traces (Microsoft's Python developer guide: a thread must set
  `context.thread_local_storage.invocation_id`).
  `Executor` carries both into its threads: each task runs in a copy of the submitter's context
  (the runtime's variable, OpenTelemetry's span context) with the invocation's thread-local set.
* Structure. Fields travel as LogRecord attributes (`extra`): the OpenTelemetry logging handler
  that azure-monitor-opentelemetry installs turns them into customDimensions. The message stays
  readable `event key=value ...` text, which is all the classic (non-OpenTelemetry) path forwards.
* Metrics. With OpenTelemetry loaded (the worker configures the distro when
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true), `emit` also records counters and the token's
  hours left, which Application Insights stores as custom metrics for metric alerts.

Nothing here imports OpenTelemetry unless the worker already did: cold start stays cheap.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ParamSpec, Protocol, TypeVar

from rotation.boundary import shown
from rotation.core.printable import printable

log = logging.getLogger("rotation")

P = ParamSpec("P")
T = TypeVar("T")

# Metric names as Application Insights stores them (customMetrics.name; the alert's metricName).
RECONCILES = "rotation_reconciles"
TARGETS = "rotation_targets"
HOURS_LEFT = "rotation_token_hours_left"
SWEEPS = "rotation_sweeps"

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


# --- attribution ---------------------------------------------------------------------------------


class InvocationContext(Protocol):
    """What the worker passes as `context` (azure.functions.Context), as far as this module uses it."""

    @property
    def invocation_id(self) -> str: ...

    @property
    def thread_local_storage(self) -> Any: ...  # a threading.local (azure.functions types it as the class)


@dataclass(frozen=True)
class _Invocation:
    invocation_id: str
    storage: Any  # the worker's threading.local


_current: contextvars.ContextVar[_Invocation | None] = contextvars.ContextVar("rotation_invocation", default=None)


@contextmanager
def invocation(context: InvocationContext | None) -> Iterator[None]:
    """Run an entry point as part of the worker's invocation `context` (None outside the worker).

    Under OpenTelemetry it also makes the host's trace (context.trace_context) current on this
    thread, so records and dependency calls join the invocation's operation.
    """
    if context is None:
        yield
        return
    token = _current.set(_Invocation(context.invocation_id, context.thread_local_storage))
    detach = _attach_trace(context)
    try:
        yield
    finally:
        detach()
        _current.reset(token)


def current_invocation_id() -> str | None:
    bound = _current.get()
    return bound.invocation_id if bound else None


def _attach_trace(context: Any) -> Callable[[], None]:
    if "opentelemetry.context" not in sys.modules:
        return lambda: None
    trace_context = getattr(context, "trace_context", None)
    parent = getattr(trace_context, "trace_parent", "") or ""
    if not parent:
        return lambda: None
    from opentelemetry import context as otel_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": parent, "tracestate": getattr(trace_context, "trace_state", "") or ""}
    token = otel_context.attach(TraceContextTextMapPropagator().extract(carrier))
    return lambda: otel_context.detach(token)


def _run_attributed(bound: _Invocation | None, fn: Callable[[], T]) -> T:
    if bound is None:
        return fn()
    storage = bound.storage
    previous = getattr(storage, "invocation_id", None)
    storage.invocation_id = bound.invocation_id
    try:
        return fn()
    finally:
        storage.invocation_id = previous


def attributed(fn: Callable[[], T]) -> Callable[[], T]:
    """`fn` bound to the current invocation, for a thread started by hand (what Executor does per task)."""
    context = contextvars.copy_context()
    bound = _current.get()
    return lambda: context.run(_run_attributed, bound, fn)


class Executor(ThreadPoolExecutor):
    """A thread pool whose tasks log as part of the invocation that submitted them.

    Each task runs in a copy of the submitter's context variables (so the runtime's
    `invocation_id_cv`, OpenTelemetry's current span and this module's binding all follow it) and
    with the worker's thread-local invocation id set, as Microsoft's Python guide asks of threads
    an app starts. Pools nest: a task that submits to another Executor passes the binding on.
    """

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        context = contextvars.copy_context()  # one copy per task: a Context runs in one thread at a time
        bound = _current.get()

        def task() -> T:
            return context.run(_run_attributed, bound, lambda: fn(*args, **kwargs))

        return super().submit(task)


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

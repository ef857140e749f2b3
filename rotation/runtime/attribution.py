"""Attribution: work done on the app's own threads counts as part of the invocation that started it.

The Python worker tags a log record with an invocation only from state of the thread that logs it:
the classic worker (azure_functions_worker/dispatcher.py, `on_logging` → `get_current_invocation_id`)
reads the thread-local `context.thread_local_storage`; the worker library azure-functions-runtime
(utils/executor.py `run_sync_func`) sets a context variable `invocation_id_cv` as well, which the proxy
worker reads first. Neither reaches a pool thread (`ThreadPoolExecutor` copies no context variables),
and a record without an invocation id is not one of the function's traces (Microsoft's Python developer
guide: a thread must set `context.thread_local_storage.invocation_id`). `Executor` carries both into
its threads: each task runs in a copy of the submitter's context (the runtime's variable,
OpenTelemetry's span context) with the invocation's thread-local set.

A runtime concern below the adapters and the application: adapters start threads too (a credential's
bounded token request, the outcome publisher), so this module imports only the standard library
(OpenTelemetry only when the worker already loaded it).
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


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

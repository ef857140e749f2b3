"""The targets of one gateway, in parallel under the reconcile's deadline.

A target that has not answered when the deadline passes is reported `timeout`; its thread is left to
finish on its own (the pool is not waited for), so a hung cluster cannot hold the reply to Event Grid.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, wait
from contextlib import contextmanager

from rotation.app.targets import Synced
from rotation.core.deadline import Deadline
from rotation.core.model import Outcome, Target, TargetReport
from rotation.telemetry import Executor

MAX_FANOUT = 128


@contextmanager
def pool(targets: int) -> Iterator[Executor]:
    executor = Executor(max_workers=min(targets, MAX_FANOUT), thread_name_prefix="target")
    try:
        yield executor
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def collect(targets: Sequence[Target], futures: Sequence[Future[Synced]], deadline: Deadline,
            started: float) -> tuple[Synced, ...]:
    """Each target's result, in registry order, once all answered or the deadline passed."""
    wait(futures, timeout=deadline.left())
    return tuple(
        f.result() if f.done() and not f.cancelled()
        else Synced(TargetReport(t.cluster, t.namespace, t.secret, Outcome.TIMEOUT,
                                 error="deadline passed before the target answered",
                                 duration_ms=int((time.monotonic() - started) * 1000)))
        for t, f in zip(targets, futures, strict=True)
    )

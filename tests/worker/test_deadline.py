"""The outcome event is published inside the handler's deadline, not after it.

Event Grid gives the endpoint 30 s to answer and redelivers otherwise (Microsoft docs, Event Grid
delivery and retry); ROTATION_DEADLINE_SECONDS (at most 25) is the handler's budget. The publish used
to start after the reconcile with its own 5 s connect + 5 s read timeouts, so a slow topic added up to
10 s past the deadline. Here ARM is slow (most of the budget goes to generateToken) and the topic hangs.
"""

from __future__ import annotations

import logging
import os
import time

import pytest

from devstack import stack as devstack
from rotation import bootstrap
from tests.e2e.conftest import World
from tests.functions.conftest import deliver
from tests.worker.test_worker import near_expiry

pytestmark = pytest.mark.devstack

DEADLINE = 6


def test_a_hanging_outcome_topic_cannot_push_the_handler_past_its_deadline(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    bootstrap.reset({**os.environ, "ROTATION_DEADLINE_SECONDS": str(DEADLINE)})
    world.fault("arm", method="POST", path="generateToken", delaySeconds=DEADLINE - 3.5, times=1)
    world.fault("eventgrid", path="/api/events", delaySeconds=30, times=0)
    started = time.monotonic()
    deliver(near_expiry())  # the rotation itself succeeds
    took = time.monotonic() - started
    assert took < DEADLINE + 0.5, f"the handler answered after {took:.1f} s (deadline {DEADLINE} s)"
    assert world.stack.outcome_events() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "rotation.outcomes"]
    assert len(warnings) == 1 and devstack.gateway_id("gw-shared") in warnings[0]

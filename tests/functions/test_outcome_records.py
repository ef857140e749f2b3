"""Every reconcile outcome leaves exactly one `rotation.reconcile` record, through the handlers.

The failed-rotation alert (infra/modules/alerts.bicep) counts these records; a path that writes none
is a failure nobody is told about, and a path that writes two double-counts. Each path is driven
through the indexed function, as the worker calls it (tests/functions/conftest.py), with the fault
raised by the in-memory port at the point the real adapter would raise it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from rotation import bootstrap, telemetry
from rotation.app.holding import lease_name
from rotation.core.errors import AccessDenied, UpstreamError
from tests.functions.conftest import deliver, http
from tests.functions.test_event_handler import near_expiry
from tests.service.conftest import World

ROUTE = {"service": "contoso-apim", "gateway": "gw-1"}
BASE = "http://localhost/api/gateways/contoso-apim/gw-1"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.fields: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = telemetry.fields_of(record)
        if fields.get("event") == "rotation.reconcile":
            self.fields.append(fields)


@pytest.fixture
def reconciles() -> Iterator[list[dict[str, Any]]]:
    handler = _Records()
    logging.getLogger("rotation").addHandler(handler)
    try:
        yield handler.fields
    finally:
        logging.getLogger("rotation").removeHandler(handler)


def _event(world: World) -> None:
    with contextlib.suppress(Exception):  # the handler raising (redelivery) is part of some paths
        deliver(near_expiry())


def _rotate(world: World) -> None:
    with contextlib.suppress(KeyError):  # a bug is not mapped to a status: the host answers it with 500
        http("rotate", "POST", f"{BASE}/rotate", ROUTE, {"force": True})


def _arm_403(world: World) -> None:
    world.issuer.faults.queue["generateToken"] = [AccessDenied("ARM generateToken: 403 AuthorizationFailed")]


def _keyvault_5xx(world: World) -> None:
    world.store.faults.queue["get"] = [UpstreamError("Key Vault get: 503 ServiceUnavailable")]


def _keyvault_write_5xx(world: World) -> None:
    world.store.faults.queue["put"] = [UpstreamError("Key Vault set: 500 InternalServerError")]


def _lease_held(world: World) -> None:
    """Another instance holds the gateway's lease past this request's deadline."""
    assert world.rotator.lease is not None
    world.rotator.lease.acquire(lease_name(world.gw1), duration=60, wait=0)
    object.__setattr__(bootstrap.container().settings, "deadline_seconds", 0.3)


def _bug(world: World) -> None:
    world.store.faults.queue["get"] = [KeyError("a bug in an adapter")]


def _target_fails(world: World) -> None:
    world.west.faults.queue["read"] = [UpstreamError("cluster west unreachable")]


def _heal_fails(world: World) -> None:
    """In sync everywhere, but the event's instance runs an older token: restart, which fails."""
    world.seed_token(world.gw1, timedelta(days=20))
    world.east.faults.queue["restart"] = [UpstreamError("cluster east: patch deployment 503")]


PATHS: dict[str, tuple[Callable[[World], None], Callable[[World], None], str, str | None]] = {
    "event, ARM 403": (_arm_403, _event, "failed", "AccessDenied"),
    "http, ARM 403": (_arm_403, _rotate, "failed", "AccessDenied"),
    "event, Key Vault read 5xx": (_keyvault_5xx, _event, "failed", "UpstreamError"),
    "http, Key Vault write 5xx": (_keyvault_write_5xx, _rotate, "failed", "UpstreamError"),
    "event, lease not acquired": (_lease_held, _event, "failed", "UpstreamError"),
    "http, a bug": (_bug, _rotate, "failed", "KeyError"),
    "event, one target fails": (_target_fails, _event, "failed", None),
    "event, heal restart fails": (_heal_fails, _event, "failed", None),
    "event, ok": (lambda world: None, _event, "ok", None),
}


@pytest.mark.parametrize("path", PATHS)
def test_each_outcome_is_one_reconcile_record(app_world: World, reconciles: list[dict[str, Any]],
                                              path: str) -> None:
    arrange, act, outcome, error_class = PATHS[path]
    arrange(app_world)
    act(app_world)
    assert [(r["outcome"], r.get("errorClass")) for r in reconciles] == [(outcome, error_class)], reconciles
    assert reconciles[0]["gatewayId"] == app_world.gw1.ref.id


def test_a_key_roll_pending_then_completed_is_one_record_each(app_world: World,
                                                               reconciles: list[dict[str, Any]]) -> None:
    app_world.seed_token(app_world.gw1, timedelta(days=20))
    status, body = http("roll_keys", "POST", f"{BASE}/roll-keys", ROUTE, {"fromKey": "primary", "waitSeconds": 0})
    assert status == 409 and body["phase"] == "pending"
    assert len(reconciles) == 1 and reconciles[0]["keyType"] == "secondary"
    reconciles.clear()
    status, body = http("roll_keys", "POST", f"{BASE}/roll-keys", ROUTE,
                        {"fromKey": "primary", "waitSeconds": 0, "confirmRestarted": True})
    assert status == 200 and body["phase"] == "completed"
    assert len(reconciles) == 1


def test_the_outcome_event_of_a_gateway_the_sweep_did_not_reach_is_bounded_by_the_sweep(
        reconciles: list[dict[str, Any]]) -> None:
    """A gateway not reached within the sweep's budget is a failed outcome, and its event is published
    (best effort, rotation/adapters/outcomes.py): every other publish waits at most what is left of the
    caller's deadline; this one must too, or a hanging topic adds 5 s per unreached gateway to a sweep
    that has already run out of time (the timer's functionTimeout, host.json)."""
    timeouts: list[float | None] = []

    class Publisher:
        def publish(self, report: Any, timeout: float | None = None) -> None:
            timeouts.append(timeout)

    world = World()
    world.rotator.publisher = Publisher()
    report = world.rotator.sweep(deadline_seconds=5, budget_seconds=1)
    assert [r.error for r in report.reports] == ["not reached within the sweep's budget; left for the next run"] * 2
    assert [(r["outcome"], r["errorClass"]) for r in reconciles] == [("failed", "NotReached")] * 2
    assert len(timeouts) == 2 and all(t is not None and t <= 1 for t in timeouts), timeouts

"""rotation.telemetry without a worker: attribution in pool threads, record fields, one outcome record.

The attribution rules reproduced here are the workers': the classic worker reads only the
thread-local `context.thread_local_storage.invocation_id` (Azure/azure-functions-python-worker,
azure_functions_worker/dispatcher.py `get_current_invocation_id`); azure-functions-runtime sets the
context variable `invocation_id_cv` on the invocation's thread (utils/executor.py `run_sync_func`).
tests/worker runs the real library; this is the fast check of the mechanism.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from rotation import telemetry
from rotation.core.errors import AccessDenied
from tests.service.conftest import World

RUNTIME_CV: contextvars.ContextVar[str | None] = contextvars.ContextVar("invocation_id", default=None)


@dataclass
class Context:
    """What the worker hands a handler declaring `context` (the parts telemetry reads)."""

    invocation_id: str
    thread_local_storage: threading.local = field(default_factory=threading.local)


def seen(ctx: Context) -> tuple[str | None, str | None, str]:
    return (getattr(ctx.thread_local_storage, "invocation_id", None), RUNTIME_CV.get(),
            threading.current_thread().name)


def test_a_plain_pool_loses_the_invocation_and_the_executor_keeps_it() -> None:
    ctx = Context("inv-1")
    RUNTIME_CV.set("inv-1")
    ctx.thread_local_storage.invocation_id = "inv-1"  # what run_sync_func does on the invocation thread
    with ThreadPoolExecutor(1) as plain:
        assert plain.submit(seen, ctx).result()[:2] == (None, None)  # the defect: nothing attributes it
    with telemetry.invocation(ctx), telemetry.Executor(2, thread_name_prefix="outer") as outer:
        def nested() -> tuple[str | None, str | None, str]:
            with telemetry.Executor(1, thread_name_prefix="inner") as inner:
                return inner.submit(seen, ctx).result()

        assert outer.submit(seen, ctx).result()[:2] == ("inv-1", "inv-1")
        assert nested()[:2] == ("inv-1", "inv-1")
        assert outer.submit(nested).result()[:2] == ("inv-1", "inv-1")
    # a pool thread gives the id back: a later task of another invocation does not inherit it
    with telemetry.Executor(1) as pool:
        pool.submit(lambda: None).result()
        assert pool.submit(lambda: getattr(ctx.thread_local_storage, "invocation_id", None)).result() is None


def test_outside_an_invocation_the_executor_is_a_plain_pool() -> None:
    ctx = Context("unused")
    with telemetry.Executor(1) as pool:
        assert pool.submit(seen, ctx).result()[0] is None
    with telemetry.invocation(None):
        assert telemetry.current_invocation_id() is None


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Any:
    handler = Records()
    logging.getLogger("rotation").addHandler(handler)
    yield handler.records
    logging.getLogger("rotation").removeHandler(handler)


def test_fields_are_record_attributes_and_the_message_reads_as_text(records: list[logging.LogRecord]) -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    telemetry.emit("rotation.target", {"gatewayId": "/x/gateways/gw", "restarted": ["Deployment/a", "Deployment/b"],
                                       "error": 'said "no"', "expiresAt": at, "fingerprint": None, "rotated": True})
    (record,) = records
    fields = telemetry.fields_of(record)
    assert fields == {"event": "rotation.target", "gatewayId": "/x/gateways/gw", "restarted": "Deployment/a,Deployment/b",
                      "error": 'said "no"', "expiresAt": "2026-12-01T00:00:00+00:00", "rotated": True}
    assert record.getMessage() == ('rotation.target gatewayId=/x/gateways/gw restarted=Deployment/a,Deployment/b '
                                   'error="said \\"no\\"" expiresAt=2026-12-01T00:00:00+00:00 rotated=true')
    assert not record.getMessage().startswith("{")
    assert telemetry.fields_of(logging.LogRecord("x", 20, "", 0, "plain", (), None)) == {}


def test_a_failure_before_any_target_is_one_reconcile_record(records: list[logging.LogRecord]) -> None:
    world = World()
    world.issuer.faults.queue["generateToken"] = [AccessDenied("ARM answered 403 AuthorizationFailed")] * 2
    with pytest.raises(AccessDenied):
        world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5, force=True)
    outcomes = [f for f in map(telemetry.fields_of, records) if f.get("event") == "rotation.reconcile"]
    assert len(outcomes) == 1
    assert outcomes[0]["outcome"] == "failed" and outcomes[0]["errorClass"] == "AccessDenied"
    assert "403" in outcomes[0]["error"] and outcomes[0]["gatewayId"] == world.gw1.ref.id
    # the sweep path reports it without raising, and still records it once
    records.clear()
    report = world.rotator.reconcile_safely(world.gw1, reason="sweep", deadline_seconds=5, force=True)
    assert report.error and not report.ok
    assert [f["errorClass"] for f in map(telemetry.fields_of, records) if f.get("event") == "rotation.reconcile"] == [
        "AccessDenied"]


def test_a_thread_started_by_hand_is_attributed_through_attributed() -> None:
    """The lease-renewal thread: a plain Thread copies nothing; `attributed` binds it like Executor does."""
    ctx = Context("inv-2")
    out: list[tuple[str | None, str | None, str]] = []
    with telemetry.invocation(ctx):
        RUNTIME_CV.set("inv-2")
        plain = threading.Thread(target=lambda: out.append(seen(ctx)))
        bound = threading.Thread(target=telemetry.attributed(lambda: out.append(seen(ctx))))
        for thread in (plain, bound):
            thread.start()
            thread.join()
    assert [o[:2] for o in out] == [(None, None), ("inv-2", "inv-2")]


def test_a_settings_error_is_still_one_failed_outcome_per_request(records: list[logging.LogRecord]) -> None:
    """No reconcile can start without settings; the event, the rotate route and the sweep each still
    leave the one record the failed-rotation alert counts."""
    from rotation import bootstrap, triggers
    from tests.functions.conftest import http

    bootstrap.reset({"ROTATION_REGISTRY": '{"clusters": [], "gateways": [{}]}', "KEY_VAULT_URL": "https://kv"})
    try:
        triggers.handle_event({"id": "e1", "topic": "/subscriptions/00000000-0000-4000-8000-000000000001/"
                               "resourceGroups/rg/providers/"
                               "Microsoft.ApiManagement/service/apim1", "subject": "/gateways/gw1/pod-1",
                               "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
                               "eventTime": "2026-11-26T08:56:12Z", "dataVersion": "1",
                               "data": {"gatewayInfo": {"gatewayId": "gw1", "instanceId": "pod-1"},
                                        "tokenInfo": {"expiresAtUtc": "2026-11-29T08:56:00Z"}}})
        status, _ = http("rotate", "POST", "http://localhost/api/gateways/apim1/gw1/rotate",
                         {"service": "apim1", "gateway": "gw1"})
        assert status == 500
        with pytest.raises(Exception, match="gateways"):
            triggers.run_sweep()
    finally:
        bootstrap.reset()
    fields = [f for f in map(telemetry.fields_of, records) if f]
    reconciles = [f for f in fields if f["event"] == "rotation.reconcile"]
    assert [(f["outcome"], f["errorClass"]) for f in reconciles] == [("failed", "SettingsError")] * 2
    assert reconciles[0]["gatewayId"].endswith("/service/apim1/gateways/gw1")
    assert reconciles[1]["gatewayId"] == "apim1/gateways/gw1"
    (sweep,) = [f for f in fields if f["event"] == "rotation.sweep"]
    assert (sweep["outcome"], sweep["errorClass"]) == ("failed", "SettingsError")


def _runtime() -> Any:
    return pytest.importorskip("azure_functions_runtime", reason="the worker library (make venv installs it)")


def _attribution() -> tuple[str | None, str | None]:
    """(classic rule, proxy rule) for a record logged on this thread now.

    Classic worker: Azure/azure-functions-python-worker azure_functions_worker/dispatcher.py
    `get_current_invocation_id` reads the thread-local `_invocation_id_local`; the proxy worker reads
    azure-functions-runtime's `invocation_id_cv` first, then that thread-local.
    """
    from azure_functions_runtime import invocation_id_cv
    from azure_functions_runtime.bindings.context import _invocation_id_local

    classic = getattr(_invocation_id_local, "invocation_id", None)
    return classic, invocation_id_cv.get() or classic


def test_a_straggler_past_its_invocation_is_not_attributed_to_the_next_one() -> None:
    """Invocations run as azure-functions-runtime 1.3.0 runs a sync handler (utils/executor.py
    `run_sync_func` on the worker's one sync thread: it sets the thread-local and `invocation_id_cv`,
    and clears both when the handler returns). Invocation A's fan-out task outlives A (a deadline
    passed) on a long-lived pool (the outcome publisher's); invocation B then reuses the worker thread
    and the pool's thread. The straggler's late records stay A's; B's records, on B's thread and on
    the reused pool thread, are B's; no thread keeps an id once its task is done."""
    runtime = _runtime()
    from azure_functions_runtime.bindings.context import Context as RuntimeContext
    from azure_functions_runtime.bindings.context import _invocation_id_local
    from azure_functions_runtime.utils.executor import run_sync_func

    shared = telemetry.Executor(1, thread_name_prefix="long-lived")  # like outcomes.py's publisher pool
    worker = ThreadPoolExecutor(1, thread_name_prefix="worker-sync")  # the worker's sync thread pool
    release = threading.Event()
    seen: dict[str, tuple[str | None, str | None]] = {}

    def context(invocation_id: str) -> Any:
        return RuntimeContext("fn", "/app", invocation_id, _invocation_id_local, None, None)

    def straggler() -> None:
        release.wait(10)  # logs only after invocation A has returned
        seen["A late, pool thread"] = _attribution()

    def handler_a(ctx: Any) -> None:
        with telemetry.invocation(ctx):
            shared.submit(straggler)  # not waited for: the deadline passed
            seen["A, worker thread"] = _attribution()

    def handler_b(ctx: Any) -> Any:
        with telemetry.invocation(ctx):
            seen["B, worker thread"] = _attribution()
            return shared.submit(lambda: seen.__setitem__("B, pool thread", _attribution()))

    try:
        worker.submit(run_sync_func, "inv-A", context("inv-A"), handler_a, {"ctx": context("inv-A")}).result()
        assert worker.submit(_attribution).result() == (None, None)  # run_sync_func cleared A
        b_task = worker.submit(run_sync_func, "inv-B", context("inv-B"), handler_b,
                               {"ctx": context("inv-B")}).result()
        release.set()
        b_task.result(timeout=10)
        after = shared.submit(_attribution).result()
    finally:
        release.set()
        shared.shutdown()
        worker.shutdown()
    assert runtime is not None
    assert seen == {"A, worker thread": ("inv-A", "inv-A"), "A late, pool thread": ("inv-A", "inv-A"),
                    "B, worker thread": ("inv-B", "inv-B"), "B, pool thread": ("inv-B", "inv-B")}
    assert after == (None, None)


def test_nested_pools_and_a_hand_started_thread_under_the_runtime() -> None:
    """sweep → reconcile → fan-out (three Executors deep) and the lease-renewal thread
    (`telemetry.attributed`), inside a handler run by azure-functions-runtime's `run_sync_func`: every
    level is attributed to the invocation under both workers' rules."""
    _runtime()
    from azure_functions_runtime.bindings.context import Context as RuntimeContext
    from azure_functions_runtime.bindings.context import _invocation_id_local
    from azure_functions_runtime.utils.executor import run_sync_func

    ctx = RuntimeContext("sweep", "/app", "inv-S", _invocation_id_local, None, None)
    seen: list[tuple[str, tuple[str | None, str | None]]] = []

    def fan_out() -> None:
        with telemetry.Executor(2, thread_name_prefix="target") as pool:
            list(pool.map(lambda _: seen.append(("target", _attribution())), range(2)))

    def reconcile() -> None:
        renew = threading.Thread(target=telemetry.attributed(lambda: seen.append(("lease", _attribution()))))
        renew.start()
        renew.join()
        with telemetry.Executor(1, thread_name_prefix="reconcile") as pool:
            pool.submit(fan_out).result()

    def handler(context: Any) -> None:
        with telemetry.invocation(context), telemetry.Executor(2, thread_name_prefix="sweep") as pool:
            for future in [pool.submit(reconcile) for _ in range(2)]:
                future.result()

    with ThreadPoolExecutor(1) as worker:
        worker.submit(run_sync_func, "inv-S", ctx, handler, {"context": ctx}).result()
    assert sorted({kind for kind, _ in seen}) == ["lease", "target"] and len(seen) == 6
    assert {who for _, who in seen} == {("inv-S", "inv-S")}


def test_the_identity_token_thread_is_attributed() -> None:
    """BoundedCredential asks the identity endpoint on a thread of its own (so the deadline can abandon
    it); azure-identity logs there (its warnings on a failed request), so that thread must carry the
    invocation like every pool thread (Microsoft's Python guide on thread_local_storage)."""
    from azure.core.credentials import AccessToken

    from rotation.adapters.credential import BoundedCredential, token_deadline

    ctx = Context("inv-id")
    out: list[tuple[str | None, str | None, str]] = []

    class Inner:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            out.append(seen(ctx))
            return AccessToken("t", 0)

    with telemetry.invocation(ctx):
        RUNTIME_CV.set("inv-id")
        with token_deadline(5.0):
            BoundedCredential(Inner()).get_token("https://management.azure.com/.default")
    assert [o[:2] for o in out] == [("inv-id", "inv-id")]
    assert out[0][2] == "identity-token"

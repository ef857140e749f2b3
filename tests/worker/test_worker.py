"""The app under Microsoft's worker library, driven with the host's messages, on the devstack.

Primary sources: azure-functions-runtime 1.3.0 (PyPI, Microsoft's Python worker library):
handle_event.py `worker_init_request` (indexes the app), `functions_metadata_request`,
`invocation_request` (runs a sync handler on its thread pool via utils/executor.py `run_sync_func`,
which sets `context.thread_local_storage.invocation_id` and `invocation_id_cv` on that thread only);
Azure/azure-functions-python-worker azure_functions_worker/dispatcher.py `on_logging` (a record is
attributed only through the logging thread's invocation id). The messages are the host's
(FunctionRpc.proto: InvocationRequest.input_data as TypedData json / http, RpcLog.invocation_id).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devstack import stack as devstack
from tests import leakcheck
from tests.e2e.conftest import World
from tests.worker.conftest import Worker, stack_env, started

pytestmark = pytest.mark.devstack

GATEWAY = "gw-shared"


@pytest.fixture(scope="module")
def worker(rpc: SimpleNamespace, proto_out: Path, stack: devstack.Stack) -> Iterator[Worker]:
    yield from started(rpc, proto_out, stack_env(stack))


@pytest.fixture(scope="module")
def indexed(worker: Worker) -> tuple[Any, Any]:
    return worker.start()


def near_expiry(gateway: str = GATEWAY) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "topic": devstack.SERVICE_ID, "subject": f"/gateways/{gateway}/pod-1",
            "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry", "eventTime": "2026-11-26T08:56:12Z",
            "dataVersion": "1", "metadataVersion": "1",
            "data": {"gatewayInfo": {"gatewayId": gateway, "instanceId": "pod-1"},
                     "tokenInfo": {"expiresAtUtc": "2026-11-29T08:56:00Z"}}}


def expired_cloudevent(gateway: str = GATEWAY) -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": devstack.SERVICE_ID,
            "subject": f"/gateways/{gateway}/pod-2", "type": "Microsoft.ApiManagement.GatewayTokenExpired",
            "time": "2026-11-26T08:57:03Z",
            "data": {"gatewayInfo": {"gatewayId": devstack.gateway_id(gateway), "instanceId": "pod-2"},
                     "tokenInfo": {"expiredAtUtc": "2026-11-26T08:56:00Z"}}}


def user_logs(worker: Worker, logs: list[Any]) -> list[Any]:
    return [log for log in logs if log.log_category == worker.rpc.RpcLog.User]


def assert_attributed(worker: Worker, invocation_id: str, logs: list[Any]) -> list[Any]:
    """Every record the app logged during the invocation carries it, under both workers' rules."""
    # The OpenTelemetry exporters' own threads (OtelBatchLogRecordProcessor, QuickpulseMetricReader) serve the process,
    # not an invocation: what they log is not the app's.
    mine = [log for log in user_logs(worker, logs)
            if not log.propertiesMap["thread"].string.startswith(("Otel", "Quickpulse"))]
    assert mine, "the invocation logged nothing"
    unattributed = [(log.category, log.propertiesMap["thread"].string, log.message[:80])
                    for log in mine if log.invocation_id != invocation_id]
    assert unattributed == []
    assert {log.propertiesMap["proxy_invocation_id"].string for log in mine} == {invocation_id}
    assert leakcheck.find_leaks([log.message for log in logs]) == []
    return mine


def records(logs: list[Any], event: str) -> list[dict[str, str]]:
    """The `event k=v ...` messages of one kind, back to fields (the classic path's only view of them)."""
    import shlex

    out = []
    for log in logs:
        if log.message.startswith(event + " "):
            out.append(dict(part.split("=", 1) for part in shlex.split(log.message)[1:]))
    return out


def test_init_indexes_every_function_with_the_bindings_the_host_registers(worker: Worker,
                                                                           indexed: tuple[Any, Any]) -> None:
    init, metadata = indexed
    ok = worker.rpc.StatusResult.Success
    assert init.result.status == ok, init.result.exception.message
    assert metadata.result.status == ok and not metadata.use_default_metadata_indexing
    found = {}
    for meta in metadata.function_metadata_results:
        bindings = [json.loads(raw) for raw in meta.raw_bindings]
        found[meta.name] = sorted((b["type"], b["direction"], b.get("route"), tuple(b.get("methods") or ()),
                                   b.get("schedule"), b.get("authLevel")) for b in bindings)
        assert "context" not in {b["name"] for b in bindings}  # the worker's, not a binding
    http_out = ("http", "OUT", None, (), None, None)
    assert found == {
        "on_gateway_token_event": [("eventGridTrigger", "IN", None, (), None, None)],
        "rotate": [http_out, ("httpTrigger", "IN", "gateways/{service}/{gateway}/rotate", ("POST",), None,
                              found["rotate"][1][5])],
        "list_gateways": [http_out, ("httpTrigger", "IN", "gateways", ("GET",), None, "FUNCTION")],
        "get_gateway": [http_out, ("httpTrigger", "IN", "gateways/{service}/{gateway}", ("GET",), None, "FUNCTION")],
        "roll_keys": [http_out, ("httpTrigger", "IN", "gateways/{service}/{gateway}/roll-keys", ("POST",), None,
                                 found["roll_keys"][1][5])],
        "health": [http_out, ("httpTrigger", "IN", "health", ("GET",), None, "FUNCTION")],
        "sweep": [("timerTrigger", "IN", None, (), "0 0 * * * *", None)],
    }
    assert found["rotate"][1][5] in ("FUNCTION", "ADMIN") and found["roll_keys"][1][5] in ("FUNCTION", "ADMIN")


@pytest.mark.parametrize("payload", [near_expiry, expired_cloudevent], ids=["eventgrid-schema", "cloudevents"])
def test_event_grid_trigger_rotates_and_every_record_is_attributed(worker: Worker, indexed: tuple[Any, Any],
                                                                   world: World, payload: Any) -> None:
    invocation_id, response, logs = worker.invoke("on_gateway_token_event", {"event": worker.json_input(payload())})
    assert response.result.status == worker.rpc.StatusResult.Success, response.result.exception.message
    mine = assert_attributed(worker, invocation_id, logs)
    (reconcile,) = records(mine, "rotation.reconcile")
    # The worker keeps its in-process lease across invocations, so after the first case the devstack's
    # reseed is a Key Vault write the lease never committed: a fork, repaired (the committed token stored
    # again, `rotation.fork`) instead of a rotation. Either way every target is brought to a new token.
    assert reconcile["outcome"] == "ok" and (reconcile["rotated"] == "true" or records(mine, "rotation.fork"))
    assert reconcile["gatewayId"] == devstack.gateway_id(GATEWAY)
    targets = records(mine, "rotation.target")
    assert len(targets) == len(devstack.targets()[GATEWAY]) and {t["outcome"] for t in targets} == {"updated"}
    assert world.vault()[f"apim-apim-devstack-{GATEWAY}-token"]["value"] != world.seeded[GATEWAY]


def test_http_routes_answer_through_the_worker(worker: Worker, indexed: tuple[Any, Any], world: World) -> None:
    route = {"service": "apim-devstack", "gateway": GATEWAY}
    for function, method, path, params, body, status in [
        ("health", "GET", "health", {}, b"", "200"),
        ("list_gateways", "GET", "gateways", {}, b"", "200"),
        ("get_gateway", "GET", f"gateways/apim-devstack/{GATEWAY}", route, b"", "200"),
        ("rotate", "POST", f"gateways/apim-devstack/{GATEWAY}/rotate", route, b'{"force": true}', "200"),
        ("rotate", "POST", f"gateways/apim-devstack/{GATEWAY}/rotate", route, b'{"nope": 1}', "400"),
    ]:
        invocation_id, response, logs = worker.invoke(function, {"req": worker.http_input(method, path, params, body)})
        assert response.result.status == worker.rpc.StatusResult.Success, response.result.exception.message
        http = response.return_value.http
        assert http.status_code == status, (function, http.body)
        answer = json.loads(http.body.bytes or http.body.string)
        if function == "list_gateways":
            assert {g["gateway"] for g in answer["gateways"]} >= {GATEWAY}
        if function == "rotate" and status == "200":
            assert answer["rotated"] is True
            assert_attributed(worker, invocation_id, logs)
            assert len(records(logs, "rotation.reconcile")) == 1


def test_a_failure_before_any_target_is_one_attributed_reconcile_record(worker: Worker, indexed: tuple[Any, Any],
                                                                        world: World) -> None:
    world.fault("arm", method="POST", path="generateToken", status=403, code="AuthorizationFailed", times=0)
    route = {"service": "apim-devstack", "gateway": GATEWAY}
    invocation_id, response, logs = worker.invoke("rotate", {"req": worker.http_input(
        "POST", f"gateways/apim-devstack/{GATEWAY}/rotate", route, b'{"force": true}')})
    assert response.return_value.http.status_code == "502"
    mine = assert_attributed(worker, invocation_id, logs)
    (reconcile,) = records(mine, "rotation.reconcile")
    assert reconcile["outcome"] == "failed" and reconcile["errorClass"] == "AccessDenied"
    assert records(mine, "rotation.target") == []


def test_timer_sweep_records_from_pool_threads_are_attributed(worker: Worker, indexed: tuple[Any, Any],
                                                              world: World) -> None:
    timer = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": None, "IsPastDue": False}
    invocation_id, response, logs = worker.invoke("sweep", {"timer": worker.json_input(timer)})
    assert response.result.status == worker.rpc.StatusResult.Success, response.result.exception.message
    mine = assert_attributed(worker, invocation_id, logs)
    threads = {log.propertiesMap["thread"].string for log in mine if log.message.startswith("rotation.reconcile")}
    assert threads and all(t.startswith("sweep") for t in threads)  # logged on the sweep's pool, attributed
    reconciles = records(mine, "rotation.reconcile")
    assert {r["gatewayId"] for r in reconciles} == {devstack.gateway_id(g) for g in devstack.targets()}
    (sweep,) = records(mine, "rotation.sweep")
    assert sweep["outcome"] == "ok" and sweep["gateways"] == str(len(reconciles))

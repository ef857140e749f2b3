"""Telemetry on the wire: what the Azure Monitor exporter really sends for a rotation, a failure, a sweep.

The worker library configures the Azure Monitor distro itself when
PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true (azure_functions_runtime/handle_event.py
`worker_init_request` → otel.py `initialize_azure_monitor` → `configure_azure_monitor`, and answers
with the `WorkerOpenTelemetryEnabled` capability). The distro instruments the Azure SDKs
(`settings.tracing_implementation = OpenTelemetrySpan`) and requests / urllib3 by default
(azure-monitor-opentelemetry 1.8.11 `_constants._FULLY_SUPPORTED_INSTRUMENTED_LIBRARIES`,
`_configure._setup_tracing` / `_setup_instrumentations`), and hands log records' attributes to the
exporter as customDimensions (opentelemetry-instrumentation-logging handler `_get_attributes`;
exporter `_utils._filter_custom_properties`). The ingestion endpoint is devstack/appinsights.py; the
alerts and workbook are read from infra/ and every dimension and metric they use must be on the wire.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest

from devstack import stack as devstack
from devstack.appinsights import AppInsightsFake
from devstack.tls import DevCA
from rotation import telemetry
from tests import leakcheck
from tests.e2e.conftest import World
from tests.worker.conftest import ROOT, Worker, stack_env, started
from tests.worker.test_worker import GATEWAY, assert_attributed, near_expiry

pytestmark = pytest.mark.devstack

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture(scope="module")
def ingestion(stack: devstack.Stack) -> Iterator[AppInsightsFake]:
    ca = DevCA.load_or_create(stack.dir)
    fake = AppInsightsFake(ca.server_context(stack.dir, "appinsights"))
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def otel_worker(rpc: SimpleNamespace, proto_out: Path, stack: devstack.Stack,
                ingestion: AppInsightsFake) -> Iterator[Worker]:
    env = stack_env(stack, PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY="true",
                    APPLICATIONINSIGHTS_CONNECTION_STRING=ingestion.connection_string,
                    APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true",
                    OTEL_METRIC_EXPORT_INTERVAL="500", OTEL_BSP_SCHEDULE_DELAY="200",
                    OTEL_BLRP_SCHEDULE_DELAY="200", OTEL_SERVICE_NAME="apim-token-rotator",
                    # what the deployment sets: every span (the distro defaults to 5 per second, rate limited)
                    OTEL_TRACES_SAMPLER="microsoft.fixed_percentage", OTEL_TRACES_SAMPLER_ARG="1.0")
    yield from started(rpc, proto_out, env)


@pytest.fixture(scope="module")
def initialized(otel_worker: Worker) -> Any:
    init, _ = otel_worker.start()
    return init


def traceparent(span: str) -> str:
    return f"00-{TRACE_ID[:-len(span)]}{span}-{'b7ad6b7169203331'}-01"


def of_type(items: list[dict[str, Any]], base_type: str) -> list[dict[str, Any]]:
    return [i for i in items if i["data"]["baseType"] == base_type]


def messages(items: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [i for i in of_type(items, "MessageData") if i["data"]["baseData"].get("properties", {}).get("event") == event]


def metric_points(items: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [{**m, "properties": i["data"]["baseData"].get("properties", {})}
            for i in of_type(items, "MetricData") for m in i["data"]["baseData"]["metrics"] if m["name"] == name]


def dependencies_to(items: list[dict[str, Any]], url: str, operation: str) -> list[dict[str, Any]]:
    netloc = urlsplit(url).netloc
    return [i["data"]["baseData"] for i in of_type(items, "RemoteDependencyData")
            if netloc in (i["data"]["baseData"].get("target") or "") + (i["data"]["baseData"].get("data") or "")
            and i["tags"].get("ai.operation.id") == operation]


def test_worker_reports_opentelemetry_enabled(otel_worker: Worker, initialized: Any) -> None:
    assert initialized.result.status == otel_worker.rpc.StatusResult.Success, initialized.result.exception.message
    assert initialized.capabilities["WorkerOpenTelemetryEnabled"] == "true"


def test_rotation_failure_and_sweep_on_the_wire(otel_worker: Worker, initialized: Any, world: World,
                                                ingestion: AppInsightsFake) -> None:
    stack = world.stack
    # 1. a rotation from an Event Grid event, inside the host's trace
    rotation_op = TRACE_ID[:-4] + "0001"
    inv, response, logs = otel_worker.invoke("on_gateway_token_event",
                                              {"event": otel_worker.json_input(near_expiry())},
                                              trace_parent=traceparent("0001"))
    assert response.result.status == otel_worker.rpc.StatusResult.Success, response.result.exception.message
    assert_attributed(otel_worker, inv, logs)
    # 2. a failed rotation: ARM answers 403 (a missing role) before any target is reached
    world.fault("arm", method="POST", path="generateToken", status=403, code="AuthorizationFailed", times=0)
    route = {"service": "apim-devstack", "gateway": GATEWAY}
    failed_op = TRACE_ID[:-4] + "0002"
    inv, response, logs = otel_worker.invoke("rotate", {"req": otel_worker.http_input(
        "POST", f"gateways/apim-devstack/{GATEWAY}/rotate", route, b'{"force": true}')}, trace_parent=traceparent("0002"))
    assert response.return_value.http.status_code == "502"
    assert_attributed(otel_worker, inv, logs)
    stack.control(stack.arm_url, "DELETE", "/_devstack/faults")
    # 3. a sweep
    sweep_op = TRACE_ID[:-4] + "0003"
    inv, response, logs = otel_worker.invoke("sweep", {"timer": otel_worker.json_input({"IsPastDue": False})},
                                             trace_parent=traceparent("0003"))
    assert response.result.status == otel_worker.rpc.StatusResult.Success, response.result.exception.message
    assert_attributed(otel_worker, inv, logs)

    def complete(items: list[dict[str, Any]]) -> bool:
        """Logs, spans and metrics are exported by separate batchers: wait for the last of each."""
        outcomes = {(p["properties"].get("outcome"), p["properties"].get("errorClass"))
                    for p in metric_points(items, telemetry.RECONCILES)}
        return bool(messages(items, "rotation.sweep") and metric_points(items, telemetry.HOURS_LEFT)
                    and {("failed", "AccessDenied"), ("ok", "")} <= outcomes
                    and dependencies_to(items, stack.arm_url, failed_op)
                    and dependencies_to(items, stack.keyvault_url, rotation_op)
                    and all(dependencies_to(items, c.server, rotation_op) for c in stack.clusters)
                    and len([m for m in messages(items, "rotation.reconcile")
                             if m["tags"].get("ai.operation.id") == sweep_op]) == len(devstack.targets()))

    items = ingestion.wait_for(complete, timeout=30)
    assert complete(items), sorted({i["name"] for i in items})

    # customDimensions instead of JSON in the message, each joined to its invocation's operation
    (rotated,) = [m for m in messages(items, "rotation.reconcile") if m["tags"].get("ai.operation.id") == rotation_op]
    dims = rotated["data"]["baseData"]["properties"]
    assert dims["outcome"] == "ok" and dims["rotated"] == "True" and dims["gatewayId"] == devstack.gateway_id(GATEWAY)
    assert not rotated["data"]["baseData"]["message"].startswith("{")
    targets = [m for m in messages(items, "rotation.target") if m["tags"].get("ai.operation.id") == rotation_op]
    assert {t["data"]["baseData"]["properties"]["cluster"] for t in targets} == {
        t["cluster"] for t in devstack.targets()[GATEWAY]}
    (failed,) = [m for m in messages(items, "rotation.reconcile") if m["tags"].get("ai.operation.id") == failed_op]
    assert failed["data"]["baseData"]["properties"]["outcome"] == "failed"
    assert failed["data"]["baseData"]["properties"]["errorClass"] == "AccessDenied"
    sweep_reconciles = [m for m in messages(items, "rotation.reconcile") if m["tags"].get("ai.operation.id") == sweep_op]
    assert len(sweep_reconciles) == len(devstack.targets())  # from the sweep's pool threads, same operation
    (sweep,) = messages(items, "rotation.sweep")
    assert sweep["tags"].get("ai.operation.id") == sweep_op and sweep["data"]["baseData"]["properties"]["outcome"] == "ok"

    # dependencies: ARM, Key Vault and the Kubernetes API servers, in the invocation's operation
    assert dependencies_to(items, stack.arm_url, rotation_op)
    assert dependencies_to(items, stack.keyvault_url, rotation_op)
    kube = [d for c in stack.clusters for d in dependencies_to(items, c.server, rotation_op)]
    assert kube and all(d["success"] for d in kube)
    arm_403 = dependencies_to(items, stack.arm_url, failed_op)
    # azure-core leaves a 4xx HTTP span's status unset, so Application Insights marks it successful:
    # the workbook reads resultCode, not success, and the SDK operation's own span carries the failure.
    assert [d["resultCode"] for d in arm_403] == ["403"]
    operations = [i["data"]["baseData"] for i in of_type(items, "RemoteDependencyData")
                  if i["tags"].get("ai.operation.id") == failed_op and i["data"]["baseData"]["type"] == "InProc"]
    assert ("GatewayOperations.generate_token", False) in [(d["name"], d["success"]) for d in operations]

    # metrics
    left = [p for p in metric_points(items, telemetry.HOURS_LEFT) if p["properties"].get("gatewayId")]
    assert {p["properties"]["gatewayId"] for p in left} >= {devstack.gateway_id(GATEWAY)}
    assert all(p["value"] > 0 for p in left)
    outcomes = {(p["properties"].get("outcome"), p["properties"].get("errorClass"))
                for p in metric_points(items, telemetry.RECONCILES)}
    assert ("failed", "AccessDenied") in outcomes and ("ok", "") in outcomes

    # no token reaches Application Insights (the rotated ones included)
    world.register_vault_values()
    assert leakcheck.find_leaks([json.dumps(i) for i in items]) == []

    # everything the alerts and the workbook read is on the wire
    seen_dims = {k for i in items for k in i["data"]["baseData"].get("properties", {})}
    seen_metrics = {m["name"] for i in of_type(items, "MetricData") for m in i["data"]["baseData"]["metrics"]}
    queried_dims, queried_metrics = monitoring_reads()
    assert queried_dims and queried_dims <= seen_dims, queried_dims - seen_dims
    assert queried_metrics and queried_metrics <= seen_metrics, queried_metrics - seen_metrics


def monitoring_reads() -> tuple[set[str], set[str]]:
    """customDimensions fields and metric names infra/modules/alerts.bicep and infra/workbook.json use."""
    alerts = (ROOT / "infra" / "modules" / "alerts.bicep").read_text(encoding="utf-8")
    workbook = json.loads((ROOT / "infra" / "workbook.json").read_text(encoding="utf-8"))
    kql = alerts + "\n".join(json.dumps(item) for item in workbook["items"])
    dims = set(re.findall(r"customDimensions\.(\w+)", kql)) | set(re.findall(r"customDimensions\[[\\]*[\"'](\w+)", kql))
    metrics = set(re.findall(r"metricName: '(\w+)'", alerts)) | set(re.findall(r"name == [\\]*\"(rotation_\w+)", kql))
    return dims, metrics

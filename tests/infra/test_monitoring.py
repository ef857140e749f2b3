"""Portal monitoring: the alert rules and the workbook read only the signals the app sends.

Those signals are rotation/telemetry.py's: `rotation.*` trace records whose fields are
customDimensions (with telemetryMode OpenTelemetry), and the custom metrics it names. That they are
really on the wire is tests/worker/test_telemetry_wire.py (the exporter's output, captured); here the
templates are checked against the same names. Bicep rules (Azure/bicep BCP120 / BCP177 / BCP178): rule
names and locations come from parameters and literals only.
"""

from __future__ import annotations

import importlib.util
import json
import re
from typing import Any

from rotation import telemetry
from tests.infra.templates import INFRA, MAIN, MODULES, body, one_resource, parse, text

ALERTS = MODULES / "alerts.bicep"

# Every field rotation/app/records.py, rotation/triggers.py and rotation/telemetry.py put on a record.
RECORD_FIELDS = frozenset({
    "event", "gatewayId", "service", "gateway", "rotated", "fingerprint", "keyType", "expiresAt", "reason",
    "dryRun", "durationMs", "outcome", "failed", "errorClass", "error", "cluster", "namespace", "secret",
    "restarted", "hoursLeft", "gateways", "schedule", "ok", "why",
})
METRICS = frozenset({telemetry.RECONCILES, telemetry.TARGETS, telemetry.HOURS_LEFT, telemetry.SWEEPS})


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {n: body(r) for n, r in parse(ALERTS)["resources"].items() if r["type"] == kind}


def variables() -> dict[str, str]:
    return {n: v["value"] for n, v in parse(ALERTS)["variables"].items() if isinstance(v["value"], str)}


def log_rules() -> dict[str, dict[str, Any]]:
    return resources("Microsoft.Insights/scheduledQueryRules")


def metric_rules() -> dict[str, dict[str, Any]]:
    return resources("Microsoft.Insights/metricAlerts")


def rule_query(rule: dict[str, Any]) -> str:
    query: str = rule["properties"]["criteria"]["allOf"][0]["query"]
    return variables().get(query, query)


def dimensions_read(kql: str) -> set[str]:
    return set(re.findall(r"customDimensions\.(\w+)", kql))


def test_failed_rotation_alert_sees_every_failed_outcome() -> None:
    rule = log_rules()["failedRotation"]
    kql = rule_query(rule)
    assert '"rotation.reconcile"' in kql and '"rotation.sweep"' in kql and 'outcome == "failed"' in kql
    assert "summarize failures = count() by gatewayId, errorClass" in kql
    criterion = rule["properties"]["criteria"]["allOf"][0]
    assert criterion["metricMeasureColumn"] == "failures" and criterion["threshold"] == 0
    assert {d["name"] for d in criterion["dimensions"]} == {"gatewayId", "errorClass"}
    assert rule["properties"]["scopes"] == ["applicationInsightsId"]
    # the classic path (no OpenTelemetry) has the fields only in the `event k=v ...` message
    assert 'extract(@" outcome=(\\w+)", 1, message)' in kql


def test_expiry_alert_is_a_metric_alert_on_hours_left() -> None:
    (rule,) = metric_rules().values()
    (criterion,) = rule["properties"]["criteria"]["allOf"]
    assert criterion["metricName"] == telemetry.HOURS_LEFT
    assert criterion["metricNamespace"] == "azure.applicationinsights"
    assert criterion["operator"] == "LessThan" and criterion["threshold"] == "expiryThresholdHours"
    assert criterion["timeAggregation"] == "Minimum" and criterion["skipMetricValidation"] is True
    assert [d["name"] for d in criterion["dimensions"]] == ["gatewayId"]
    assert rule["location"] == "global" and rule["properties"]["scopes"] == ["applicationInsightsId"]
    assert parse(ALERTS)["parameters"]["expiryThresholdHours"]["default"] == 48
    main_alerts = next(m for m in parse(MAIN)["modules"].values() if m["detail"]["path"].endswith("alerts.bicep"))
    assert body(main_alerts)["params"]["expiryThresholdHours"] == 48


def test_rule_names_and_locations_are_deploy_time_values() -> None:
    for rule in [*log_rules().values(), *metric_rules().values()]:
        assert re.fullmatch(r"\$\{namePrefix\}-[a-z-]+", rule["name"]), rule["name"]
    assert [r["location"] for r in log_rules().values()] == ["location", "location"]


def test_there_is_a_dead_letter_alert() -> None:
    alert = body(one_resource(MODULES / "deadletter-alert.bicep", "Microsoft.Insights/metricAlerts"))
    criterion = alert["properties"]["criteria"]["allOf"][0]
    assert criterion["metricName"] == "DeadLetteredCount"
    assert criterion["metricNamespace"] == "Microsoft.EventGrid/systemTopics"
    assert criterion["operator"] == "GreaterThan" and criterion["threshold"] == 0
    assert alert["properties"]["scopes"] == ["systemTopicId"]


def test_alerts_notify_the_action_group_parameter() -> None:
    assert "actionGroupId" in parse(MAIN)["parameters"]
    for rule in log_rules().values():
        assert rule["properties"]["actions"]["actionGroups"] == "logActions"
    for rule in metric_rules().values():
        assert rule["properties"]["actions"] == "actions"
    assert "actionGroupId" in text(body(one_resource(MODULES / "deadletter-alert.bicep", "Microsoft.Insights/metricAlerts")))


def test_alert_queries_read_only_recorded_fields() -> None:
    for name, rule in log_rules().items():
        unknown = dimensions_read(rule_query(rule)) - RECORD_FIELDS
        assert unknown == set(), f"{name} reads fields the app does not record: {unknown}"


def workbook() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((INFRA / "workbook.json").read_text(encoding="utf-8"))
    return data


def workbook_queries() -> dict[str, str]:
    return {item["content"]["title"]: item["content"]["query"] for item in workbook()["items"] if item["type"] == 3}


def test_workbook_is_loaded_by_the_template() -> None:
    source = (MODULES / "workbook.bicep").read_text(encoding="utf-8")
    assert "loadTextContent('../workbook.json')" in source
    assert workbook()["version"] == "Notebook/1.0"


def test_workbook_has_the_views() -> None:
    queries = workbook_queries()
    assert f'"{telemetry.HOURS_LEFT}"' in queries["Token hours left per gateway"]
    assert f'"{telemetry.RECONCILES}"' in queries["Rotations over time"] and "bin(timestamp" in queries["Rotations over time"]
    assert "by errorClass, gatewayId" in queries["Failures by error class"]
    assert "by cluster" in queries["Failures per cluster"] and '"failed"' in queries["Failures per cluster"]
    assert queries["Dependencies: ARM, Key Vault, Kubernetes"].startswith("dependencies")
    assert "resultCode" in queries["Dependencies: ARM, Key Vault, Kubernetes"]  # a 4xx span stays success=true


def test_workbook_reads_only_recorded_fields_and_metrics() -> None:
    for title, kql in workbook_queries().items():
        unknown = dimensions_read(kql) - RECORD_FIELDS
        assert unknown == set(), f"{title} reads fields the app does not record: {unknown}"
        metrics = set(re.findall(r'name == "(\w+)"', kql))
        assert metrics <= METRICS, f"{title} reads metrics the app does not send: {metrics - METRICS}"
        assert kql.count("(") == kql.count(")"), f"{title}: unbalanced parentheses"


def test_workbook_queries_target_application_insights() -> None:
    for item in workbook()["items"]:
        if item["type"] == 3:
            assert item["content"]["resourceType"] == "microsoft.insights/components"
            assert item["content"]["timeContextFromParameter"] == "TimeRange"


def test_the_readme_picture_is_the_workbook_of_today() -> None:
    """docs/workbook-layout.svg is what scripts/render_workbook.py draws from infra/workbook.json."""
    spec = importlib.util.spec_from_file_location("render_workbook", INFRA.parent / "scripts" / "render_workbook.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    drawn = module.render(workbook())
    assert (INFRA.parent / "docs" / "workbook-layout.svg").read_text(encoding="utf-8") == drawn, (
        "run: python scripts/render_workbook.py")
    for title in workbook_queries():
        assert f">{title}<" in drawn.replace("&amp;", "&")


def test_opentelemetry_is_switched_by_one_parameter_and_host_json_leaves_it_alone() -> None:
    """The worker configures the distro when PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY is true
    (azure_functions_runtime/handle_event.py `worker_init_request`); the host's mode comes from
    host.json `telemetryMode`, which the app setting `AzureFunctionsJobHost__telemetryMode` overrides.
    host.json sets no mode, so `enableOpenTelemetry=false` really gives the classic path."""
    host = json.loads((INFRA.parent / "host.json").read_text(encoding="utf-8"))
    assert "telemetryMode" not in host
    app = (MODULES / "function-app.bicep").read_text(encoding="utf-8")
    switched = app[app.index("var openTelemetrySettings = enableOpenTelemetry ?"):]
    assert "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'" in switched.split("}")[0]
    assert "AzureFunctionsJobHost__telemetryMode: 'OpenTelemetry'" in switched.split("}")[0]
    assert parse(MAIN)["parameters"]["enableOpenTelemetry"]["default"] is True


def test_custom_metric_dimensions_reach_the_metrics_store() -> None:
    """The expiry alert splits rotation_token_hours_left by gatewayId. Microsoft's "Metrics in Application
    Insights" (MicrosoftDocs/azure-monitor-docs app/metrics-overview.md, "Pricing models"): custom metrics keep
    their dimensions in the log store, but only a pre-aggregate *without* dimensions goes to the metrics store
    unless "Enable alerting on custom metric dimensions" is selected. That switch is the component property
    CustomMetricsOptedInType = WithDimensions (Azure/bicep#6595, values listed by the Application Insights team;
    not in the REST spec, hence the justified BCP037 suppression). docs/deploy.md tells how to check it."""
    component = body(one_resource(MODULES / "monitoring.bicep", "Microsoft.Insights/components"))
    assert component["properties"]["CustomMetricsOptedInType"] == "WithDimensions"
    source = (MODULES / "monitoring.bicep").read_text(encoding="utf-8").splitlines()
    line = next(i for i, s in enumerate(source) if "CustomMetricsOptedInType:" in s)
    assert source[line - 1].strip().startswith("#disable-next-line BCP037 //")
    deploy = (INFRA.parent / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert "CustomMetricsOptedInType" in deploy and "With dimensions" in deploy


def test_metric_alert_criterion_has_what_the_metric_alerts_api_requires() -> None:
    """Microsoft.Insights/metricAlerts@2018-03-01 (azure-rest-api-specs monitor/.../2018-03-01/
    metricAlert_API.json): MultiMetricCriteria requires criterionType, name, metricName, timeAggregation;
    StaticThresholdCriterion adds operator and threshold; `skipMetricValidation` "allows creating an alert rule
    on a custom metric that isn't yet emitted" — without it the first deployment, before the app has sent
    rotation_token_hours_left once, is refused ("The metric names were not found", MicrosoftDocs/azure-docs#16061).
    OpenTelemetry custom metrics live in the namespace azure.applicationinsights."""
    (rule,) = metric_rules().values()
    criteria = rule["properties"]["criteria"]
    odata_type = criteria.get("'odata.type'", criteria.get("odata.type"))  # pycep keeps a quoted key's quotes
    assert odata_type == "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria"
    (criterion,) = rule["properties"]["criteria"]["allOf"]
    for required in ("criterionType", "name", "metricName", "timeAggregation", "operator", "threshold"):
        assert required in criterion, required
    assert criterion["criterionType"] == "StaticThresholdCriterion"
    assert criterion["timeAggregation"] in {"Average", "Count", "Minimum", "Maximum", "Total"}
    assert criterion["skipMetricValidation"] is True
    assert criterion["metricNamespace"] == "azure.applicationinsights"
    for prop in ("severity", "enabled", "scopes", "evaluationFrequency", "windowSize", "criteria"):
        assert prop in rule["properties"], prop


def kql_extract(kql: str, field: str) -> re.Pattern[str]:
    """The regex a query's `extract(@" field=(...)", 1, message)` applies (RE2 and Python agree on these)."""
    match = re.search(r'extract\(@"( ' + field + r'=\([^"]*\))", 1, message\)', kql)
    assert match, f"the query does not extract {field} from the message"
    return re.compile(match.group(1))


def emitted_message(event: str, fields: dict[str, object]) -> str:
    """What rotation.telemetry.emit really logs: the classic path forwards only this message."""
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    telemetry.log.addHandler(handler)
    level = telemetry.log.level
    telemetry.log.setLevel(logging.INFO)
    try:
        telemetry.emit(event, fields)
    finally:
        telemetry.log.removeHandler(handler)
        telemetry.log.setLevel(level)
    (record,) = records
    return record.getMessage()


GATEWAY = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ApiManagement/service/apim/gateways/gw-1"


def test_expiry_alert_without_opentelemetry_is_a_log_alert_on_the_sweep_records() -> None:
    """With enableOpenTelemetry false rotation/telemetry.py records no metric (it needs OpenTelemetry loaded), so
    the metric alert would never fire: the template swaps in a log alert over the sweep's rotation.expiry records
    (rotation/app/records.py), read from the message the classic path forwards. The regexes are checked against what
    telemetry.emit really writes."""
    metric = resources("Microsoft.Insights/metricAlerts")
    assert parse(ALERTS)["resources"]["expiringToken"]["config"]["condition"] == "openTelemetry"
    assert parse(ALERTS)["resources"]["expiringTokenFromLogs"]["config"]["condition"] == {
        "operator": {"type": "not", "operands": {"bool_value": "openTelemetry"}}}
    assert set(metric) == {"expiringToken"}
    rule = log_rules()["expiringTokenFromLogs"]
    kql = rule_query(rule)
    assert 'where event == "rotation.expiry"' in kql and "arg_max(timestamp, hoursLeft) by gatewayId" in kql
    criterion = rule["properties"]["criteria"]["allOf"][0]
    assert criterion["metricMeasureColumn"] == "hoursLeft" and criterion["operator"] == "LessThan"
    assert criterion["threshold"] == "expiryThresholdHours"
    assert [d["name"] for d in criterion["dimensions"]] == ["gatewayId"]
    main_alerts = next(m for m in parse(MAIN)["modules"].values() if m["detail"]["path"].endswith("alerts.bicep"))
    assert body(main_alerts)["params"]["openTelemetry"] == "enableOpenTelemetry"

    message = emitted_message("rotation.expiry", {"gatewayId": GATEWAY, "expiresAt": "2030-01-01T00:00:00+00:00",
                                                  "hoursLeft": 31.5})
    assert re.match(r"^(rotation\.\w+) ", message)
    gateway = kql_extract(kql, "gatewayId").search(message)
    hours = kql_extract(kql, "hoursLeft").search(message)
    assert gateway and gateway.group(1) == GATEWAY
    assert hours and float(hours.group(1)) == 31.5
    negative = emitted_message("rotation.expiry", {"gatewayId": GATEWAY, "hoursLeft": -2.0})
    found = kql_extract(kql, "hoursLeft").search(negative)
    assert found and float(found.group(1)) == -2.0


def test_failed_alert_reads_the_classic_message_the_app_writes() -> None:
    kql = rule_query(log_rules()["failedRotation"])
    message = emitted_message("rotation.reconcile", {"gatewayId": GATEWAY, "outcome": "failed",
                                                     "errorClass": "AccessDenied", "reason": "event"})
    outcome = kql_extract(kql, "outcome").search(message)
    error_class = kql_extract(kql, "errorClass").search(message)
    gateway = kql_extract(kql, "gatewayId").search(message)
    assert outcome and outcome.group(1) == "failed"
    assert error_class and error_class.group(1) == "AccessDenied"
    assert gateway and gateway.group(1) == GATEWAY


def test_workbook_hours_left_view_works_without_opentelemetry_too() -> None:
    """Without OpenTelemetry there is no rotation_token_hours_left metric (see the test above), so the view also
    reads the sweep's rotation.expiry records and keeps the latest value per gateway from either source (no
    double counting: arg_max, not a sum). Its regexes are checked against what telemetry.emit writes."""
    kql = workbook_queries()["Token hours left per gateway"]
    assert f'name == "{telemetry.HOURS_LEFT}"' in kql and 'where event == "rotation.expiry"' in kql
    assert "| union (traces" in kql and "summarize arg_max(timestamp, hours) by gatewayId" in kql
    message = emitted_message("rotation.expiry", {"gatewayId": GATEWAY, "hoursLeft": 12.0})
    gateway = kql_extract(kql, "gatewayId").search(message)
    hours = kql_extract(kql, "hoursLeft").search(message)
    assert gateway and gateway.group(1) == GATEWAY
    assert hours and float(hours.group(1)) == 12.0

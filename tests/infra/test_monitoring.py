"""Portal monitoring: alert rules and the workbook query only the structured log fields of DESIGN section 7."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.infra.templates import INFRA, LOG_FIELDS, MAIN, MODULES, body, one_resource, parse, text

ALERTS = MODULES / "alerts.bicep"


def scheduled_queries() -> dict[str, dict[str, Any]]:
    tree = parse(ALERTS)
    return {n: body(r) for n, r in tree["resources"].items() if r["type"] == "Microsoft.Insights/scheduledQueryRules"}


def alert_query(rule: dict[str, Any]) -> str:
    """The KQL of a rule with the template's variables substituted."""
    variables = {n: v["value"] for n, v in parse(ALERTS)["variables"].items() if isinstance(v["value"], str)}
    query: str = rule["properties"]["criteria"]["allOf"][0]["query"]
    return re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), "48"), query).replace("\\n", "\n")


def fields_read(kql: str) -> set[str]:
    return set(re.findall(r"\bd\.(\w+)", kql))


def test_there_is_a_failed_rotation_alert() -> None:
    rules = [r for r in scheduled_queries().values() if "rotation.target" in alert_query(r) and '"failed"' in alert_query(r)]
    assert len(rules) == 1
    kql = alert_query(rules[0])
    assert '"timeout"' in kql and "rotation.reconcile" in kql
    assert rules[0]["properties"]["scopes"] == ["applicationInsightsId"]


def test_there_is_a_48_hour_expiry_alert() -> None:
    rules = [r for r in scheduled_queries().values() if "rotation.expiry" in alert_query(r)]
    assert len(rules) == 1
    kql = alert_query(rules[0])
    assert "hoursLeft < 48" in kql
    assert "expiresAt" in kql and "arg_max" in kql
    assert parse(ALERTS)["parameters"]["expiryThresholdHours"]["default"] == 48
    main_alerts = next(m for m in parse(MAIN)["modules"].values() if m["detail"]["path"].endswith("alerts.bicep"))
    assert body(main_alerts)["params"]["expiryThresholdHours"] == 48


def test_there_is_a_dead_letter_alert() -> None:
    alert = body(one_resource(MODULES / "deadletter-alert.bicep", "Microsoft.Insights/metricAlerts"))
    criterion = alert["properties"]["criteria"]["allOf"][0]
    assert criterion["metricName"] == "DeadLetteredCount"
    assert criterion["metricNamespace"] == "Microsoft.EventGrid/systemTopics"
    assert criterion["operator"] == "GreaterThan" and criterion["threshold"] == 0
    assert alert["properties"]["scopes"] == ["systemTopicId"]


def test_alerts_notify_the_action_group_parameter() -> None:
    assert "actionGroupId" in parse(MAIN)["parameters"]
    for rule in scheduled_queries().values():
        assert rule["properties"]["actions"]["actionGroups"] == "actions"
    assert "actionGroupId" in text(body(one_resource(MODULES / "deadletter-alert.bicep", "Microsoft.Insights/metricAlerts")))


def test_alert_queries_read_only_logged_fields() -> None:
    for name, rule in scheduled_queries().items():
        unknown = fields_read(alert_query(rule)) - LOG_FIELDS
        assert unknown == set(), f"{name} reads fields the app does not log: {unknown}"


def workbook() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((INFRA / "workbook.json").read_text(encoding="utf-8"))
    return data


def workbook_queries() -> dict[str, str]:
    return {item["content"]["title"]: item["content"]["query"] for item in workbook()["items"] if item["type"] == 3}


def test_workbook_is_loaded_by_the_template() -> None:
    source = (MODULES / "workbook.bicep").read_text(encoding="utf-8")
    assert "loadTextContent('../workbook.json')" in source
    assert workbook()["version"] == "Notebook/1.0"


def test_workbook_has_the_three_views() -> None:
    queries = workbook_queries()
    assert "rotation.reconcile" in queries["Rotations over time"] and "bin(timestamp" in queries["Rotations over time"]
    assert "expiresAt" in queries["Token expiry per gateway"] and "gatewayId" in queries["Token expiry per gateway"]
    assert "by cluster" in queries["Failures per cluster"] and '"failed"' in queries["Failures per cluster"]


def test_workbook_reads_only_logged_fields() -> None:
    for title, kql in workbook_queries().items():
        unknown = fields_read(kql) - LOG_FIELDS
        assert unknown == set(), f"{title} reads fields the app does not log: {unknown}"
        assert kql.count("(") == kql.count(")"), f"{title}: unbalanced parentheses"


def test_workbook_queries_target_application_insights() -> None:
    for item in workbook()["items"]:
        if item["type"] == 3:
            assert item["content"]["resourceType"] == "microsoft.insights/components"
            assert item["content"]["timeContextFromParameter"] == "TimeRange"

"""Hostile names in HTTP routes, events and the registry are rejected before any outbound call.

A name reaches ARM URLs, Key Vault secret names and Kubernetes object paths; `..`, `/`, `%2F`,
control characters, non-ASCII and over-long values must stop at validation. Each test runs the real
handlers against HTTPS fakes and a counting proxy as the cluster, and asserts that ARM, Key Vault and
the cluster saw nothing at all.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.functions.conftest import deliver, http
from tests.security.conftest import GATEWAY_ID, SERVICE_ID, App, registry

HOSTILE_NAMES = ["..", ".", "/", "a/b", "%2F", "gw-1%2F..%2Fx", "..%2f", "g" * 300, "gw-ü", "Ⅻ", "gw\x00",
                 "gw 1", "gw-1/../gw-2", "\\", "gw-1;", "$(id)", ""]
NEWLINE = "gw-1\n"  # a '$' anchor alone would let this through: names are checked with fullmatch


def route_cases() -> list[Any]:
    cases: list[Any] = []
    for name in [*HOSTILE_NAMES, NEWLINE]:
        value = name.values[0] if hasattr(name, "values") else name
        marks = name.marks if hasattr(name, "marks") else ()
        cases.append(pytest.param("service", value, marks=marks, id=f"service-{value[:12]!r}"))
        cases.append(pytest.param("gateway", value, marks=marks, id=f"gateway-{value[:12]!r}"))
    return cases


@pytest.mark.parametrize(("which", "name"), route_cases())
@pytest.mark.parametrize(("function", "method", "suffix"), [
    ("rotate", "POST", "/rotate"), ("get_gateway", "GET", ""), ("roll_keys", "POST", "/roll-keys")])
def test_hostile_route_names_are_400_before_any_call(app: App, which: str, name: str, function: str,
                                                     method: str, suffix: str) -> None:
    route = {"service": "apim-sec", "gateway": "gw-1", which: name}
    status, body = http(function, method, f"http://localhost/api/gateways/x/y{suffix}", route,
                        {"force": True} if function == "rotate" else b"")
    assert status == 400, body
    assert "invalid" in body["error"]
    app.assert_no_outbound()


def _event(**fields: Any) -> dict[str, Any]:
    event = {"id": "evt-1", "topic": SERVICE_ID, "subject": "/gateways/gw-1/pod-1",
             "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
             "data": {"gatewayInfo": {"gatewayId": "gw-1"},
                      "tokenInfo": {"expiresAtUtc": "2026-11-29T08:56:00.0000000Z"}}}
    event.update(fields)
    return event


@pytest.mark.parametrize("name", [*HOSTILE_NAMES, "gw-1\n"])
@pytest.mark.parametrize("where", ["gatewayId", "subject", "fullId", "topic"])
def test_hostile_event_names_are_acknowledged_without_any_call(app: App, name: str, where: str) -> None:
    if where == "gatewayId" and name == "":
        pytest.skip("an empty gatewayId falls back to the subject's gateway: a valid event")
    if where == "subject" and name.startswith("gw-1/"):
        pytest.skip("the subject's second segment is 'gw-1' (the rest is the instance): a valid event")
    if where == "gatewayId":
        event = _event(data={"gatewayInfo": {"gatewayId": name}})
    elif where == "subject":
        event = _event(subject=f"/gateways/{name}/pod-1", data={})
    elif where == "fullId":
        event = _event(data={"gatewayInfo": {"gatewayId": f"{SERVICE_ID}/gateways/{name}"}})
    else:
        event = _event(topic=SERVICE_ID.replace("apim-sec", name))
    deliver(event)  # returns: a permanent problem is logged and acknowledged, never retried
    app.assert_no_outbound()


REGISTRY_FIELDS = ["namespace", "secret", "key", "restart", "gateway", "service", "cluster", "keyVaultSecret"]


def _hostile_registry(field: str, name: str, server: str, ca: bytes) -> dict[str, Any]:
    doc = registry(server, ca)
    gateway, target = doc["gateways"][0], doc["gateways"][0]["targets"][0]
    if field in ("namespace", "secret", "key"):
        target[field] = name
    elif field == "restart":
        target["restart"] = [f"deployment/{name}"]
    elif field == "gateway":
        gateway["id"] = f"{SERVICE_ID}/gateways/{name}"
    elif field == "service":
        gateway["id"] = GATEWAY_ID.replace("apim-sec", name)
    elif field == "cluster":
        doc["clusters"][0]["name"] = name
        target["cluster"] = name
    else:
        gateway["keyVaultSecret"] = name
    return doc


def registry_cases() -> list[Any]:
    cases = [pytest.param(f, n, id=f"{f}-{n[:12]!r}") for f in REGISTRY_FIELDS
             for n in ["..", "a/b", "%2F", "x" * 300, "ns-ü", "a\x00b"]
             if not (f == "key" and n == "..")]  # a data key travels in the body, not a path
    # Kubernetes object names and Key Vault secret names are lowercase DNS-style (no '_').
    cases += [pytest.param(f, "UPPER_case", id=f"{f}-UPPER_case")
              for f in ("namespace", "secret", "restart", "keyVaultSecret")]
    cases += [pytest.param(f, "gw-1\n", id=f"{f}-newline")
              for f in ("namespace", "secret", "gateway", "service", "restart")]
    return cases


@pytest.mark.parametrize(("field", "name"), registry_cases())
def test_hostile_registry_names_make_the_app_unhealthy_without_any_call(
        app: App, monkeypatch: pytest.MonkeyPatch, field: str, name: str) -> None:
    doc = _hostile_registry(field, name, app.sentinel.url, app.fakes.ca.ca_pem)
    monkeypatch.setenv("ROTATION_REGISTRY", json.dumps(doc))
    from rotation import bootstrap

    bootstrap.reset()
    status, body = http("health", "GET", "http://localhost/api/health")
    assert status == 503 and "ROTATION_REGISTRY" in body["error"], body
    status, body = http("rotate", "POST", "http://localhost/api/gateways/apim-sec/gw-1/rotate",
                        {"service": "apim-sec", "gateway": "gw-1"})
    assert status == 500 and "misconfigured" in body["error"]
    deliver(_event())
    app.assert_no_outbound()

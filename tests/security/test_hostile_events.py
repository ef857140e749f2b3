"""Events are input from outside: a hostile topic/source, subject or gatewayId must not reach another
service's gateway of the same name (pure: parse_event + Registry.find_by_gateway).

ARM resource ids compare case-insensitively (Microsoft Learn, "Resource naming and tagging decision
guide" / ARM template `resourceId` docs: resource ids are case-insensitive), so case games match the
same service and nothing else; another subscription's or resource group's service of the same name
never matches.
"""

from __future__ import annotations

import json

import pytest

from rotation.core.errors import InvalidEvent
from rotation.core.events import parse_event
from rotation.core.registry import load_registry
from tests.samples import registry

REGISTRY = load_registry(json.dumps(registry()))
REF = REGISTRY.gateways[0].ref
SERVICE = REF.service_id
OTHER_SUB = SERVICE.replace(SERVICE.split("/")[2], "99999999-9999-4999-8999-999999999999")
OTHER_RG = SERVICE.replace("/resourceGroups/" + SERVICE.split("/")[4] + "/", "/resourceGroups/rg-evil/")


def _event(topic: str | None, gateway: object, *, cloud: bool = False) -> dict[str, object]:
    event: dict[str, object] = {"id": "e-1", "subject": f"/gateways/{REF.gateway}/pod-1",
                                "data": {"gatewayInfo": {"gatewayId": gateway}}}
    if cloud:
        event.update(specversion="1.0", type="Microsoft.ApiManagement.GatewayTokenNearExpiry")
        if topic is not None:
            event["source"] = topic
    else:
        event["eventType"] = "Microsoft.ApiManagement.GatewayTokenNearExpiry"
        if topic is not None:
            event["topic"] = topic
    return event


@pytest.mark.parametrize("cloud", [False, True])
@pytest.mark.parametrize(("topic", "gateway"), [
    (OTHER_SUB, REF.gateway),                          # another subscription's service of the same name
    (OTHER_RG, REF.gateway),                           # another resource group's
    (None, f"{OTHER_SUB}/gateways/{REF.gateway}"),      # no topic: the gateway id names the other service
])
def test_another_service_of_the_same_name_never_matches(topic: str | None, gateway: str, cloud: bool) -> None:
    parsed = parse_event(_event(topic, gateway, cloud=cloud))
    assert REGISTRY.find_by_gateway(parsed.service_id, parsed.gateway) is None


def test_case_games_match_only_the_same_service() -> None:
    parsed = parse_event(_event(SERVICE.upper(), REF.gateway.upper()))
    assert REGISTRY.find_by_gateway(parsed.service_id, parsed.gateway) is REGISTRY.gateways[0]


@pytest.mark.parametrize(("topic", "gateway", "message"), [
    (SERVICE, f"{OTHER_SUB}/gateways/{REF.gateway}", "different services"),  # gatewayId of ANOTHER service
    (SERVICE + "/", REF.gateway, "not an APIM service id"),
    (SERVICE + "/gateways/x", REF.gateway, "not an APIM service id"),
    (SERVICE, REF.gateway + "/../x", "invalid gateway name"),
    (SERVICE, " " + REF.gateway, "invalid gateway name"),
    (SERVICE, "g" * 1_000_000, "invalid gateway name"),                 # oversized
])
def test_hostile_fields_are_invalid_events(topic: str, gateway: object, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message) as caught:
        parse_event(_event(topic, gateway))
    assert len(str(caught.value)) < 400  # an oversized value is never echoed whole

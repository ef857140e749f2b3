from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from rotation.core.errors import IgnoredEvent, InvalidEvent
from rotation.core.events import EventKind, parse_event, parse_time
from tests.samples import SERVICE_ID, gateway_id, reference_event

EXPIRY = datetime(2026, 11, 26, 8, 56, tzinfo=UTC)


def test_reference_event_grid_sample() -> None:
    event = parse_event(reference_event("near-expiry.eventgrid.json"))
    assert event.kind is EventKind.NEAR_EXPIRY
    assert (event.gateway, event.service_id) == ("onprem-gw", SERVICE_ID)
    assert event.instance == "onprem-gw-7c9d8f6b5-x2k4q"
    assert event.expires_at == EXPIRY
    assert "near expiry" in event.reason and event.event_id in event.reason


def test_reference_cloudevent_sample() -> None:
    event = parse_event(reference_event("expired.cloudevent.json"))
    assert event.kind is EventKind.EXPIRED
    assert (event.gateway, event.service_id, event.expires_at) == ("onprem-gw", SERVICE_ID, EXPIRY)


def _eg(data: dict[str, Any], **over: Any) -> dict[str, Any]:
    base = {"id": "e1", "topic": SERVICE_ID, "subject": "/gateways/gw-1/pod-a",
            "eventType": EventKind.NEAR_EXPIRY.value, "data": data}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _ce(data: dict[str, Any], **over: Any) -> dict[str, Any]:
    base = {"specversion": "1.0", "id": "e1", "source": SERVICE_ID, "subject": "/gateways/gw-1/pod-a",
            "type": EventKind.EXPIRED.value, "data": data}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize("make", [_eg, _ce])
@pytest.mark.parametrize(
    ("data", "gateway", "expires"),
    [
        ({"gatewayInfo": {"gatewayId": "gw-1"}, "tokenInfo": {"expiresAtUtc": "2026-11-26T08:56:00.0000000Z"}},
         "gw-1", EXPIRY),
        ({"gatewayInfo": {"gatewayId": gateway_id("gw-1")}, "tokenInfo": {"expiredAtUtc": "2026-11-26T08:56:00Z"}},
         "gw-1", EXPIRY),
        ({"gateway": {"id": gateway_id("gw-1")}}, "gw-1", None),
        ({"gateway": {"gatewayId": "gw-1"}}, "gw-1", None),
        ({"gatewayId": "gw-1"}, "gw-1", None),
        ({}, "gw-1", None),                                      # from the subject
        ({"tokenInfo": {"expiresAtUtc": "2026-11-26T08:56:00.1234567+00:00"}}, "gw-1",
         EXPIRY.replace(microsecond=123456)),
    ],
)
def test_every_spelling(make: Any, data: dict[str, Any], gateway: str, expires: datetime | None) -> None:
    event = parse_event(make(data))
    assert (event.gateway, event.service_id, event.expires_at) == (gateway, SERVICE_ID, expires)


def test_service_comes_from_a_full_gateway_id_when_topic_missing() -> None:
    event = parse_event(_eg({"gatewayInfo": {"gatewayId": gateway_id("gw-9")}}, topic=None, subject=None))
    assert (event.gateway, event.service_id) == ("gw-9", SERVICE_ID)


def test_no_topic_and_bare_name_matches_by_name_only() -> None:
    event = parse_event(_eg({"gatewayInfo": {"gatewayId": "gw-9"}}, topic=None))
    assert event.service_id is None


def test_other_event_types_are_ignored_not_errors() -> None:
    with pytest.raises(IgnoredEvent, match="not a gateway token event"):
        parse_event(_eg({}, eventType="Microsoft.Storage.BlobCreated"))
    with pytest.raises(IgnoredEvent):
        parse_event(_ce({}, type="Microsoft.ApiManagement.APICreated"))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "must be a JSON object"),
        ({}, "no 'eventType'"),
        ({"specversion": "1.0", "id": "x"}, "no 'type'"),
        (_eg({}, id=None), "no 'id'"),
        (_eg("data"), "'data' must be an object"),  # type: ignore[arg-type]
        (_eg({}, topic="/subscriptions/x/resourceGroups/y/providers/Microsoft.Web/sites/z"), "not an APIM service id"),
        (_eg({}, topic=42), "not an APIM service id"),
        (_eg({}, subject="/apis/x"), "no gateway"),
        (_eg({"gatewayInfo": {"gatewayId": ".."}}), "invalid gateway name"),
        (_eg({"gatewayInfo": {"gatewayId": "a%2Fb"}}), "invalid gateway name"),
        (_eg({"gatewayInfo": {"gatewayId": "gw/../../x"}}), "invalid gateway name"),
        (_eg({}, subject="/gateways/ünïcode/pod"), "invalid gateway name"),
        (_eg({"gatewayInfo": {"gatewayId": gateway_id("gw-1").replace("contoso-apim", "other")}}),
         "different services"),
        (_eg({"gatewayInfo": {"gatewayId": "gw-1"}}, topic=SERVICE_ID.replace("rg-apim", "rg apim")),
         "not an APIM service id|invalid resource group"),
        (_eg({"tokenInfo": {"expiresAtUtc": "yesterday"}}), "unreadable time"),
    ],
)
def test_malformed_events_are_clear_errors(payload: Any, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        parse_event(payload)


def test_parse_time() -> None:
    assert parse_time("2026-11-26T08:56:00.0000000Z") == EXPIRY
    assert parse_time("2026-11-26T08:56:00") == EXPIRY
    assert parse_time(None) is None and parse_time("") is None

"""Parsing APIM gateway-token events from either Event Grid schema.

The docs and the SDK specs disagree on field names and the events are in preview, so the parser
accepts every spelling seen (tests/data/events) and reduces them to one `GatewayTokenEvent`. It validates
names before anything else sees them: an event is input from outside.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from rotation.core.errors import IgnoredEvent, InvalidEvent, InvalidInput
from rotation.core.model import GatewayRef, check_gateway_name
from rotation.core.printable import printable

_SERVICE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ApiManagement/service/[^/]+$", re.I
)
_FRACTION = re.compile(r"(\.\d{1,6})\d*")


class EventKind(StrEnum):
    NEAR_EXPIRY = "Microsoft.ApiManagement.GatewayTokenNearExpiry"
    EXPIRED = "Microsoft.ApiManagement.GatewayTokenExpired"


@dataclass(frozen=True, slots=True)
class GatewayTokenEvent:
    event_id: str
    kind: EventKind
    gateway: str
    service_id: str | None
    instance: str | None
    expires_at: datetime | None

    @property
    def reason(self) -> str:
        tail = "near expiry" if self.kind is EventKind.NEAR_EXPIRY else "expired"
        return f"event {self.event_id}: token {tail}" + (f" on {self.instance}" if self.instance else "")


def parse_time(text: object) -> datetime | None:
    """Event times carry 7 fractional digits and `Z`; Python wants at most 6."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(_FRACTION.sub(r"\1", text.strip()).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"unreadable time {text[:40]!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _get(data: Mapping[str, object], *path: str) -> object:
    value: object = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _gateway_field(data: Mapping[str, object]) -> str | None:
    for path in (("gatewayInfo", "gatewayId"), ("gatewayInfo", "id"), ("gateway", "id"),
                 ("gateway", "gatewayId"), ("gatewayId",), ("gateway",)):
        value = _get(data, *path)
        if isinstance(value, str) and value:
            return value
    return None


def parse_event(payload: Mapping[str, object]) -> GatewayTokenEvent:
    """Raises InvalidEvent (malformed) or IgnoredEvent (another type); both are permanent."""
    if not isinstance(payload, Mapping):
        raise InvalidEvent(f"event must be a JSON object, got {type(payload).__name__}")
    cloud = "specversion" in payload
    event_id, kind = _identity(payload, cloud)
    data = payload.get("data")
    if not isinstance(data, Mapping):
        raise InvalidEvent(f"event {event_id[:64]}: 'data' must be an object")
    service_id = _service_id(payload.get("source" if cloud else "topic"), cloud, event_id)

    gateway_text, instance = _named(data, payload.get("subject"))
    if gateway_text is None:
        raise InvalidEvent(f"event {event_id[:64]}: no gateway in data.gatewayInfo.gatewayId or subject")
    service_id, gateway = _gateway(gateway_text, service_id, event_id)

    info = data.get("tokenInfo")
    expires = None
    if isinstance(info, Mapping):
        expires = parse_time(info.get("expiresAtUtc") or info.get("expiredAtUtc") or info.get("expiresAt"))
    instance_info = _get(data, "gatewayInfo", "instanceId")
    if isinstance(instance_info, str) and instance_info:
        instance = instance_info
    return GatewayTokenEvent(
        event_id=event_id[:128],
        kind=kind,
        gateway=gateway,
        service_id=service_id,
        instance=printable(instance)[:128] if instance else None,
        expires_at=expires,
    )


def _named(data: Mapping[str, object], subject: object) -> tuple[str | None, str | None]:
    """The gateway (data's field first, else the subject's `/gateways/<name>`) and the subject's instance."""
    subject_parts = subject.split("/") if isinstance(subject, str) else []
    instance = subject_parts[3] if len(subject_parts) >= 4 and subject_parts[1] == "gateways" else None
    gateway_text = _gateway_field(data)
    if gateway_text is None and len(subject_parts) >= 3 and subject_parts[1] == "gateways":
        gateway_text = subject_parts[2]
    return gateway_text, instance


def _identity(payload: Mapping[str, object], cloud: bool) -> tuple[str, EventKind]:
    """The event's id and kind (another type is ignored, not rejected)."""
    event_type = payload.get("type" if cloud else "eventType")
    event_id = payload.get("id")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEvent("event has no " + ("'type'" if cloud else "'eventType'"))
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEvent("event has no 'id'")
    # Whoever can publish to the topic chooses the id and the instance; both are only shown (logs,
    # reports, outcome events, the operator's terminal), so they are kept escaped from here on.
    event_id = printable(event_id)
    try:
        return event_id, EventKind(event_type)
    except ValueError:
        raise IgnoredEvent(f"event {event_id[:64]}: type {event_type[:120]!r} is not a gateway token event") from None


def _service_id(source: object, cloud: bool, event_id: str) -> str | None:
    if source is None:
        return None
    if not isinstance(source, str) or not _SERVICE_ID.fullmatch(source):
        raise InvalidEvent(f"event {event_id[:64]}: {'source' if cloud else 'topic'} is not an APIM service id")
    return source


def _gateway(gateway_text: str, service_id: str | None, event_id: str) -> tuple[str | None, str]:
    """(service id, gateway name): a full gateway id must name the topic's service."""
    try:
        if gateway_text.startswith("/"):
            ref = GatewayRef.parse(gateway_text)
            if service_id is not None and ref.service_id.lower() != service_id.lower():
                raise InvalidEvent(f"event {event_id[:64]}: gateway id and topic name different services")
            service_id = service_id or ref.service_id
            gateway = ref.gateway
        else:
            gateway = check_gateway_name(gateway_text)
        if service_id is not None:
            GatewayRef.parse(f"{service_id}/gateways/{gateway}")  # validates every segment of the topic
    except InvalidEvent:
        raise
    except InvalidInput as exc:
        raise InvalidEvent(f"event {event_id[:64]}: {exc}") from None
    return service_id, gateway

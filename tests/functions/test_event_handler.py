from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from rotation.core.errors import UpstreamError
from rotation.core.model import Outcome
from rotation.triggers import RotationIncomplete
from tests.functions.conftest import deliver
from tests.samples import SERVICE_ID, reference_event
from tests.service.conftest import World


def near_expiry(gateway: str = "gw-1", instance: str = "pod-a", event_id: str = "e1") -> dict[str, Any]:
    event = reference_event("near-expiry.eventgrid.json")
    event.update(id=event_id, topic=SERVICE_ID, subject=f"/gateways/{gateway}/{instance}")
    event["data"]["gatewayInfo"] = {"gatewayId": gateway, "instanceId": instance}
    return event


def expired_cloudevent(gateway: str = "gw-1") -> dict[str, Any]:
    event = reference_event("expired.cloudevent.json")
    event.update(source=SERVICE_ID, subject=f"/gateways/{gateway}/pod-b")
    event["data"]["gatewayInfo"] = {"gatewayId": f"{SERVICE_ID}/gateways/{gateway}", "instanceId": "pod-b"}
    return event


def test_event_grid_schema_rotates(app_world: World) -> None:
    deliver(near_expiry())
    assert app_world.issuer.generated == 1
    assert all(app_world.held(app_world.gw1))


def test_cloudevent_schema_rotates(app_world: World) -> None:
    deliver(expired_cloudevent())
    assert app_world.issuer.generated == 1


def test_per_instance_events_generate_one_token(app_world: World) -> None:
    """The first event rotates and restarts east's workload; the other instances' events find Key Vault
    and the Secrets current, so those instances still run the old token: east's workload restarted after
    the token was stored (no second restart), while gw-1's west target has no `restart` list and is
    reported, naming the instance, so each such event is retried and finally dead-lettered."""
    deliver(near_expiry(instance="pod-0", event_id="e0"))
    for i in range(1, 5):
        with pytest.raises(RotationIncomplete, match=rf"instance pod-{i}\): 1 target\(s\) not done "
                                                     r"\(west/gateways/gw1-token: failed\)"):
            deliver(near_expiry(instance=f"pod-{i}", event_id=f"e{i}"))
    assert app_world.issuer.generated == 1
    assert app_world.store.writes == 1
    assert len(app_world.east.restarts[("apim", "deployment/gw1")]) == 1


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"id": "x", "topic": SERVICE_ID, "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
          "data": {"gatewayInfo": {"gatewayId": "../etc"}}}, "rejected malformed event"),
        ({"id": "x", "topic": SERVICE_ID, "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
          "data": "oops"}, "rejected malformed event"),
        (near_expiry(gateway="not-registered"), "is not in the registry"),
        ({"id": "x", "topic": SERVICE_ID, "eventType": "Microsoft.ApiManagement.GatewayCreated", "data": {}},
         "ignored"),
    ],
)
def test_bad_or_foreign_events_return_without_writing(app_world: World, caplog: pytest.LogCaptureFixture,
                                                      payload: dict[str, Any], message: str) -> None:
    with caplog.at_level(logging.INFO):
        deliver(payload)  # returns: no retry
    assert message in caplog.text
    assert app_world.issuer.calls == [] and app_world.store.calls == []
    assert app_world.east.calls == [] and app_world.west.calls == []


def test_transient_failure_raises_for_redelivery(app_world: World) -> None:
    app_world.store.faults.queue["get"] = [UpstreamError("Key Vault get: 503")]
    with pytest.raises(UpstreamError, match="503"):
        deliver(near_expiry())
    deliver(near_expiry())  # the redelivery
    assert all(app_world.held(app_world.gw1))


def test_failed_target_raises_and_the_retry_finishes(app_world: World) -> None:
    app_world.west.faults.queue["read"] = [UpstreamError("cluster west unreachable")]
    with pytest.raises(RotationIncomplete, match=r"west/gateways/gw1-token: failed"):
        deliver(near_expiry())
    deliver(near_expiry())
    assert app_world.issuer.generated == 1 and all(app_world.held(app_world.gw1))


def test_deadline_gives_timeout_and_a_retry(app_world: World) -> None:
    app_world.west.faults.delay["read"] = 0.5
    from rotation import bootstrap

    box = bootstrap.container()
    object.__setattr__(box.settings, "deadline_seconds", 0.2)
    with pytest.raises(RotationIncomplete, match="timeout"):
        deliver(near_expiry())
    assert app_world.east.writes == 1


def test_other_gateway_in_another_service_is_not_matched(app_world: World) -> None:
    event = near_expiry()
    event["topic"] = SERVICE_ID.replace("contoso-apim", "other-apim")
    deliver(event)
    assert app_world.issuer.calls == []


def test_outcome_published_on_rotation(app_world: World) -> None:
    deliver(near_expiry())
    (report,) = app_world.publisher.published
    assert report.rotated and {t.outcome for t in report.targets} == {Outcome.UPDATED}
    assert report.expires_at is not None and report.expires_at > app_world.now + timedelta(days=28)


def test_upstream_access_denied_is_redelivered_not_dropped(app_world: World) -> None:
    from rotation.core.errors import AccessDenied

    app_world.issuer.faults.queue["generateToken"] = [AccessDenied("ARM generateToken for x: 403 AuthorizationFailed")]
    with pytest.raises(AccessDenied, match="403"):
        deliver(near_expiry())  # an operator fixes the role assignment; the redelivery then succeeds
    deliver(near_expiry())
    assert all(app_world.held(app_world.gw1))


def test_invalid_settings_are_acknowledged(caplog: pytest.LogCaptureFixture) -> None:
    from rotation import bootstrap

    bootstrap.reset({"ROTATION_REGISTRY": "{", "KEY_VAULT_URL": "https://kv"})
    try:
        with caplog.at_level(logging.ERROR):
            deliver(near_expiry())  # returns: retrying cannot fix a broken registry
        assert "rejected (not retried): ROTATION_REGISTRY: registry: not valid JSON" in caplog.text
    finally:
        bootstrap.reset()

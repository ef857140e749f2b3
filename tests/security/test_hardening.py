"""Issue 12's smaller items, each through the real handlers over the HTTPS fakes (see conftest)."""

from __future__ import annotations

import logging

import pytest

from rotation import bootstrap
from rotation.core.errors import SettingsPending
from tests.functions.conftest import deliver
from tests.security.conftest import SERVICE_ID, App


def _event(event_id: str = "e-1") -> dict[str, object]:
    return {"id": event_id, "topic": SERVICE_ID, "subject": "/gateways/gw-1/pod-1",
            "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
            "data": {"gatewayInfo": {"gatewayId": "gw-1"}}}


def test_unresolved_registry_reference_makes_the_event_retried(app: App, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Right after a deployment the platform may not have resolved `@Microsoft.KeyVault(...)` yet
    (the literal reference is what the worker sees). Acknowledging would lose the event: it raises, so
    Event Grid redelivers; once resolved, the redelivery is processed."""
    monkeypatch.setenv("ROTATION_REGISTRY",
                       "@Microsoft.KeyVault(SecretUri=https://kv-cfg-x.vault.azure.net/secrets/registry/)")
    bootstrap.reset()
    with caplog.at_level(logging.WARNING), pytest.raises(SettingsPending, match="unresolved Key Vault reference"):
        deliver(_event())
    assert "Event Grid will redeliver" in caplog.text
    app.assert_no_outbound()

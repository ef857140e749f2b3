"""Smaller hardening items, each through the real handlers over the HTTPS fakes (see conftest)."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from devstack import keyvault as kv_fake
from devstack.keyvault import KeyVaultFake
from rotation import bootstrap
from rotation.core.errors import RotationError, SettingsPending, SoftDeletedSecret, TransientError, UnusableSecret
from tests import leakcheck
from tests.functions.conftest import deliver, function, http
from tests.security.conftest import GATEWAY_ID, SERVICE_ID, App, registry


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
    status, body = http("rotate", "POST", "http://localhost/api/gateways/apim-sec/gw-1/rotate",
                        {"service": "apim-sec", "gateway": "gw-1"}, {"force": True})
    assert status == 503 and "unresolved Key Vault reference" in body["error"]
    app.assert_no_outbound()


# --- free-text reason -------------------------------------------------------------------------------

ROUTE = {"service": "apim-sec", "gateway": "gw-1"}
ROTATE = "http://localhost/api/gateways/apim-sec/gw-1/rotate"
ROLL = "http://localhost/api/gateways/apim-sec/gw-1/roll-keys"
SECRET = "apim-apim-sec-gw-1-token"


def _token(app: App, days: int = 20) -> str:
    token = app.fakes.arm.sign(GATEWAY_ID, "primary", datetime.now(UTC) + timedelta(days=days))
    leakcheck.register(token)
    return token


@pytest.mark.parametrize("shape", ["raw", "portal", "bearer"])
def test_pasted_token_in_reason_is_scrubbed(app: App, caplog: pytest.LogCaptureFixture, shape: str) -> None:
    """An operator pastes the leaked token into `reason`: it is cut out of the report, the response and
    every log record (the suite-wide leak check reads them all; caplog is checked here as well)."""
    token = _token(app)
    pasted = {"raw": token, "portal": f"GatewayKey {token}", "bearer": f"Bearer {token.split('&')[2]}"}[shape]
    with caplog.at_level(logging.INFO):
        status, body = http("rotate", "POST", ROTATE, ROUTE, {"force": True, "reason": f"leaked: {pasted} !"})
    assert status in (200, 207), body
    assert body["reason"] == "leaked: <redacted> !"
    signature = token.split("&")[2]
    assert signature not in json.dumps(body) and signature not in caplog.text
    assert 'reason="leaked: <redacted> !"' in caplog.text  # the rotation.reconcile record, scrubbed


# --- roll-keys: admin only, caller recorded ---------------------------------------------------------


def _roll(headers: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
    req = func.HttpRequest(method="POST", url=ROLL, route_params=ROUTE, body=json.dumps(body).encode(),
                           headers={"content-type": "application/json", **headers})
    resp: func.HttpResponse = function("roll_keys")(req)
    return resp.status_code, json.loads(resp.get_body())


def test_roll_keys_records_the_caller_from_app_service_authentication(app: App,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Header names and meaning: Microsoft Learn, "Work with user identities in Azure App Service
    authentication" (X-MS-CLIENT-PRINCIPAL-NAME / -ID / -IDP, X-MS-CLIENT-PRINCIPAL = base64 JSON of
    the claims; external requests cannot set them when authentication is on). The route itself is
    auth level ADMIN (tests/functions/test_indexing.py)."""
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    status, body = _roll({"X-MS-CLIENT-PRINCIPAL-NAME": "alice@contoso.com", "X-MS-CLIENT-PRINCIPAL-ID": "0f1e",
                          "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}, {"dryRun": True, "fromKey": "primary"})
    assert status == 200 and body["phase"] == "planned", body
    assert body["requestedBy"] == {"name": "alice@contoso.com", "principalId": "0f1e", "identityProvider": "aad",
                                   "verified": True}
    principal = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": [
        {"typ": "preferred_username", "val": "bob@contoso.com"},
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "9a8b"}]}).encode()).decode()
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED")
    status, body = _roll({"x-ms-client-principal": principal}, {"dryRun": True, "fromKey": "primary"})
    assert body["requestedBy"] == {"name": "bob@contoso.com", "principalId": "9a8b", "identityProvider": "aad",
                                   "verified": False}  # without App Service authentication: as claimed
    status, body = _roll({}, {"dryRun": True, "fromKey": "primary"})
    assert status == 200 and body["requestedBy"] is None
    assert app.fakes.arm.calls() == []  # a dry run regenerates nothing


# --- server-side state is not the caller's fault ----------------------------------------------------


def test_non_token_value_in_key_vault_is_502_and_force_overwrites_it(app: App) -> None:
    app.fakes.keyvault.set_secret(SECRET, "hunter2-not-a-token")
    status, body = http("rotate", "POST", ROTATE, ROUTE, {})
    assert status == 502, body
    assert f"Key Vault secret '{SECRET}' does not hold a gateway token" in body["error"]
    assert "hunter2" not in body["error"] and "force" in body["error"]
    assert app.fakes.arm.calls() == []  # the routine path reports it and generates nothing
    # The event path raises it like any operator-fixable upstream problem (403, ...): Event Grid
    # redelivers on its schedule, and a redelivery after the fix (a forced rotation) succeeds.
    with pytest.raises(UnusableSecret) as caught:
        deliver(_event())
    assert not isinstance(caught.value, TransientError)
    status, body = http("rotate", "POST", ROTATE, ROUTE, {"force": True})
    assert status in (200, 207) and body["rotated"] is True, body
    assert [c["status"] for c in app.fakes.arm.calls()] == [200]


def test_arm_rejecting_the_request_is_502_not_400(app: App) -> None:
    app.fakes.arm.add_fault({"method": "POST", "path": "generateToken", "status": 400, "times": 1,
                             "code": "ValidationError", "message": "expiry out of range"})
    status, body = http("rotate", "POST", ROTATE, ROUTE, {"force": True})
    assert status == 502 and "400 ValidationError" in body["error"], body


# Within the 64 KiB body limit (a larger body is 413 before it is parsed): still far deeper than the
# interpreter's recursion limit.
@pytest.mark.parametrize("body", [b"[" * 60_000, b'{"force": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"])
def test_deeply_nested_json_body_is_400(app: App, body: bytes) -> None:
    status, answer = http("rotate", "POST", ROTATE, ROUTE, body)
    assert status == 400 and answer["error"] in ("request body is nested too deeply",
                                                 "field 'force' must be a bool"), answer
    app.assert_no_outbound()


def test_soft_deleted_token_secret_is_a_clear_permanent_error(app: App) -> None:
    """Key Vault keeps a deleted secret's name (soft delete) and answers a write 409 Conflict with inner
    code ObjectIsDeletedButRecoverable; retrying cannot help, so it is permanent and says what to do."""
    app.fakes.keyvault.set_secret(SECRET, _token(app, days=2))
    app.fakes.keyvault.soft_delete(SECRET)
    status, body = http("rotate", "POST", ROTATE, ROUTE, {"force": True})
    assert status == 502, body
    assert "deleted but recoverable" in body["error"]
    assert f"az keyvault secret recover --vault-name VAULT --name {SECRET}" in body["error"]
    assert "purge" in body["error"]
    with pytest.raises(SoftDeletedSecret) as caught:  # operator-fixable: redelivered like a 403
        deliver(_event())
    assert not isinstance(caught.value, TransientError)  # HTTP 502 without Retry-After, CLI exit 2
    puts = [c for c in app.fakes.keyvault.calls() if c["method"] == "PUT"]
    assert [c["status"] for c in puts] == [409, 409]  # one attempt per request, no retry loop


# --- an event without a topic -----------------------------------------------------------------------


def test_event_without_topic_matches_only_a_gateway_name_registered_once(app: App,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Decision: without topic/source, the gateway name alone identifies a gateway only when exactly one
    registered gateway has it; otherwise the event is logged and acknowledged, touching nothing."""
    doc = registry(app.sentinel.url, app.fakes.ca.ca_pem)
    twin = json.loads(json.dumps(doc["gateways"][0]))
    twin["id"] = GATEWAY_ID.replace("apim-sec", "apim-other")
    twin["keyVaultSecret"] = "apim-other-gw-1-token"
    for t in twin["targets"]:  # one Secret key feeds one gateway (the registry refuses it twice)
        t["secret"] = f"other-{t['secret']}"
    doc["gateways"].append(twin)
    monkeypatch.setenv("ROTATION_REGISTRY", json.dumps(doc))
    bootstrap.reset()
    event = _event()
    del event["topic"]
    deliver(event)
    app.assert_no_outbound()
    registry_ = bootstrap.container().settings.registry
    assert registry_.find_by_gateway(None, "gw-1") is None
    assert registry_.find_by_gateway(SERVICE_ID, "gw-1") is registry_.gateways[0]
    doc["gateways"].pop()
    monkeypatch.setenv("ROTATION_REGISTRY", json.dumps(doc))
    bootstrap.reset()
    assert bootstrap.container().settings.registry.find_by_gateway(None, "GW-1") is not None


# --- which credential, which vault --------------------------------------------------------------------


@pytest.mark.parametrize(("cli", "azure_variable", "expected"), [
    (False, None, "ManagedIdentityCredential"),            # the function app, anywhere
    (True, None, "DefaultAzureCredential"),                # the CLI on an operator's machine
    (True, "WEBSITE_SITE_NAME", "ManagedIdentityCredential"),  # the CLI on an Azure host
    (True, "WEBSITE_SKU", "ManagedIdentityCredential"),
])
def test_developer_credentials_only_for_the_cli_off_azure(app: App, monkeypatch: pytest.MonkeyPatch, cli: bool,
                                                          azure_variable: str | None, expected: str) -> None:
    if azure_variable:
        monkeypatch.delenv("ROTATION_LOCAL_EMULATORS")  # refused on an Azure host
        monkeypatch.setenv("ARM_ENDPOINT", "")
        monkeypatch.setenv("OUTCOME_TOPIC_ENDPOINT", "")  # the loopback fake topic is refused in Azure too
        monkeypatch.setenv(azure_variable, "FlexConsumption")
        env = {**os.environ, "KEY_VAULT_URL": "https://kv-sec-test.vault.azure.net",
               "LEASE_CONTAINER_URL": "https://acct.blob.core.windows.net/gateway-leases",
               "ROTATION_REGISTRY": json.dumps({"clusters": [], "gateways": []})}
        box = bootstrap.reset(env)
    else:
        box = bootstrap.reset()
    box.developer_credentials = cli
    assert type(getattr(box.credential, "inner")).__name__ == expected  # noqa: B009 - the bounded wrapper's inner credential


def test_kubeconfigs_come_from_the_configuration_vault(app: App, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    """CONFIG_KEY_VAULT_URL holds the kubeconfigs (the app reads it only); tokens stay in KEY_VAULT_URL."""
    config_vault = KeyVaultFake(app.fakes.ca.server_context(tmp_path, "config-vault"),
                                authorize=kv_fake.identity_authorizer(app.fakes.identity))
    with config_vault:
        kubeconfig = {"apiVersion": "v1", "kind": "Config",
                      "clusters": [{"name": "west", "cluster": {"server": app.sentinel.url}}],
                      "users": [{"name": "rotator", "user": {"token": "kc-token-0123456789"}}],
                      "contexts": [{"name": "west", "context": {"cluster": "west", "user": "rotator"}}]}
        config_vault.set_secret("kubeconfig-west", json.dumps(kubeconfig))
        doc = registry(app.sentinel.url, app.fakes.ca.ca_pem)
        doc["clusters"].append({"name": "west", "auth": "kubeconfig", "kubeconfigSecret": "kubeconfig-west"})
        monkeypatch.setenv("ROTATION_REGISTRY", json.dumps(doc))
        monkeypatch.setenv("CONFIG_KEY_VAULT_URL", config_vault.url)
        box = bootstrap.reset()
        assert box.config_store.vault_url == config_vault.url and box.store.vault_url == app.fakes.keyvault.url
        # The cluster's first call reads its kubeconfig (within that call's deadline); the sentinel server
        # behind it answers nothing useful, so the call itself fails.
        client = box.rotator.clusters.client(box.settings.registry.clusters["west"])
        with contextlib.suppress(RotationError):
            client.read_secret("apim", "gw-1-token", "config.service.auth.key", timeout=3)
        assert [(c["method"], c["path"].rstrip("/")) for c in config_vault.calls() if c["status"] == 200] == [
            ("GET", "/secrets/kubeconfig-west")]
        assert app.fakes.keyvault.calls() == []


def test_user_assigned_identity_is_selected_by_azure_client_id(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    client_id = "5b0c4a8e-27f1-4c3e-9d7a-2f6e1b3c4d5e"
    monkeypatch.setenv("AZURE_CLIENT_ID", client_id)
    box = bootstrap.reset()
    box.credential.get_token("https://vault.azure.net/.default")
    assert app.fakes.identity.requests()[-1]["clientId"] == client_id

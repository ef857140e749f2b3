"""ArmTokenIssuer (azure-mgmt-apimanagement + azure-identity) against the ARM and identity fakes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken

from devstack.fakes import Fakes
from rotation.adapters.arm import ArmTokenIssuer
from rotation.adapters.credential import build_credential
from rotation.core.errors import AccessDenied, NotFound, PermanentError, UpstreamError, UpstreamRejected
from rotation.core.model import GatewayRef, KeyType
from rotation.core.token import GatewayToken
from tests import leakcheck
from tests.adapters.conftest import SUBSCRIPTION, control


class Issuer(ArmTokenIssuer):
    """The real adapter; every token it returns is registered with the suite's log leak check."""

    def generate_token(self, gateway: GatewayRef, key_type: KeyType, expiry: datetime,
                       timeout: float | None = None) -> str:
        token = super().generate_token(gateway, key_type, expiry, timeout)
        leakcheck.register(token)
        return token


def issuer(fakes: Fakes, **kwargs: Any) -> ArmTokenIssuer:
    return Issuer(build_credential(None), fakes.arm.url, **kwargs)


def in_days(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def generate_calls(fakes: Fakes) -> list[dict[str, Any]]:
    return [c for c in fakes.arm.calls() if c["path"].endswith("/generateToken")]


class StaticCredential:
    """A TokenCredential handing out a fixed token (one the fakes never issued)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def test_generated_token_verifies_with_the_requested_key(fakes: Fakes, gateway: GatewayRef) -> None:
    expiry = in_days(29).replace(second=42, microsecond=123456)

    primary = issuer(fakes).generate_token(gateway, KeyType.PRIMARY, expiry, timeout=10)
    secondary = issuer(fakes).generate_token(gateway, KeyType.SECONDARY, expiry, timeout=10)

    token = GatewayToken.parse(primary)
    assert token.gateway == gateway.gateway
    assert token.expires_at == expiry.replace(second=0, microsecond=0)
    assert not primary.startswith("GatewayKey")
    check = control(fakes.arm.url, fakes.ca_path, "POST", "/_devstack/verify",
                    {"gatewayId": gateway.id, "token": primary})
    assert check["valid"] is True
    assert check["keyType"] == "primary"
    assert check["expiresAt"] == token.expires_at.isoformat()
    assert fakes.arm.verify(gateway.id, secondary)["keyType"] == "secondary"
    assert len(generate_calls(fakes)) == 2
    # The app asked the managed-identity endpoint for the cloud's ARM audience, not for the endpoint it
    # talks to (an ARM_ENDPOINT override must not choose the audience).
    resources = {r["resource"] for r in fakes.identity.requests() if r["headerOk"]}
    assert "https://management.azure.com" in resources and fakes.arm.url not in resources


def test_regenerate_key_invalidates_only_that_keys_tokens(fakes: Fakes, gateway: GatewayRef) -> None:
    arm = issuer(fakes)
    old_primary = arm.generate_token(gateway, KeyType.PRIMARY, in_days(20))
    secondary = arm.generate_token(gateway, KeyType.SECONDARY, in_days(20))

    arm.regenerate_key(gateway, KeyType.PRIMARY, timeout=10)

    assert fakes.arm.verify(gateway.id, old_primary)["valid"] is False
    assert fakes.arm.verify(gateway.id, secondary)["valid"] is True
    new_primary = arm.generate_token(gateway, KeyType.PRIMARY, in_days(20))
    assert fakes.arm.verify(gateway.id, new_primary) | {"expiresAt": None} == {
        "valid": True, "keyType": "primary", "expiresAt": None, "expired": False, "signatureValid": True}


def test_expiry_beyond_30_days_is_a_permanent_error(fakes: Fakes, gateway: GatewayRef) -> None:
    # UpstreamRejected, not InvalidInput: the request came from the rotator, not from the caller (502).
    with pytest.raises(UpstreamRejected) as caught:
        issuer(fakes, retry_total=0).generate_token(gateway, KeyType.PRIMARY, in_days(31))

    message = str(caught.value)
    assert f"ARM generateToken for {gateway}" in message
    assert "400 ValidationError" in message
    assert [c["status"] for c in generate_calls(fakes)] == [400]


def test_unknown_gateway_is_not_found(fakes: Fakes) -> None:
    ghost = GatewayRef(SUBSCRIPTION, "rg-devstack", "apim-devstack", "gw-missing")

    with pytest.raises(NotFound, match=r"ARM generateToken for apim-devstack/gw-missing failed: 404"):
        issuer(fakes, retry_total=0).generate_token(ghost, KeyType.PRIMARY, in_days(29))
    with pytest.raises(NotFound, match="regenerateKey"):
        issuer(fakes, retry_total=0).regenerate_key(ghost, KeyType.PRIMARY)


def test_429_with_retry_after_is_retried_by_azure_core(fakes: Fakes, gateway: GatewayRef) -> None:
    fakes.arm.add_fault({"method": "POST", "path": "/generateToken$", "status": 429, "times": 1,
                         "retryAfter": 1})

    token = issuer(fakes).generate_token(gateway, KeyType.PRIMARY, in_days(29), timeout=15)

    assert fakes.arm.verify(gateway.id, token)["valid"] is True
    assert [(c["status"], c["fault"]) for c in generate_calls(fakes)] == [(429, True), (200, False)]


def test_429_without_retry_after_is_an_upstream_error(fakes: Fakes, gateway: GatewayRef) -> None:
    fakes.arm.add_fault({"method": "POST", "path": "/generateToken$", "status": 429, "times": 1})

    with pytest.raises(UpstreamError, match=rf"ARM generateToken for {gateway} failed: 429 TooManyRequests"):
        issuer(fakes, retry_total=0).generate_token(gateway, KeyType.PRIMARY, in_days(29))


def test_a_retry_after_that_ends_past_the_timeout_is_not_waited_for(fakes: Fakes, gateway: GatewayRef) -> None:
    """azure-core's own RetryPolicy would sleep the 30 s first and only then look at `timeout`."""
    fakes.arm.add_fault({"method": "POST", "path": "/generateToken$", "status": 429, "times": 1,
                         "retryAfter": 30})
    started = time.monotonic()

    with pytest.raises(UpstreamError, match=rf"ARM generateToken for {gateway} failed: 429 TooManyRequests"):
        issuer(fakes).generate_token(gateway, KeyType.PRIMARY, in_days(29), timeout=3)

    assert time.monotonic() - started < 2.0
    assert [c["status"] for c in generate_calls(fakes)] == [429]


def test_5xx_backoff_stops_before_the_timeout(fakes: Fakes, gateway: GatewayRef) -> None:
    """Retried while the next backoff (0 s, 1.6 s, 3.2 s by azure-core's defaults) fits, then the last
    answer is the error, well inside the timeout."""
    fakes.arm.add_fault({"method": "POST", "path": "/generateToken$", "status": 503, "times": 0})
    started = time.monotonic()

    with pytest.raises(UpstreamError, match=rf"ARM generateToken for {gateway} failed: 503"):
        issuer(fakes).generate_token(gateway, KeyType.PRIMARY, in_days(29), timeout=2.5)

    took = time.monotonic() - started
    assert took < 2.5
    assert [c["status"] for c in generate_calls(fakes)] == [503, 503, 503]


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_an_upstream_error(fakes: Fakes, gateway: GatewayRef, status: int) -> None:
    fakes.arm.add_fault({"path": "/regenerateKey$", "status": status, "times": 1})

    with pytest.raises(UpstreamError, match=f"regenerateKey \\(secondary\\) for {gateway} failed: {status}"):
        issuer(fakes, retry_total=0).regenerate_key(gateway, KeyType.SECONDARY)


def test_dropped_connection_is_an_upstream_error(fakes: Fakes, gateway: GatewayRef) -> None:
    fakes.arm.add_fault({"path": "/generateToken$", "drop": True, "times": 1})

    with pytest.raises(UpstreamError, match="ARM generateToken"):
        issuer(fakes, retry_total=0).generate_token(gateway, KeyType.PRIMARY, in_days(29))


def test_timeout_bounds_the_call(fakes: Fakes, gateway: GatewayRef) -> None:
    fakes.arm.add_fault({"path": "/generateToken$", "delaySeconds": 3, "times": 1})
    started = time.monotonic()

    with pytest.raises(UpstreamError, match="ARM generateToken"):
        issuer(fakes, retry_total=0).generate_token(gateway, KeyType.PRIMARY, in_days(29), timeout=0.5)

    assert time.monotonic() - started < 2.5
    with pytest.raises(UpstreamError, match="deadline"):
        issuer(fakes).generate_token(gateway, KeyType.PRIMARY, in_days(29), timeout=0)


def test_wrong_bearer_token_is_access_denied(fakes: Fakes, gateway: GatewayRef) -> None:
    arm = Issuer(StaticCredential("not-a-token-the-identity-issued"), fakes.arm.url, retry_total=0)

    with pytest.raises(AccessDenied, match=r"ARM generateToken for .* failed: 401"):
        arm.generate_token(gateway, KeyType.PRIMARY, in_days(29))
    assert generate_calls(fakes)[-1]["status"] == 401


def test_identity_endpoint_refusing_is_access_denied(fakes: Fakes, gateway: GatewayRef,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")

    with pytest.raises(AccessDenied, match="could not get a token"):
        issuer(fakes, retry_total=0).generate_token(gateway, KeyType.PRIMARY, in_days(29))
    assert generate_calls(fakes) == []


def test_arm_requires_a_bearer_token_on_the_wire(fakes: Fakes, gateway: GatewayRef) -> None:
    url = f"{fakes.arm.url}{gateway.id}/generateToken?api-version=2024-05-01"
    body = {"keyType": "primary", "expiry": in_days(10).isoformat()}

    missing = requests.post(url, json=body, verify=fakes.ca_path, timeout=10)
    wrong = requests.post(url, json=body, headers={"Authorization": "Bearer nope"}, verify=fakes.ca_path,
                          timeout=10)

    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.json()["error"]["code"].startswith("AuthenticationFailed")


def test_error_messages_never_carry_a_token(fakes: Fakes, gateway: GatewayRef) -> None:
    arm = issuer(fakes, retry_total=0)
    token = arm.generate_token(gateway, KeyType.PRIMARY, in_days(29))
    # An upstream that echoes a credential in its error text must not get it into our messages.
    fakes.arm.add_fault({"path": "/generateToken$", "status": 400, "code": "ValidationError",
                         "message": f"bad request near GatewayKey {token} and {token}", "times": 1})

    with pytest.raises(PermanentError) as caught:
        arm.generate_token(gateway, KeyType.PRIMARY, in_days(29))

    text = str(caught.value) + repr(caught.value) + str(caught.value.__cause__ or "")
    assert token not in text
    assert token.split("&")[2] not in text
    assert "<redacted>" in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_clients_are_cached_per_subscription(fakes: Fakes, gateway: GatewayRef) -> None:
    arm = issuer(fakes)
    other = GatewayRef(SUBSCRIPTION, "rg-other", "apim-other", "gw-2")
    fakes.arm.create_gateway(other.id)

    arm.generate_token(gateway, KeyType.PRIMARY, in_days(29))
    arm.generate_token(other, KeyType.PRIMARY, in_days(29))

    assert len(arm._clients) == 1
    # One token from the identity endpoint served both calls (credential caching through the SDK).
    assert sum(1 for r in fakes.identity.requests() if r["resource"] == "https://management.azure.com") == 1
    arm.close()


def test_concurrent_calls_share_one_client_per_subscription(fakes: Fakes, gateway: GatewayRef) -> None:
    from concurrent.futures import ThreadPoolExecutor

    other_sub = GatewayRef("00000000-0000-4000-8000-000000000002", "rg", "apim-b", "gw-b")
    fakes.arm.create_gateway(other_sub.id)
    arm = issuer(fakes)
    refs = [gateway, other_sub] * 6

    with ThreadPoolExecutor(max_workers=6) as pool:
        tokens = list(pool.map(lambda ref: arm.generate_token(ref, KeyType.PRIMARY, in_days(29), 10), refs))

    assert all(fakes.arm.verify(ref.id, t)["valid"] for ref, t in zip(refs, tokens, strict=True))
    assert len(arm._clients) == 2
    arm.close()


def test_list_gateways_returns_the_services_gateways_and_shares_the_error_translation(
        fakes: Fakes, gateway: GatewayRef) -> None:
    """`discover` lists gateways through this adapter: `client.gateway.list_by_service` (azure-mgmt-apimanagement,
    GET .../service/{svc}/gateways, ARM's `{"value": [...]}` page shape) and the same translation of azure-core
    errors as generateToken: a rejected bearer token is AccessDenied naming the operation, an unknown service
    NotFound."""
    other = GatewayRef(gateway.subscription, gateway.resource_group, gateway.service, f"{gateway.gateway}-b")
    fakes.arm.create_gateway(other.id)
    arm = issuer(fakes)
    try:
        found = arm.list_gateways(gateway.service_id)
    finally:
        arm.close()
    assert {gateway, other} <= set(found)
    assert all(ref.service_id.lower() == gateway.service_id.lower() for ref in found)
    denied = Issuer(StaticCredential("not-a-token-the-identity-issued"), fakes.arm.url, retry_total=0)
    with pytest.raises(AccessDenied, match=rf"ARM list gateways of {gateway.service} failed: 401"):
        denied.list_gateways(gateway.service_id)
    missing = gateway.service_id.replace(gateway.service, "apim-missing")
    with pytest.raises(NotFound, match=r"ARM list gateways of apim-missing failed: 404"):
        issuer(fakes, retry_total=0).list_gateways(missing)

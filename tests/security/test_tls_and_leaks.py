"""TLS verification and Key Vault's challenge check stay on outside the devstack, and error paths do
not leak a token.

TLS: a server whose certificate comes from another CA than the one the app trusts is refused by each
SDK (azure-core for ARM and Key Vault, urllib3 under the Kubernetes client) with an error that says
so. Leaks: an upstream whose error message echoes a token (the fakes' fault `message`) must not get
it into an exception, an HTTP response or a log record (the suite-wide leak check reads every record).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devstack.httpfake import FakeServer
from devstack.tls import DevCA
from rotation import bootstrap
from rotation.adapters.arm import ArmTokenIssuer
from rotation.adapters.credential import build_credential
from rotation.adapters.keyvault import KeyVaultTokenStore
from rotation.adapters.kubernetes import KubernetesClusters
from rotation.core.errors import PermanentError, RotationError, UpstreamError
from rotation.core.model import AksAuth, Cluster, GatewayRef, KeyType
from tests import leakcheck
from tests.functions.conftest import deliver, http
from tests.security.conftest import GATEWAY_ID, SERVICE_ID, App

ROUTE = {"service": "apim-sec", "gateway": "gw-1"}
ROTATE = "http://localhost/api/gateways/apim-sec/gw-1/rotate"
CERT_FAILURE = "CERTIFICATE_VERIFY_FAILED"


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[FakeServer]:
    """An HTTPS server on loopback whose certificate is issued by a CA the app does not trust."""
    other = DevCA.create(tmp_path / "other-ca")
    with FakeServer("impostor", ssl_context=other.server_context(tmp_path / "other-ca", "impostor")) as server:
        yield server


def test_arm_refuses_a_server_with_an_untrusted_certificate(app: App, impostor: FakeServer) -> None:
    issuer = ArmTokenIssuer(build_credential(), impostor.url, retry_total=0)
    with pytest.raises(UpstreamError, match=CERT_FAILURE) as caught:
        issuer.generate_token(GatewayRef.parse(GATEWAY_ID), KeyType.PRIMARY,
                              datetime.now(UTC) + timedelta(days=1), timeout=5)
    assert "ARM generateToken for apim-sec/gw-1 failed" in str(caught.value)
    assert impostor.calls() == []  # no request got past the handshake


def test_key_vault_refuses_a_server_with_an_untrusted_certificate(app: App, impostor: FakeServer) -> None:
    store = KeyVaultTokenStore(build_credential(), impostor.url, verify_challenge_resource=False, retry_total=0)
    with pytest.raises(UpstreamError, match=CERT_FAILURE):
        store.get("apim-apim-sec-gw-1-token", timeout=5)
    assert impostor.calls() == []


def test_kubernetes_refuses_a_server_with_an_untrusted_certificate(app: App, impostor: FakeServer) -> None:
    # The registry's caData is the devstack CA; the server presents a certificate from another CA.
    ca = base64.b64encode(app.fakes.ca.ca_pem).decode()
    clusters = KubernetesClusters(build_credential(), lambda name: "")
    try:
        client = clusters.client(Cluster("east", AksAuth(server=impostor.url, ca_data=ca)))
        with pytest.raises(UpstreamError, match=f"cluster east unreachable: get secrets apim/gw-1-token: .*{CERT_FAILURE}"):
            client.read_secret("apim", "gw-1-token", "value", timeout=5)
    finally:
        clusters.close()
    assert impostor.calls() == []


def test_key_vault_challenge_check_is_on_without_the_emulator_setting(app: App,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ROTATION_LOCAL_EMULATORS a loopback vault is not even accepted as KEY_VAULT_URL; and the
    store the app builds for any vault but a loopback one with the switch on verifies that the
    challenge's resource matches the vault's domain: the devstack vault on 127.0.0.1 is refused, as a
    permanent (configuration) error."""
    monkeypatch.delenv("ROTATION_LOCAL_EMULATORS")
    bootstrap.reset()
    status, body = http("health", "GET", "http://localhost/api/health")
    assert status == 503 and "only an override for a loopback emulator" in body["error"]  # ARM_ENDPOINT, first
    store = KeyVaultTokenStore(build_credential(), app.fakes.keyvault.url, retry_total=0)
    with pytest.raises(PermanentError, match="challenge"):
        store.get("apim-apim-sec-gw-1-token", timeout=5)
    # At most the unauthenticated probe (401): azure-keyvault caches challenges per vault host for the
    # whole process, so when an earlier fake of this run had the same port there is no probe at all.
    assert [(c["method"], c["status"]) for c in app.fakes.keyvault.calls()] in ([("GET", 401)], [])
    assert app.fakes.arm.calls() == []


def test_emulator_setting_is_refused_in_azure(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "4b8f9c1e0d2a")  # set by the platform on every Azure instance
    bootstrap.reset()
    status, body = http("health", "GET", "http://localhost/api/health")
    assert status == 503 and "refused in Azure" in body["error"]
    status, body = http("rotate", "POST", ROTATE, ROUTE, {"force": True})
    assert status == 500 and "ROTATION_LOCAL_EMULATORS" in body["error"]
    deliver({"id": "e1", "topic": SERVICE_ID, "subject": "/gateways/gw-1/pod-1",
             "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry", "data": {}})
    app.assert_no_outbound()


def _echoed_token(app: App) -> str:
    """A real token of the gateway (validly signed), registered with the suite-wide leak check."""
    token = app.fakes.arm.sign(GATEWAY_ID, "primary", datetime.now(UTC) + timedelta(days=20))
    leakcheck.register(token)
    return token


@pytest.mark.parametrize(("fake", "method", "path", "status"), [
    ("arm", "POST", "generateToken", 400),
    ("arm", "POST", "generateToken", 501),  # a 5xx azure-core does not retry: keeps the test fast
    ("arm", "POST", "generateToken", 403),
    ("keyvault", "GET", "/secrets/", 501),
    ("keyvault", "GET", "/secrets/", 403),
])
@pytest.mark.parametrize("shape", ["raw", "portal"])
def test_upstream_error_echoing_a_token_does_not_leak(app: App, fake: str, method: str, path: str,
                                                      status: int, shape: str) -> None:
    token = _echoed_token(app)
    shown = token if shape == "raw" else f"GatewayKey {token}"
    server = app.fakes.arm if fake == "arm" else app.fakes.keyvault
    server.add_fault({"method": method, "path": path, "status": status, "times": 0,
                      "message": f"The value '{shown}' is not acceptable here (echoed by upstream)"})
    code, body = http("rotate", "POST", ROTATE, ROUTE, {"force": True})
    assert code in (400, 403, 502, 503), body
    text = str(body)
    assert token not in text and token.split("&")[2] not in text
    assert "<redacted>" in text  # the message is kept, only the token is cut out
    try:  # the event path: raised (transient) or logged and acknowledged (permanent); the leak
        deliver({"id": "e1", "topic": SERVICE_ID, "subject": "/gateways/gw-1/pod-1",  # check reads the log
                 "eventType": "Microsoft.ApiManagement.GatewayTokenExpired", "data": {}})
    except RotationError as exc:
        raised = str(exc)
    else:
        raised = ""
    assert token not in raised and token.split("&")[2] not in raised
    assert len(server.calls()) >= 2  # both paths really reached the faulty upstream

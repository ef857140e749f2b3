"""Getting a token from the managed-identity endpoint is bounded by the same deadline as every call,
and its failures are classified: 5xx / 429 / no answer are transient (Event Grid redelivers, HTTP 503
with Retry-After), a 4xx is AccessDenied.

azure-core asks the credential outside a call's own `timeout` (BearerTokenCredentialPolicy), and
azure-identity 1.27 hands the App Service protocol to MSAL, which reports the endpoint's status only
in the text of a CredentialUnavailableError (msal/managed_identity.py `_obtain_token_on_app_service`;
azure-identity `_internal/msal_managed_identity_client.py`). The devstack identity fake answers
injected faults in the endpoint's own `{"statusCode", "message"}` shape.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from rotation import bootstrap
from rotation.adapters.credential import build_credential
from rotation.adapters.keyvault import KeyVaultTokenStore
from rotation.adapters.kubernetes import KubernetesClusters
from rotation.core.errors import AccessDenied, UpstreamError
from rotation.core.model import AksAuth, Cluster
from tests.functions.conftest import deliver, http
from tests.security.conftest import SERVICE_ID, App

SECRET = "apim-apim-sec-gw-1-token"
STALL = 25.0  # what the issue measured: an event took 25.1 s against a 20 s deadline


def _event() -> dict[str, Any]:
    return {"id": "e-id", "topic": SERVICE_ID, "subject": "/gateways/gw-1/pod-1",
            "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
            "data": {"gatewayInfo": {"gatewayId": "gw-1"}}}


def _stall(app: App, seconds: float = STALL, times: int = 1) -> None:
    app.fakes.identity.add_fault({"method": "GET", "path": "/msi/.*", "delaySeconds": seconds, "status": 500,
                                  "times": times})


@pytest.fixture
def identity(app: App) -> Any:
    app.fakes.identity.clear_faults()
    yield app.fakes.identity
    app.fakes.identity.clear_faults()


def test_stalled_identity_endpoint_ends_the_event_at_the_deadline(app: App, identity: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATION_DEADLINE_SECONDS", "2")
    bootstrap.reset()
    _stall(app, times=2)  # the event's request, then the HTTP request's
    started = time.monotonic()
    with pytest.raises(UpstreamError, match=r"could not get a token .* no answer within"):
        deliver(_event())  # raised: Event Grid redelivers (well inside its 30 s delivery timeout)
    assert time.monotonic() - started < 3.5
    assert [c["status"] for c in app.fakes.keyvault.calls()] in ([], [401])  # at most the challenge probe
    started = time.monotonic()
    status, body = http("rotate", "POST", "http://localhost/api/gateways/apim-sec/gw-1/rotate",
                        {"service": "apim-sec", "gateway": "gw-1"}, {"force": True})
    assert status == 503 and "could not get a token" in body["error"], body
    assert time.monotonic() - started < 3.5
    assert app.fakes.arm.calls() == []


@pytest.mark.parametrize("status", [500, 503, 429])
def test_identity_endpoint_5xx_and_429_are_transient(app: App, identity: Any, status: int) -> None:
    identity.add_fault({"method": "GET", "path": "/msi/.*", "status": status, "times": 0})
    store = KeyVaultTokenStore(build_credential(retry_total=0), app.fakes.keyvault.url,
                               verify_challenge_resource=False, retry_total=0)
    with pytest.raises(UpstreamError, match=f"identity endpoint answered {status}"):
        store.get(SECRET, timeout=5)


@pytest.mark.parametrize("status", [400, 403])
def test_identity_endpoint_4xx_is_access_denied(app: App, identity: Any, status: int) -> None:
    identity.add_fault({"method": "GET", "path": "/msi/.*", "status": status, "times": 0})
    store = KeyVaultTokenStore(build_credential(retry_total=0), app.fakes.keyvault.url,
                               verify_challenge_resource=False, retry_total=0)
    with pytest.raises(AccessDenied, match=f"identity endpoint answered {status}"):
        store.get(SECRET, timeout=5)


def test_aks_token_is_bounded_by_the_call_deadline(app: App, identity: Any) -> None:
    """The Kubernetes client asks the refresh hook for the AKS token inside the call: the call's
    timeout bounds it too, and no connection to the cluster is opened without a token."""
    _stall(app)
    ca = base64.b64encode(app.fakes.ca.ca_pem).decode()
    clusters = KubernetesClusters(build_credential(), lambda name: "")
    try:
        client = clusters.client(Cluster("east", AksAuth(server=app.sentinel.url, ca_data=ca)))
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="could not get a token for 6dae42f8"):
            client.read_secret("apim", "gw-1-token", "value", timeout=1.5)
        assert time.monotonic() - started < 2.5
    finally:
        clusters.close()
    assert app.sentinel.stats.connections == 0


def test_unreachable_identity_endpoint_is_transient(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")  # nothing listens on port 9
    store = KeyVaultTokenStore(build_credential(retry_total=0), app.fakes.keyvault.url,
                               verify_challenge_resource=False, retry_total=0)
    with pytest.raises(UpstreamError, match=r"identity endpoint unreachable \(ServiceRequestError\)"):
        store.get(SECRET, timeout=5)


def test_an_abandoned_identity_request_ends_on_its_own(app: App, identity: Any) -> None:
    """The caller stops waiting at its deadline; the request itself runs on a daemon thread. Without a
    socket timeout of its own it would hold that thread for azure-core's default read timeout (300 s) per
    attempt, so every event during an identity-endpoint stall would leave a thread behind for minutes.
    `request_timeout` bounds each attempt (RequestsTransport `connection_timeout`/`read_timeout`, which
    azure-identity's pipeline passes through: azure/identity/_internal/pipeline.py `build_pipeline`)."""
    import threading

    from rotation.adapters.credential import token_deadline

    _stall(app)
    credential = build_credential(retry_total=0, request_timeout=2.0)
    before = set(threading.enumerate())
    with token_deadline(0.5), pytest.raises(UpstreamError, match="no answer within"):
        credential.get_token("https://vault.azure.net/.default")
    (mine,) = [t for t in set(threading.enumerate()) - before if t.name == "identity-token"]
    mine.join(timeout=5.0)
    assert not mine.is_alive()

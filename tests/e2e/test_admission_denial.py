"""An admission webhook that denies the app's Secret PATCH and quotes the patched data back.

Policy engines (Gatekeeper, Kyverno) and home-grown validating webhooks often echo the object they
reject. The API server hands the webhook the object in its versioned form, `stringData` already merged
into `data` as base64 (Kubernetes API reference "Secret v1 core"; staging/src/k8s.io/api/core/v1
`Secret.StringData`: "merged into the data field on write"), and returns the webhook's
`response.status.message` to the client as the 400 Status's message, prefixed
`admission webhook "<name>" denied the request: ` (Kubernetes docs "Dynamic Admission Control",
AdmissionReview v1 response; apiserver/pkg/admission/plugin/webhook/errors/statuserror.go ToStatusErr).

So the message the app gets back holds the base64 of `GatewayKey <the token Key Vault just stored>`
(and, for a `{token}` target, of the raw token). The webhook here is a real one: a
ValidatingWebhookConfiguration on the devstack's kube-apiservers pointing at a small HTTPS server of
this test (trustme certificate for 127.0.0.1, the CA in `caBundle`), selecting the two Secrets of
`gw-shared` by label. The rotation runs through the HTTP function; what leaves the process is read
where it lands: the HTTP body, the telemetry records (message and customDimensions) and the outcome
CloudEvent stored by the devstack's Event Grid fake. None may hold the token, its signature or a
base64 piece of either form.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
import trustme

from devstack import stack as devstack
from rotation import telemetry
from tests.e2e.conftest import World
from tests.functions.conftest import http

LABEL = {"rotation-test/deny-writes": "true"}
TARGETS = [(t["cluster"], t["namespace"], t["secret"]) for t in devstack.targets()["gw-shared"]]


class _Webhook(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        self.server.seen.append(request)  # type: ignore[attr-defined]
        data = (request.get("object") or {}).get("data") or {}
        answer = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "response": {"uid": request["uid"], "allowed": False,
                               "status": {"code": 400, "message": f"policy forbids this Secret: data={json.dumps(data)}"}}}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def denying_webhook(world: World) -> Iterator[list[dict[str, Any]]]:
    from kubernetes import client

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    server.seen = []  # type: ignore[attr-defined]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config: dict[str, Any] = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "deny-gateway-secret-writes"},
        "webhooks": [{
            "name": "deny.secrets.rotation-test.example", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "timeoutSeconds": 5, "objectSelector": {"matchLabels": LABEL},
            "clientConfig": {"url": f"https://127.0.0.1:{server.server_address[1]}/validate",
                             "caBundle": base64.b64encode(ca.cert_pem.bytes()).decode()},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                       "resources": ["secrets"], "scope": "Namespaced"}],
        }],
    }
    clusters = sorted({c for c, _, _ in TARGETS})
    try:
        for cluster, namespace, name in TARGETS:  # labelled first: the webhook would deny this PATCH too
            client.CoreV1Api(world.stack.admin(cluster)).patch_namespaced_secret(
                name, namespace, {"metadata": {"labels": LABEL}})
        for cluster in clusters:
            client.AdmissionregistrationV1Api(world.stack.admin(cluster)).create_validating_webhook_configuration(
                cast(Any, config))  # the client serialises a dict as it is
        yield server.seen  # type: ignore[attr-defined]
    finally:
        for cluster in clusters:
            client.AdmissionregistrationV1Api(world.stack.admin(cluster)).delete_validating_webhook_configuration(
                "deny-gateway-secret-writes")
        for cluster, namespace, name in TARGETS:
            client.CoreV1Api(world.stack.admin(cluster)).patch_namespaced_secret(
                name, namespace, {"metadata": {"labels": dict.fromkeys(LABEL)}})
        server.shutdown()
        server.server_close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(f"{record.getMessage()} {telemetry.fields_of(record)!r}")


def _pieces(text: str, size: int) -> set[str]:
    return {text[i:i + size] for i in range(len(text) - size + 1)}


def _leaks(text: str, token: str) -> list[str]:
    signature = token.rsplit("&", 1)[1]
    pieces = _pieces(signature, 12)
    for value in (token, f"GatewayKey {token}"):
        for offset in range(3):
            encoded = base64.b64encode(b"x" * offset + value.encode()).decode()
            pieces |= _pieces(encoded[4:-4], 16)
    return sorted(p for p in pieces if p in text)


def test_a_webhook_quoting_the_new_token_leaks_it_nowhere(world: World,
                                                           denying_webhook: list[dict[str, Any]]) -> None:
    records = _Records()
    logging.getLogger().addHandler(records)
    try:
        status, body = http("rotate", "POST", "/api/gateways/apim-devstack/gw-shared/rotate",
                            {"service": "apim-devstack", "gateway": "gw-shared"}, {"force": True})
    finally:
        logging.getLogger().removeHandler(records)

    token = world.vault()["apim-apim-devstack-gw-shared-token"]["value"]
    assert token != world.seeded["gw-shared"]  # Key Vault holds the new token; the Secrets were refused it
    # The webhook really saw the token: the denial it sent back quoted its base64.
    quoted = [base64.b64decode(v).decode() for r in denying_webhook for v in r["object"]["data"].values()]
    assert f"GatewayKey {token}" in quoted and token in quoted

    assert status == 207
    errors = [t["error"] for t in body["targets"]]
    assert len(errors) == 2 and all("denied the request: policy forbids this Secret" in e for e in errors), errors
    events = world.stack.outcome_events()
    assert [e["type"] for e in events] == ["ApimTokenRotator.RotationFailed"]
    target_records = [r for r in records.texts if "rotation.target" in r]
    assert len(target_records) == 2 and all("denied the request" in r for r in target_records)

    assert _leaks(json.dumps(body), token) == []
    assert _leaks(json.dumps(events), token) == []
    assert [r for r in records.texts if _leaks(r, token)] == []

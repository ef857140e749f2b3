"""The App Service / Azure Functions managed-identity endpoint, as azure-identity (MSAL) calls it.

Inside Functions the platform sets `IDENTITY_ENDPOINT` (a plain-http loopback URL) and
`IDENTITY_HEADER` (a shared secret). MSAL sends `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&
resource=<resource>` (the scope without `/.default`), header `X-IDENTITY-HEADER`, optionally
`client_id` / `mi_res_id` / `object_id` for a user-assigned identity, and reads `access_token` and
`expires_on` (epoch seconds, a string on App Service) from the answer.

The token handed out per resource is configurable (e.g. the static token kube-apiserver accepts for the
AKS server application `6dae42f8-4368-4678-94ff-3960e28e3630`); other resources get an opaque token
generated once per server. The fake remembers what it issued so the ARM and Key Vault fakes can accept
exactly those tokens (`resource_of(token)`).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

from devstack.httpfake import FakeServer, Request, Response, json_response

TOKEN_PATH = "/msi/token"
DEFAULT_LIFETIME_SECONDS = 3600


def normalize_resource(resource: str) -> str:
    """`https://x/.default`, `https://x/` and `https://x` are the same resource."""
    value = resource.strip()
    if value.endswith("/.default"):
        value = value[: -len("/.default")]
    return value.rstrip("/").lower()


class IdentityFake(FakeServer):
    """Managed-identity token endpoint (plain http on loopback, like the platform's)."""

    def __init__(self, *, header: str | None = None, tokens: Mapping[str, str] | None = None,
                 lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__("identity", host=host, port=port, ssl_context=None)
        self.header = header or secrets.token_urlsafe(24)
        self.lifetime_seconds = lifetime_seconds
        self._tokens: dict[str, str] = {normalize_resource(r): t for r, t in (tokens or {}).items()}
        self._issued: dict[str, str] = {}  # token -> normalized resource
        self._requests: list[dict[str, Any]] = []
        self._state = threading.Lock()
        self.route("GET", r"/.*", self._token)
        self.control("GET", "/_devstack/requests", self._get_requests)

    @property
    def endpoint(self) -> str:
        """The value for `IDENTITY_ENDPOINT`."""
        return self.url + TOKEN_PATH

    def env(self) -> dict[str, str]:
        """`IDENTITY_ENDPOINT` and `IDENTITY_HEADER` for a process that should use this identity."""
        return {"IDENTITY_ENDPOINT": self.endpoint, "IDENTITY_HEADER": self.header}

    def token_for(self, resource: str) -> str:
        """The token this endpoint hands out for `resource` (stable for the server's lifetime)."""
        key = normalize_resource(resource)
        with self._state:
            token = self._tokens.get(key)
            if token is None:
                token = "devstack-mi." + secrets.token_urlsafe(32)
                self._tokens[key] = token
            self._issued[token] = key
            return token

    def resource_of(self, token: str | None) -> str | None:
        """The (normalized) resource a token was issued for, or None if this endpoint never issued it."""
        if not token:
            return None
        with self._state:
            return self._issued.get(token)

    def accepts(self, token: str | None, *resources: str) -> bool:
        """Whether `token` was issued by this endpoint for one of `resources` (any, when none given)."""
        issued = self.resource_of(token)
        if issued is None:
            return False
        return not resources or issued in {normalize_resource(r) for r in resources}

    def error_response(self, status: int, code: str, message: str,
                       headers: Mapping[str, str] | None = None) -> Response:
        """Injected faults answer in the endpoint's own error shape, `{"statusCode", "message"}` (what
        MSAL reads: msal/managed_identity.py `_obtain_token_on_app_service`), not ARM's."""
        return json_response(status, {"statusCode": status, "message": message}, headers)

    def requests(self) -> list[dict[str, Any]]:
        with self._state:
            return [dict(r) for r in self._requests]

    def _get_requests(self, request: Request) -> Response:
        return json_response(200, self.requests())

    def _token(self, request: Request) -> Response:
        resource = request.query.get("resource")
        entry = {
            "resource": resource,
            "apiVersion": request.query.get("api-version"),
            "clientId": request.query.get("client_id"),
            "miResId": request.query.get("mi_res_id"),
            "objectId": request.query.get("object_id"),
            "headerOk": request.header("X-IDENTITY-HEADER") == self.header,
        }
        with self._state:
            self._requests.append(entry)
        if not entry["headerOk"]:
            return json_response(401, {"statusCode": 401,
                                       "message": "missing or wrong X-IDENTITY-HEADER"})
        if not resource:
            return json_response(400, {"statusCode": 400, "message": "the resource parameter is required"})
        token = self.token_for(resource)
        expires_on = int(time.time()) + self.lifetime_seconds
        body: dict[str, Any] = {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
        }
        if entry["clientId"]:
            body["client_id"] = entry["clientId"]
        return json_response(200, body)

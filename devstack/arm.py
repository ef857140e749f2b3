"""An HTTPS Azure Resource Manager fake for APIM self-hosted gateway operations.

Routes (any `api-version`), under `/subscriptions/{sub}/resourceGroups/{rg}/providers/
Microsoft.ApiManagement/service/{svc}/gateways/{gw}` (matched case-insensitively, like ARM):

- `GET …`                     the gateway resource
- `GET …/service/{svc}/gateways` (no gateway segment) the service's gateways, ARM's list shape
                              `{"value": [...], "count": n}` (what `client.gateway.list_by_service`
                              reads; one page); a service with no gateway here → 404
- `POST …/generateToken`      `{"keyType", "expiry"}` → `{"value": "{gw}&{yyyyMMddHHmm}&{sig}"}` where
                              sig = base64(HMAC-SHA512(key, f"{gw}\\n{yyyyMMddHHmm}")), expiry truncated
                              to minutes; expiry in the past or beyond now + 30 days → 400
- `POST …/regenerateKey`      `{"keyType"}` → 204 and a new random key: tokens of the old key stop verifying
- `POST …/listKeys`           `{"primary", "secondary"}`

Unknown gateway → 404, bad body → 400, all with ARM's `{"error": {"code", "message"}}`. Every ARM
route needs `Authorization: Bearer <token>` where the token is one the identity fake issued (for
`https://management.azure.com` or this server's own URL, the scope a client of an emulator asks for);
otherwise 401.

Control (no auth, not in the call log):
- `POST /_devstack/gateways {"id": "<full ARM gateway id>"}` → 201 (200 if it already exists)
  `{"id", "name"}`; `GET /_devstack/gateways` → `[{"id", "name"}]`
- `POST /_devstack/verify {"gatewayId", "token"}` → `{"valid", "keyType", "expiresAt", "expired",
  "signatureValid"}` (`valid` = signed by a current key of that gateway and not expired)
- `POST /_devstack/sign {"gatewayId", "keyType", "expiry"}` → `{"value"}` (any expiry, even past;
  not an ARM call: seeds tokens near expiry)
- plus the common `/_devstack/faults` and `/_devstack/calls` routes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from devstack.httpfake import (
    FakeServer,
    HttpError,
    Request,
    Response,
    empty_response,
    json_response,
)

MAX_LIFETIME = timedelta(days=30)
KEY_TYPES = ("primary", "secondary")
MANAGEMENT_RESOURCE = "https://management.azure.com"

_GATEWAY_PATH = (
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ApiManagement"
    r"/service/(?P<svc>[^/]+)/gateways/(?P<gw>[^/]+)"
)
_SERVICE_PATH = _GATEWAY_PATH.rsplit("/gateways/", 1)[0]
_ID = re.compile("^" + _GATEWAY_PATH + "$", re.IGNORECASE)

Authorizer = Callable[[str | None, "ArmFake"], bool]


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(64)).decode()


def sign(gateway: str, key: str, expiry: datetime) -> str:
    """`{gateway}&{yyyyMMddHHmm}&{base64 HMAC-SHA512(key, "{gateway}\\n{yyyyMMddHHmm}")}`."""
    stamp = expiry.astimezone(UTC).strftime("%Y%m%d%H%M")
    mac = hmac.new(key.encode(), f"{gateway}\n{stamp}".encode(), hashlib.sha512).digest()
    return f"{gateway}&{stamp}&{base64.b64encode(mac).decode()}"


def parse_expiry(value: Any, field: str = "expiry") -> datetime:
    if not isinstance(value, str) or not value:
        raise HttpError(400, "ValidationError", f"'{field}' must be an ISO 8601 date-time")
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        # .NET-style 7 fractional digits: trim to microseconds.
        m = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$", value.strip())
        if m is None:
            raise HttpError(400, "ValidationError", f"'{field}' is not a valid date-time") from None
        frac = (m.group(2) or "")[:6]
        try:
            when = datetime.fromisoformat(m.group(1) + (f".{frac}" if frac else "") + (m.group(3) or ""))
        except ValueError:
            raise HttpError(400, "ValidationError", f"'{field}' is not a valid date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass
class Gateway:
    id: str
    subscription: str
    resource_group: str
    service: str
    name: str
    primary: str
    secondary: str

    def key(self, key_type: str) -> str:
        return self.primary if key_type == "primary" else self.secondary

    def resource(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "Microsoft.ApiManagement/service/gateways",
            "name": self.name,
            "properties": {
                "locationData": {"name": "devstack"},
                "description": f"devstack self-hosted gateway {self.name}",
            },
        }


def _key_type(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in KEY_TYPES:
        raise HttpError(400, "ValidationError", "'keyType' must be 'primary' or 'secondary'")
    return value.lower()


class ArmFake(FakeServer):
    def __init__(self, ssl_context: ssl.SSLContext, *, authorize: Authorizer | None = None,
                 host: str = "127.0.0.1", port: int = 0, gateways: Iterable[str] = ()) -> None:
        super().__init__("arm", host=host, port=port, ssl_context=ssl_context)
        self._authorize = authorize
        self._gateways: dict[str, Gateway] = {}
        self._state = threading.Lock()
        for gateway_id in gateways:
            self.create_gateway(gateway_id)
        self.route("GET", _GATEWAY_PATH, self._get)
        self.route("GET", _SERVICE_PATH + "/gateways", self._list)
        self.route("POST", _GATEWAY_PATH + "/generateToken", self._generate_token)
        self.route("POST", _GATEWAY_PATH + "/regenerateKey", self._regenerate_key)
        self.route("POST", _GATEWAY_PATH + "/listKeys", self._list_keys)
        self.control("POST", "/_devstack/gateways", self._post_gateway)
        self.control("GET", "/_devstack/gateways", self._get_gateways)
        self.control("POST", "/_devstack/verify", self._post_verify)
        self.control("POST", "/_devstack/sign", self._post_sign)

    # --- in-process API --------------------------------------------------------------------------

    def create_gateway(self, gateway_id: str) -> tuple[Gateway, bool]:
        """Registers a gateway with random keys; returns (gateway, created)."""
        m = _ID.match(gateway_id or "")
        if m is None:
            raise HttpError(400, "ValidationError", "'id' must be a full ARM id of an APIM gateway")
        with self._state:
            existing = self._gateways.get(gateway_id.lower())
            if existing is not None:
                return existing, False
            gw = Gateway(id=gateway_id, subscription=m["sub"], resource_group=m["rg"], service=m["svc"],
                         name=m["gw"], primary=new_key(), secondary=new_key())
            self._gateways[gateway_id.lower()] = gw
            return gw, True

    def gateway(self, gateway_id: str) -> Gateway | None:
        with self._state:
            return self._gateways.get(gateway_id.lower())

    def sign(self, gateway_id: str, key_type: str, expiry: datetime) -> str:
        gw = self._require(gateway_id)
        with self._state:
            key = gw.key(_key_type(key_type))
        return sign(gw.name, key, expiry.astimezone(UTC).replace(second=0, microsecond=0))

    def verify(self, gateway_id: str, token: str) -> dict[str, Any]:
        gw = self._require(gateway_id)
        parts = token.split("&") if isinstance(token, str) else []
        result: dict[str, Any] = {"valid": False, "keyType": None, "expiresAt": None, "expired": None,
                                  "signatureValid": False}
        if len(parts) != 3 or parts[0].lower() != gw.name.lower() or not re.fullmatch(r"\d{12}", parts[1]):
            return result
        try:
            expiry = datetime.strptime(parts[1], "%Y%m%d%H%M").replace(tzinfo=UTC)
        except ValueError:
            return result
        result["expiresAt"] = expiry.isoformat()
        result["expired"] = expiry <= datetime.now(UTC)
        with self._state:
            keys = [(kt, gw.key(kt)) for kt in KEY_TYPES]
        for key_type, key in keys:
            if hmac.compare_digest(sign(parts[0], key, expiry), token):
                result["keyType"] = key_type
                result["signatureValid"] = True
                result["valid"] = not result["expired"]
                break
        return result

    # --- ARM routes ------------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> None:
        token = request.bearer
        ok = bool(token) if self._authorize is None else self._authorize(token, self)
        if not ok:
            raise HttpError(401, "AuthenticationFailed" if token else "AuthenticationFailedMissingToken",
                            "Authentication failed. The 'Authorization' header is missing or invalid.")

    def _require(self, gateway_id: str) -> Gateway:
        gw = self.gateway(gateway_id)
        if gw is None:
            raise HttpError(404, "ResourceNotFound", f"Gateway not found: {gateway_id}")
        return gw

    def _target(self, request: Request) -> Gateway:
        self._authenticate(request)
        assert request.match is not None
        m = request.match
        gateway_id = (f"/subscriptions/{m['sub']}/resourceGroups/{m['rg']}/providers/"
                      f"Microsoft.ApiManagement/service/{m['svc']}/gateways/{m['gw']}")
        return self._require(gateway_id)

    def _get(self, request: Request) -> Response:
        return json_response(200, self._target(request).resource(), {"ETag": '"devstack"'})

    def _list(self, request: Request) -> Response:
        self._authenticate(request)
        assert request.match is not None
        m = request.match
        with self._state:
            found = [g.resource() for g in self._gateways.values()
                     if (g.subscription.lower(), g.resource_group.lower(), g.service.lower())
                     == (m["sub"].lower(), m["rg"].lower(), m["svc"].lower())]
        if not found:
            raise HttpError(404, "ResourceNotFound", f"API Management service {m['svc']} not found")
        return json_response(200, {"value": found, "count": len(found)})

    def _generate_token(self, request: Request) -> Response:
        gw = self._target(request)
        body = request.json_object()
        key_type = _key_type(body.get("keyType"))
        expiry = parse_expiry(body.get("expiry"))
        now = datetime.now(UTC)
        if expiry <= now:
            raise HttpError(400, "ValidationError", "'expiry' must be in the future")
        if expiry > now + MAX_LIFETIME:
            raise HttpError(400, "ValidationError",
                            "'expiry' must not be more than 30 days from now")
        with self._state:
            key = gw.key(key_type)
        return json_response(200, {"value": sign(gw.name, key, expiry)})

    def _regenerate_key(self, request: Request) -> Response:
        gw = self._target(request)
        key_type = _key_type(request.json_object().get("keyType"))
        with self._state:
            if key_type == "primary":
                gw.primary = new_key()
            else:
                gw.secondary = new_key()
        return empty_response(204)

    def _list_keys(self, request: Request) -> Response:
        gw = self._target(request)
        with self._state:
            keys = {"primary": gw.primary, "secondary": gw.secondary}
        return json_response(200, keys, {"ETag": '"devstack"'})

    # --- control routes --------------------------------------------------------------------------

    def _post_gateway(self, request: Request) -> Response:
        gw, created = self.create_gateway(request.json_object().get("id", ""))
        return json_response(201 if created else 200, {"id": gw.id, "name": gw.name})

    def _get_gateways(self, request: Request) -> Response:
        with self._state:
            return json_response(200, [{"id": g.id, "name": g.name} for g in self._gateways.values()])

    def _post_verify(self, request: Request) -> Response:
        body = request.json_object()
        token = body.get("token")
        if not isinstance(token, str):
            raise HttpError(400, "BadRequest", "'token' must be a string")
        if token.startswith("GatewayKey "):
            token = token[len("GatewayKey "):]
        return json_response(200, self.verify(str(body.get("gatewayId", "")), token))

    def _post_sign(self, request: Request) -> Response:
        body = request.json_object()
        expiry = parse_expiry(body.get("expiry"))
        return json_response(200, {"value": self.sign(str(body.get("gatewayId", "")),
                                                      str(body.get("keyType", "primary")), expiry)})


def identity_authorizer(identity: Any, *extra_resources: str) -> Authorizer:
    """Accept tokens the identity fake issued for ARM (`https://management.azure.com`) or this server."""
    def authorize(token: str | None, server: ArmFake) -> bool:
        return bool(identity.accepts(token, MANAGEMENT_RESOURCE, server.url, *extra_resources))
    return authorize

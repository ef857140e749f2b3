"""An HTTPS Azure Key Vault (secrets) fake that azure-keyvault-secrets talks to unmodified.

Auth is Key Vault's challenge protocol: a request without a (valid) bearer token gets
`401` + `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{tenant}",
resource="https://vault.azure.net"`; the SDK then asks its credential for `https://vault.azure.net/.default`
and retries with the token. Tokens are accepted when the identity fake issued them for that resource.

Routes (any `api-version`; names case-insensitive, validated as `^[0-9a-zA-Z-]{1,127}$`):
- `PUT /secrets/{name}`                      new version: `value`, `contentType`, `tags` (≤ 15),
                                              `attributes.{enabled,nbf,exp}` (epoch seconds)
- `GET /secrets/{name}[/{version}]`          the bundle (latest when no version); 404 SecretNotFound;
                                              403 for a disabled version
- `PATCH /secrets/{name}[/{version}]`        update `contentType`, `tags`, `attributes` of a version
- `GET /secrets?maxresults=N`                latest properties of every secret (no values), 25 per
                                              page by default, `nextLink` with `$skiptoken`
- `GET /secrets/{name}/versions`             properties of every version, paged the same way
- `DELETE /secrets/{name}`                   removes the secret (no soft-delete in the fake)

Ids look like the service's: `https://<host:port>/secrets/{name}/{version}`.

Control (no auth, not in the call log):
- `GET /_devstack/secrets[?values=true]` → `{"secrets": [{"name", "versions", "latestVersion",
  "contentType", "tags", "expires", "enabled"[, "value"]}]}`
- `POST /_devstack/secrets {"name", "value", "contentType"?, "tags"?, "expires"?}` → `{"id"}`
  (seeding without auth; `expires` ISO 8601 or epoch seconds)
- the common `/_devstack/faults` and `/_devstack/calls` routes.
"""

from __future__ import annotations

import base64
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from devstack.httpfake import FakeServer, HttpError, Request, Response, empty_response, json_response

VAULT_RESOURCE = "https://vault.azure.net"
DEFAULT_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
DEFAULT_PAGE_SIZE = 25
MAX_TAGS = 15
_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_SEGMENT = r"(?P<name>[^/]+)"

Authorizer = Callable[[str | None], bool]


@dataclass
class Version:
    id: str
    value: str
    content_type: str | None
    tags: dict[str, str] | None
    enabled: bool
    nbf: int | None
    exp: int | None
    created: int
    updated: int

    def attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {"enabled": self.enabled, "created": self.created, "updated": self.updated,
                                 "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}
        if self.nbf is not None:
            attrs["nbf"] = self.nbf
        if self.exp is not None:
            attrs["exp"] = self.exp
        return attrs


@dataclass
class Secret:
    name: str
    versions: list[Version] = field(default_factory=list)

    @property
    def latest(self) -> Version:
        return self.versions[-1]

    def find(self, version: str | None) -> Version | None:
        if not version:
            return self.latest
        return next((v for v in self.versions if v.id == version.lower()), None)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise HttpError(400, "BadParameter",
                        "The request URI contains an invalid name: secret names may contain only "
                        "0-9, a-z, A-Z and -, and be 1-127 characters long.")
    return name


def _check_tags(tags: Any) -> dict[str, str] | None:
    if tags is None:
        return None
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in tags.items()):
        raise HttpError(400, "BadParameter", "tags must be an object of string values")
    if len(tags) > MAX_TAGS:
        raise HttpError(400, "BadParameter", f"a secret may have at most {MAX_TAGS} tags, got {len(tags)}")
    for key, value in tags.items():
        if not key or len(key) > 512 or len(value) > 256:
            raise HttpError(400, "BadParameter", "tag names are 1-512 and tag values 0-256 characters")
    return dict(tags)


def _epoch(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HttpError(400, "BadParameter", f"attributes.{name} must be epoch seconds")
    return int(value)


def _page_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.lower().encode()).decode().rstrip("=")


def _after(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        raise HttpError(400, "BadParameter", "invalid $skiptoken") from None


class KeyVaultFake(FakeServer):
    def __init__(self, ssl_context: ssl.SSLContext, *, authorize: Authorizer | None = None,
                 tenant: str = DEFAULT_TENANT, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__("keyvault", host=host, port=port, ssl_context=ssl_context)
        self._authorize = authorize
        self.tenant = tenant
        self._secrets: dict[str, Secret] = {}
        self._deleted: dict[str, Secret] = {}  # soft-deleted: the name cannot be reused until purged
        self._state = threading.Lock()
        self.route("GET", r"/secrets/?", self._list)
        self.route("GET", rf"/secrets/{_SEGMENT}/versions/?", self._list_versions)
        self.route("PUT", rf"/secrets/{_SEGMENT}/?", self._put)
        self.route("GET", rf"/secrets/{_SEGMENT}(?:/(?P<version>[^/]*))?", self._get)
        self.route("PATCH", rf"/secrets/{_SEGMENT}(?:/(?P<version>[^/]*))?", self._patch)
        self.route("DELETE", rf"/secrets/{_SEGMENT}/?", self._delete)
        self.route("DELETE", rf"/deletedsecrets/{_SEGMENT}/?", self._purge)
        self.control("GET", "/_devstack/secrets", self._dump)
        self.control("POST", "/_devstack/secrets", self._seed)

    # --- in-process API --------------------------------------------------------------------------

    def soft_delete(self, name: str) -> None:
        """What `DELETE /secrets/{name}` does on a vault with soft delete (every new vault has it)."""
        with self._state:
            secret = self._secrets.pop(name.lower(), None)
            if secret is not None:
                self._deleted[name.lower()] = secret

    def set_secret(self, name: str, value: str, *, content_type: str | None = None,
                   tags: dict[str, str] | None = None, enabled: bool = True, nbf: int | None = None,
                   exp: int | None = None) -> str:
        """Adds a version; returns its id (`https://…/secrets/{name}/{version}`)."""
        secret, version = self._add_version(name, value, content_type=content_type, tags=tags,
                                            enabled=enabled, nbf=nbf, exp=exp)
        return self._id(secret, version)

    def _add_version(self, name: str, value: str, *, content_type: str | None,
                     tags: dict[str, str] | None, enabled: bool, nbf: int | None,
                     exp: int | None) -> tuple[Secret, Version]:
        check_name(name)
        now = int(time.time())
        version = Version(id=uuid.uuid4().hex, value=value, content_type=content_type,
                          tags=_check_tags(tags), enabled=enabled, nbf=nbf, exp=exp, created=now, updated=now)
        with self._state:
            secret = self._secrets.setdefault(name.lower(), Secret(name=name))
            secret.versions.append(version)
        return secret, version

    def dump(self, *, values: bool = False) -> list[dict[str, Any]]:
        with self._state:
            out = []
            for secret in sorted(self._secrets.values(), key=lambda s: s.name.lower()):
                latest = secret.latest
                entry: dict[str, Any] = {
                    "name": secret.name, "versions": len(secret.versions), "latestVersion": latest.id,
                    "contentType": latest.content_type, "tags": latest.tags, "expires": latest.exp,
                    "enabled": latest.enabled,
                }
                if values:
                    entry["value"] = latest.value
                out.append(entry)
            return out

    # --- helpers ---------------------------------------------------------------------------------

    def _id(self, secret: Secret, version: Version | None = None) -> str:
        base = f"{self.url}/secrets/{secret.name}"
        return f"{base}/{version.id}" if version is not None else base

    def _authenticate(self, request: Request) -> None:
        token = request.bearer
        ok = bool(token) if self._authorize is None else self._authorize(token)
        if not ok:
            challenge = (f'Bearer authorization="https://login.microsoftonline.com/{self.tenant}", '
                         f'resource="{VAULT_RESOURCE}"')
            message = ("AKV10000: Request is missing a Bearer or PoP token." if not token
                       else "AKV10022: Invalid audience or token.")
            raise HttpError(401, "Unauthorized", message, {"WWW-Authenticate": challenge})

    def _secret(self, request: Request) -> Secret:
        assert request.match is not None
        name = check_name(request.match["name"])
        with self._state:
            secret = self._secrets.get(name.lower())
        if secret is None:
            raise HttpError(404, "SecretNotFound",
                            f"A secret with (name/id) {name} was not found in this key vault. If you recently "
                            "deleted this secret you may be able to recover it using the correct recovery "
                            "command.")
        return secret

    def _version(self, request: Request, secret: Secret) -> Version:
        assert request.match is not None
        wanted = request.match.groupdict().get("version")
        with self._state:
            version = secret.find(wanted)
        if version is None:
            raise HttpError(404, "SecretNotFound",
                            f"A secret with (name/id) {secret.name}/{wanted} was not found in this key vault.")
        return version

    def _bundle(self, secret: Secret, version: Version, *, with_value: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self._id(secret, version), "attributes": version.attributes()}
        if with_value:
            body["value"] = version.value
        if version.content_type is not None:
            body["contentType"] = version.content_type
        if version.tags is not None:
            body["tags"] = version.tags
        return body

    def _item(self, secret: Secret, version: Version, *, versioned: bool) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self._id(secret, version if versioned else None),
                                "attributes": version.attributes()}
        if version.content_type is not None:
            item["contentType"] = version.content_type
        if version.tags is not None:
            item["tags"] = version.tags
        return item

    def _page(self, request: Request, path: str, items: list[tuple[str, dict[str, Any]]]) -> Response:
        """`items` are (sort key, item) sorted by key; pages of `maxresults` with a `$skiptoken`."""
        raw = request.query.get("maxresults")
        try:
            size = int(raw) if raw else DEFAULT_PAGE_SIZE
        except ValueError:
            raise HttpError(400, "BadParameter", "maxresults must be an integer") from None
        if not 1 <= size <= DEFAULT_PAGE_SIZE:
            raise HttpError(400, "BadParameter", f"maxresults must be between 1 and {DEFAULT_PAGE_SIZE}")
        after = _after(request.query.get("$skiptoken"))
        remaining = [(k, i) for k, i in items if after is None or k > after]
        page = remaining[:size]
        next_link = None
        if len(remaining) > size:
            api = quote(request.query.get("api-version", "7.5"))
            next_link = (f"{self.url}{path}?api-version={api}&$skiptoken={_page_token(page[-1][0])}"
                         f"&maxresults={size}")
        return json_response(200, {"value": [i for _, i in page], "nextLink": next_link})

    # --- routes ----------------------------------------------------------------------------------

    def _put(self, request: Request) -> Response:
        self._authenticate(request)
        assert request.match is not None
        name = check_name(request.match["name"])
        with self._state:
            deleted = name.lower() in self._deleted
        if deleted:  # the service's answer (its inner error code is what clients can act on)
            return json_response(409, {"error": {
                "code": "Conflict",
                "message": f"Secret {name} is currently in a deleted but recoverable state, and its name "
                           "cannot be reused; in this state, the secret can only be recovered or purged.",
                "innererror": {"code": "ObjectIsDeletedButRecoverable"}}})
        body = request.json_object()
        value = body.get("value")
        if not isinstance(value, str):
            raise HttpError(400, "BadParameter", "The parameter 'value' is required and must be a string.")
        attrs = body.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise HttpError(400, "BadParameter", "attributes must be an object")
        content_type = body.get("contentType")
        if content_type is not None and not isinstance(content_type, str):
            raise HttpError(400, "BadParameter", "contentType must be a string")
        enabled = attrs.get("enabled", True)
        secret, version = self._add_version(
            name, value, content_type=content_type, tags=body.get("tags"),
            enabled=bool(True if enabled is None else enabled),
            nbf=_epoch(attrs.get("nbf"), "nbf"), exp=_epoch(attrs.get("exp"), "exp"))
        return json_response(200, self._bundle(secret, version, with_value=True))

    def _get(self, request: Request) -> Response:
        self._authenticate(request)
        secret = self._secret(request)
        version = self._version(request, secret)
        if not version.enabled:
            raise HttpError(403, "Forbidden", "Operation get is not allowed on a disabled secret.")
        return json_response(200, self._bundle(secret, version, with_value=True))

    def _patch(self, request: Request) -> Response:
        self._authenticate(request)
        secret = self._secret(request)
        version = self._version(request, secret)
        body = request.json_object()
        attrs = body.get("attributes")
        if attrs is not None and not isinstance(attrs, dict):
            raise HttpError(400, "BadParameter", "attributes must be an object")
        tags = _check_tags(body.get("tags")) if "tags" in body else version.tags
        with self._state:
            if "contentType" in body:
                version.content_type = body["contentType"]
            version.tags = tags
            if attrs:
                if attrs.get("enabled") is not None:
                    version.enabled = bool(attrs["enabled"])
                if "nbf" in attrs:
                    version.nbf = _epoch(attrs["nbf"], "nbf")
                if "exp" in attrs:
                    version.exp = _epoch(attrs["exp"], "exp")
            version.updated = int(time.time())
        return json_response(200, self._bundle(secret, version, with_value=False))

    def _delete(self, request: Request) -> Response:
        self._authenticate(request)
        secret = self._secret(request)
        self.soft_delete(secret.name)
        body = self._bundle(secret, secret.latest, with_value=False)
        body["recoveryId"] = f"{self.url}/deletedsecrets/{secret.name}"
        return json_response(200, body)

    def _purge(self, request: Request) -> Response:
        self._authenticate(request)
        assert request.match is not None
        name = check_name(request.match["name"])
        with self._state:
            if self._deleted.pop(name.lower(), None) is None:
                raise HttpError(404, "SecretNotFound", f"Deleted Secret not found: {name}")
        return empty_response(204)

    def _list(self, request: Request) -> Response:
        self._authenticate(request)
        with self._state:
            secrets = sorted(self._secrets.values(), key=lambda s: s.name.lower())
            items = [(s.name.lower(), self._item(s, s.latest, versioned=False)) for s in secrets]
        return self._page(request, "/secrets", items)

    def _list_versions(self, request: Request) -> Response:
        self._authenticate(request)
        assert request.match is not None
        name = check_name(request.match["name"])
        with self._state:
            secret = self._secrets.get(name.lower())
            items = [] if secret is None else [
                (f"{i:08d}", self._item(secret, v, versioned=True)) for i, v in enumerate(secret.versions)
            ]
        return self._page(request, f"/secrets/{name}/versions", items)

    # --- control ---------------------------------------------------------------------------------

    def _dump(self, request: Request) -> Response:
        values = request.query.get("values", "").lower() in ("1", "true", "yes")
        return json_response(200, {"secrets": self.dump(values=values)})

    def _seed(self, request: Request) -> Response:
        body = request.json_object()
        name, value = body.get("name"), body.get("value")
        if not isinstance(name, str) or not isinstance(value, str):
            raise HttpError(400, "BadRequest", "'name' and 'value' must be strings")
        expires = body.get("expires")
        exp: int | None
        if isinstance(expires, str):
            exp = int(datetime.fromisoformat(expires).timestamp())
        else:
            exp = _epoch(expires, "expires")
        content_type = body.get("contentType")
        secret_id = self.set_secret(name, value, content_type=content_type if isinstance(content_type, str)
                                    else None, tags=body.get("tags"), exp=exp)
        return json_response(201, {"id": secret_id})


def identity_authorizer(identity: Any) -> Authorizer:
    """Accept tokens the identity fake issued for `https://vault.azure.net`."""
    def authorize(token: str | None) -> bool:
        return bool(identity.accepts(token, VAULT_RESOURCE))
    return authorize

"""Who asked: the caller identity App Service authentication puts in request headers (pure).

With App Service authentication (Easy Auth) on, the platform injects `X-MS-CLIENT-PRINCIPAL-NAME`,
`-ID`, `-IDP` and `X-MS-CLIENT-PRINCIPAL` (base64 JSON of the claims) and does not let external
requests set them (Microsoft Learn, "Work with user identities in Azure App Service authentication").
Without it, a caller holding the key could write anything there, so the record says which case it is
(`verified` follows `WEBSITE_AUTH_ENABLED`, which the platform sets when authentication is on).
Values are bounded and cleaned like any free text before they reach a report or a log.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass

from rotation.core.redact import clean_reason

_NAME_CLAIMS = ("name", "preferred_username", "upn", "email",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid", "sub")


@dataclass(frozen=True, slots=True)
class Caller:
    name: str | None
    principal_id: str | None
    identity_provider: str | None
    verified: bool

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "principalId": self.principal_id, "identityProvider": self.identity_provider,
                "verified": self.verified}


def _clean(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return clean_reason(value, limit=120)


def _claims(encoded: str | None) -> dict[str, str]:
    if not encoded or len(encoded) > 16_384:
        return {}
    try:
        doc = json.loads(base64.b64decode(encoded, validate=False))
    except (binascii.Error, ValueError, RecursionError, UnicodeDecodeError):
        return {}
    claims = doc.get("claims") if isinstance(doc, dict) else None
    out: dict[str, str] = {}
    for claim in claims if isinstance(claims, list) else []:
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str):
            out.setdefault(claim["typ"], claim["val"])
    if isinstance(doc, dict) and isinstance(doc.get("auth_typ"), str):
        out.setdefault("auth_typ", doc["auth_typ"])
    return out


def caller_from_headers(headers: Mapping[str, str], auth_enabled: bool) -> Caller | None:
    """The caller named by App Service authentication's headers, or None when there are none."""
    lower = {k.lower(): v for k, v in headers.items()}
    claims = _claims(lower.get("x-ms-client-principal"))
    name = _clean(lower.get("x-ms-client-principal-name")) or next(
        (_clean(claims[c]) for c in _NAME_CLAIMS if c in claims), None)
    principal = _clean(lower.get("x-ms-client-principal-id")) or next(
        (_clean(claims[c]) for c in _ID_CLAIMS if c in claims), None)
    idp = _clean(lower.get("x-ms-client-principal-idp")) or _clean(claims.get("auth_typ"))
    if name is None and principal is None:
        return None
    return Caller(name, principal, idp, verified=auth_enabled)

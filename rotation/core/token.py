"""The gateway token as a value that cannot leak.

APIM hands out `{gateway}&{yyyyMMddHHmm}&{signature}`; the portal shows it with a `GatewayKey `
prefix. The expiry inside the token is what every never-downgrade decision compares, so it is parsed
once here. `repr`/`str` show only the gateway, the expiry and a fingerprint, so a token that ends up in
an f-string or a traceback still does not leak.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rotation.core.errors import InvalidToken

PREFIX = "GatewayKey "
DEFAULT_FORMAT = "GatewayKey {token}"
RAW_FORMAT = "{token}"
_SHAPE = re.compile(r"^(?P<gateway>[^&\s]{1,256})&(?P<expiry>\d{12})&(?P<sig>[A-Za-z0-9+/=_-]{8,1024})$")


def fingerprint(value: str) -> str:
    """First 12 hex chars of SHA-256: enough to tell tokens apart, useless to an attacker."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class GatewayToken:
    value: str = field(repr=False)
    gateway: str
    expires_at: datetime

    @classmethod
    def parse(cls, text: str) -> GatewayToken:
        raw = text.strip()
        if raw.startswith(PREFIX):
            raw = raw[len(PREFIX) :].strip()
        match = _SHAPE.fullmatch(raw)
        if match is None:
            # Never echo the input: it may be a real credential in the wrong shape.
            raise InvalidToken(
                f"not a gateway token (expected '{{gateway}}&{{yyyyMMddHHmm}}&{{signature}}', "
                f"got {len(text)} chars, fingerprint {fingerprint(text)})"
            )
        try:
            expires = datetime.strptime(match["expiry"], "%Y%m%d%H%M").replace(tzinfo=UTC)
        except ValueError:
            raise InvalidToken(
                f"gateway token has an invalid expiry field (fingerprint {fingerprint(raw)})"
            ) from None
        return cls(value=raw, gateway=match["gateway"], expires_at=expires)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.value)

    def formatted(self, fmt: str = DEFAULT_FORMAT) -> str:
        """The token as a target stores it (`GatewayKey {token}` or the raw `{token}`)."""
        return fmt.replace("{token}", self.value)

    def __repr__(self) -> str:
        return (
            f"GatewayToken(gateway={self.gateway!r}, expires_at={self.expires_at.isoformat()}, "
            f"fingerprint={self.fingerprint!r})"
        )

    __str__ = __repr__


def parse_stored(text: str | None) -> GatewayToken | None:
    """Parse whatever a Secret holds; anything that is not a token counts as no token."""
    if not text:
        return None
    try:
        return GatewayToken.parse(text)
    except InvalidToken:
        return None

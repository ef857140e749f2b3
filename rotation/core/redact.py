"""Removing credentials from free text before it is logged, published or returned (pure).

Operators type a `reason` for a rotation; during an incident the text pasted there may well be the
leaked token itself, a SAS URL, a connection string or a bearer header, and not always verbatim: URL-
encoded (copied from a query string), base64-wrapped, or wrapped over lines. Upstream error messages
may echo a request body. Anything shaped like a gateway token or a secret is cut out whole (a partial
signature is still a leak); the rest of the text is kept.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote

REDACTED = "<redacted>"

_B64 = r"[A-Za-z0-9+/=_-]"
# A gateway token ({gateway}&{yyyyMMddHHmm}&{signature}), with the portal's `GatewayKey ` prefix or not.
# A signature wrapped over lines or split by spaces goes too: continuation chunks that look like base64
# (a digit, `+`, `/` or `=` in them, so that the words of a sentence after a token are kept).
TOKENISH = re.compile(rf"(GatewayKey\s+)?[^&\s\"']{{1,256}}&\d{{12}}&\s*{_B64}{{8,}}"
                      rf"(?:\s+(?={_B64}*[0-9+/=]){_B64}{{4,}})*")
_SECRETISH = [
    re.compile(r"\bGatewayKey\s+\S+", re.I),                                  # portal form, any shape
    re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]{8,}", re.I),                   # an Authorization value
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # a JWT
    # name=value / "name": "value" where the name ends in a secret word: SAS `sig=`, connection strings'
    # `AccountKey=` / `SharedAccessKey=`, OAuth `client_secret=`, JSON `"accessToken": "..."`.
    re.compile(r"""["']?\b[\w-]{0,40}?(?:sig|signature|key|secret|password|passwd|pwd|token|code|credential)"""
               r"""["']?\s*[=:]\s*["']?[^&\s"';,]+""", re.I),
    # Long runs of key material (base64 / hex); 40+ so that GUIDs (36) and resource ids ('/' splits
    # them) survive.
    re.compile(r"(?<![A-Za-z0-9+=_-])[A-Za-z0-9+_-]{40,}={0,2}(?![A-Za-z0-9+=_-])"),
]
_PERCENT_ENCODED = re.compile(r"(?<![^\s\"'<>])[^\s\"'<>]*%[0-9A-Fa-f]{2}[^\s\"'<>]*")
_BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}")


def _plain(text: str) -> str:
    cleaned = TOKENISH.sub(REDACTED, text)
    for pattern in _SECRETISH:
        cleaned = pattern.sub(REDACTED, cleaned)
    return cleaned


def _percent_encoded(match: re.Match[str]) -> str:
    """A URL-encoded word (a query string, a double-encoded paste) that hides a secret goes whole."""
    word = decoded = match.group(0)
    for _ in range(3):
        decoded = unquote(decoded)
        if _plain(decoded) != decoded:
            return REDACTED
        if "%" not in decoded:
            break
    return word


def _base64_wrapped(match: re.Match[str]) -> str:
    """A base64 run whose decoding holds a secret (a token wrapped by a tool or a Secret's data)."""
    run = match.group(0)
    try:
        decoded = base64.b64decode(run + "=" * (-len(run) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return run
    return REDACTED if _plain(decoded) != decoded else run


def redact(text: str) -> str:
    """`text` without anything that looks like a token or secret (each replaced by `<redacted>`)."""
    cleaned = _plain(text)
    if "%" in cleaned:
        cleaned = _PERCENT_ENCODED.sub(_percent_encoded, cleaned)
    return _BASE64_RUN.sub(_base64_wrapped, cleaned)


def clean_reason(reason: str, limit: int = 200) -> str:
    """An operator's free-text reason, safe to log and publish: secrets removed, control characters
    flattened, length bounded. Only a head of the text is read (what is kept is shorter still), so a
    megabyte of pasted text costs no more than a few kilobytes."""
    head = reason[: max(2048, limit * 16)]
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in head).split())
    cleaned = redact(flat)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"

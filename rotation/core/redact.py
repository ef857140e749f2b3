"""Removing credentials from free text before it is logged, published or returned (pure).

Operators type a `reason` for a rotation; during an incident the text pasted there may well be the
leaked token itself, a SAS URL or a bearer header. Upstream error messages may echo a request body.
Anything shaped like a gateway token or a secret is cut out; the rest of the text is kept.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

# A gateway token ({gateway}&{yyyyMMddHHmm}&{signature}), with the portal's `GatewayKey ` prefix or not.
TOKENISH = re.compile(r"(GatewayKey\s+)?[^&\s\"']{1,256}&\d{12}&[A-Za-z0-9+/=_-]{8,}")
_SECRETISH = [
    re.compile(r"\bGatewayKey\s+\S+", re.I),                                  # portal form, any shape
    re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]{8,}", re.I),                   # an Authorization value
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # a JWT
    re.compile(r"\b(sig|signature|key|secret|password|pwd|token|access_token|code)=[^&\s\"']+", re.I),
    # Long runs of key material (base64 / hex); 40+ so that GUIDs (36) and resource ids ('/' splits
    # them) survive.
    re.compile(r"(?<![A-Za-z0-9+=_-])[A-Za-z0-9+_-]{40,}={0,2}(?![A-Za-z0-9+=_-])"),
]


def redact(text: str) -> str:
    """`text` without anything that looks like a token or secret (each replaced by `<redacted>`)."""
    cleaned = TOKENISH.sub(REDACTED, text)
    for pattern in _SECRETISH:
        cleaned = pattern.sub(REDACTED, cleaned)
    return cleaned


def clean_reason(reason: str, limit: int = 200) -> str:
    """An operator's free-text reason, safe to log and publish: secrets removed, control characters
    flattened, length bounded."""
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in reason).split())
    cleaned = redact(flat)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"

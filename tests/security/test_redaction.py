"""Free text (an operator's `reason`, upstream error messages) in every shape a credential is pasted in.

`redact`/`clean_reason` must cut out the whole credential, whatever wrapping it comes in: no piece of
12 or more characters of the secret may survive (a partial signature is still a leak), while ordinary
text about keys, tokens and resource ids stays readable.

Shapes: the gateway token (`{gateway}&{yyyyMMddHHmm}&{signature}`, FACTS.md), URL-encoded as it is in a
query string, base64-wrapped, split by whitespace (a wrapped paste), Storage connection strings
(`AccountKey=`, Microsoft Learn "Configure Azure Storage connection strings"), Service Bus / Event Hubs
connection strings (`SharedAccessKey=`), OAuth client secrets (`client_secret=`, RFC 6749 §2.3.1), JSON
bodies (`"token": "..."`), and an Authorization header.
"""

from __future__ import annotations

import base64
import urllib.parse

import pytest

from rotation.adapters.credential import scrub
from rotation.core.redact import clean_reason, redact

SIG = "Zm9vYmFy/+abcDEF1234567890/qwertyuiopASDFGHJKL+zxcvbnm0987654321/QWERTYUI+asdfghjklZXCVBNM12=="
TOKEN = f"gw-1&202612011200&{SIG}"
KEY = "k3Y/m4T3r1aL+with/SlashesAndPlus+0123456789abcdefABCDEFGHIJKLMNOPQRSTUVWXYZ+/=="


def _pieces(secret: str, size: int = 12) -> list[str]:
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


def _leaks(text: str, secret: str) -> list[str]:
    return [p for p in _pieces(secret) if p in text]


HOSTILE = {
    "url-encoded token": (f"see {urllib.parse.quote(TOKEN, safe='')} now", SIG),
    "url-encoded portal form": (urllib.parse.quote(f"GatewayKey {TOKEN}"), SIG),
    "double url-encoded": (urllib.parse.quote(urllib.parse.quote(TOKEN, safe=""), safe=""), SIG),
    "base64-wrapped token": (base64.b64encode(f"GatewayKey {TOKEN}".encode()).decode(), SIG),
    "base64 with slashes": (base64.b64encode(("x" * 7 + TOKEN + "\n").encode()).decode(), SIG),
    "split by whitespace": (f"{TOKEN[:40]} {TOKEN[40:]}", SIG),
    "space after the expiry": (f"gw-1&202612011200& {SIG}", SIG),
    "wrapped over lines": (f"GatewayKey gw-1&202612011200&{SIG[:30]}\n{SIG[30:60]}\n{SIG[60:]}", SIG),
    "storage connection string": (f"DefaultEndpointsProtocol=https;AccountName=st1;AccountKey={KEY};"
                                  "EndpointSuffix=core.windows.net", KEY),
    "service bus connection string": (f"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;"
                                      f"SharedAccessKey={KEY}", KEY),
    "oauth client secret": ("client_secret=abc~DEF.123_ghiJKL-456mno", "abc~DEF.123_ghiJKL-456mno"),
    "json token field": (f'{{"token": "{KEY}"}}', KEY),
    "json accessToken field": (f'{{"accessToken":"{KEY}"}}', KEY),
    "lowercase bearer header": (f"authorization: bearer {KEY}", KEY),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_no_piece_of_a_pasted_credential_survives(name: str) -> None:
    text, secret = HOSTILE[name]
    for cleaned in (redact(text), clean_reason(text, limit=2000), scrub(text)):
        assert _leaks(cleaned, secret) == [], (name, cleaned)
        assert "<redacted>" in cleaned


ORDINARY = [
    "rotated after INC-1234: the gateway key was leaked, token expired at 2026-12-01T12:00:00Z",
    "/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/rg-prod/providers/"
    "Microsoft.ApiManagement/service/apim-x/gateways/gw-1",
    "keyType primary -> secondary; see https://learn.microsoft.com/azure/api-management/self-hosted-gateway-overview",
    "compromised credentials reported by the security team (ticket 42), rotate immediately",
    "gw-1 & gw-2 rotated at 202612011200 as planned",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text
    assert clean_reason(text, limit=2000) == text


@pytest.mark.parametrize("filler", ["a-", "key-", "a%41", "x&202612011200&", "abcd1 "])
def test_redaction_time_is_bounded_for_a_huge_reason(filler: str) -> None:
    """A reason is read in full by the handler: redaction must not be quadratic in its length."""
    import time

    text = filler * (400_000 // len(filler))
    started = time.monotonic()
    cleaned = clean_reason(text)
    assert time.monotonic() - started < 0.5
    assert len(cleaned) <= 200

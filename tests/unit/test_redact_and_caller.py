"""Pure helpers at the trust boundary: free-text scrubbing and the App Service caller headers."""

from __future__ import annotations

import base64
import json

import pytest

from rotation.core.caller import caller_from_headers
from rotation.core.redact import clean_reason, redact

TOKEN = "gw-1&202612010000&" + "Zm9vYmFy" * 8


@pytest.mark.parametrize(("text", "expected"), [
    (f"leaked {TOKEN}", "leaked <redacted>"),
    (f"GatewayKey {TOKEN} pasted", "<redacted> pasted"),
    ("GatewayKey whatever-shape", "<redacted>"),
    ("auth: Bearer abcdefgh12345678", "auth: <redacted>"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln end", "jwt <redacted> end"),
    ("https://a.blob.core.windows.net/c?sv=2024&sig=abc%2Fdef", "https://a.blob.core.windows.net/c?sv=2024&<redacted>"),
    ("password=hunter2 ok", "<redacted> ok"),
    ("key " + "A1b2" * 11, "key <redacted>"),
])
def test_secrets_are_cut_out(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "routine rotation after incident INC-4711",
    "/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/rg/providers/"
    "Microsoft.ApiManagement/service/apim/gateways/gw-1",
    "keyType=primary, 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
])
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text


def test_reason_is_flattened_and_bounded() -> None:
    assert clean_reason("a\nb\x00c\u202ed") == "a b c d"
    assert len(clean_reason("x " * 500)) == 200


def test_caller_headers() -> None:
    assert caller_from_headers({}, auth_enabled=True) is None
    caller = caller_from_headers({"X-MS-CLIENT-PRINCIPAL-NAME": f"eve {TOKEN}\n"}, auth_enabled=False)
    assert caller is not None and caller.name == "eve <redacted>" and not caller.verified
    principal = base64.b64encode(json.dumps({"claims": [{"typ": "upn", "val": "x@y"}]}).encode()).decode()
    caller = caller_from_headers({"x-ms-client-principal": principal}, auth_enabled=True)
    assert caller is not None and caller.to_dict() == {"name": "x@y", "principalId": None,
                                                       "identityProvider": None, "verified": True}
    for junk in ("%%%", base64.b64encode(b"[1]").decode(), base64.b64encode(b"[" * 5000).decode(), "A" * 20_000):
        assert caller_from_headers({"x-ms-client-principal": junk}, auth_enabled=True) is None

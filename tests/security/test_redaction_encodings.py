"""Gateway tokens in the encodings upstream services and tools put them in, found by a property test.

APIM's gateway token is `{gateway}&{yyyyMMddHHmm}&{signature}` with the signature the base64 of an
HMAC-SHA512 (Microsoft Learn, "Gateway - Generate Token" REST reference and the self-hosted gateway
"Kubernetes deployment" page: the portal shows it as `GatewayKey <token>`; `Secret.data` holds it
base64-encoded, Kubernetes API reference "Secret v1 core"). The encodings are those real encoders
write: Go's `encoding/json` escapes `&` as `\\u0026` (encoding/json/encode.go, HTMLEscape), .NET's
System.Text.Json default encoder also escapes `+` (JavaScriptEncoder.Default), `html.escape` writes
`&amp;`, URL-encoding may be applied several times by proxies that re-encode a query, and base64 is
wrapped every 64 (PEM, RFC 7468) or 76 (MIME, RFC 2045) characters.

Whatever the combination, no run of 12 or more signature characters may survive in the scrubbed text
(`redact` alone: a pasted token the process never saw; `scrub` with the token known: a token it just
generated), nor a 16-character piece of the base64 of the token or its `GatewayKey` form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rotation.core.redact import known_grams, redact, scrub

GATEWAY = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,30}[A-Za-z0-9]", fullmatch=True)
EXPIRY = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2035, 1, 1)).map(
    lambda d: d.replace(tzinfo=UTC).strftime("%Y%m%d%H%M"))


@st.composite
def tokens(draw: st.DrawFn) -> tuple[str, str]:
    """(token, signature): the signature an HMAC-SHA512 over `{gateway}\\n{expiry}` with a random key,
    as APIM computes it (the key is the gateway's primary or secondary key)."""
    gateway, expiry = draw(GATEWAY), draw(EXPIRY)
    key = draw(st.binary(min_size=32, max_size=64))
    signature = base64.b64encode(hmac.new(key, f"{gateway}\n{expiry}".encode(), hashlib.sha512).digest()).decode()
    return f"{gateway}&{expiry}&{signature}", signature


def _go_json(text: str) -> str:
    return json.dumps(text)[1:-1].replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _dotnet_json(text: str) -> str:
    return _go_json(text).replace("+", "\\u002B").replace("'", "\\u0027")


def _wrapped(width: int) -> Callable[[str], str]:
    def wrap(text: str) -> str:
        encoded = base64.b64encode(text.encode()).decode()
        return "\n".join(encoded[i:i + width] for i in range(0, len(encoded), width))
    return wrap


ENCODERS: dict[str, Callable[[str], str]] = {
    "base64": lambda t: base64.b64encode(t.encode()).decode(),
    "base64/64": _wrapped(64),
    "base64/76": _wrapped(76),
    "go-json": _go_json,
    "dotnet-json": _dotnet_json,
    "html": html.escape,
    "url": lambda t: urllib.parse.quote(t, safe=""),
    "url-plus": urllib.parse.quote_plus,
}
FORMS: dict[str, Callable[[str, str], str]] = {
    "raw": lambda token, sig: token,
    "formatted": lambda token, sig: f"GatewayKey {token}",
    "bare signature": lambda token, sig: sig,
    "spaced": lambda token, sig: token.replace("&", " & "),
    "spaced formatted": lambda token, sig: "GatewayKey " + token.replace("&", " & "),
}
CONTEXTS = [
    "{}",
    "leaked: {} (INC-4711)",
    'admission webhook "deny.example.com" denied the request: data={{"config.service.auth.key": "{}"}}',
    "https://example.com/hook?value={}&next=1",
    "<p>{}</p>",
]


def _pieces(secret: str, size: int) -> set[str]:
    return {secret[i:i + size] for i in range(len(secret) - size + 1)}


def _base64_pieces(value: str) -> set[str]:
    out: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"x" * offset + value.encode()).decode()
        out |= _pieces(encoded[4:-4], 16)
    return out


def _leaks(text: str, token: str, signature: str) -> list[str]:
    found = [p for p in _pieces(signature, 12) if p in text]
    found += [p for v in (token, f"GatewayKey {token}") for p in _base64_pieces(v) if p in text]
    return found


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=tokens(), form=st.sampled_from(sorted(FORMS)),
       encoders=st.lists(st.sampled_from(sorted(ENCODERS)), max_size=3),
       url_rounds=st.integers(min_value=0, max_value=4), context=st.sampled_from(CONTEXTS))
def test_no_signature_run_survives_any_encoding(token: tuple[str, str], form: str, encoders: list[str],
                                                url_rounds: int, context: str) -> None:
    value, signature = token
    text = FORMS[form](value, signature)
    for name in encoders:
        text = ENCODERS[name](text)
    for _ in range(url_rounds):
        text = urllib.parse.quote(text, safe="")
    text = context.format(text)
    for cleaned in (redact(text), scrub(text, known_grams(value)), scrub(text, known_grams(f"GatewayKey {value}"))):
        assert _leaks(cleaned, value, signature) == [], (form, encoders, url_rounds, cleaned)


@settings(max_examples=200, deadline=None)
@given(token=tokens(), cut=st.integers(min_value=12, max_value=80), context=st.sampled_from(CONTEXTS))
def test_a_known_token_cut_short_is_still_removed(token: tuple[str, str], cut: int, context: str) -> None:
    """An upstream message truncated in the middle of a signature: the process knows the token."""
    value, signature = token
    text = context.format(f"GatewayKey {value}"[: len(value) - len(signature) + 11 + cut])
    assert _leaks(scrub(text, known_grams(value)), value, signature) == []

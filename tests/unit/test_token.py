from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rotation.core.errors import InvalidToken
from rotation.core.token import GatewayToken, fingerprint, parse_stored

RAW = "gw-1&202612250856&c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU="


@pytest.mark.parametrize("text", [RAW, f"GatewayKey {RAW}", f"  GatewayKey {RAW}\n"])
def test_parses_with_or_without_prefix(text: str) -> None:
    token = GatewayToken.parse(text)
    assert token.value == RAW
    assert token.gateway == "gw-1"
    assert token.expires_at == datetime(2026, 12, 25, 8, 56, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "GatewayKey ", "gw&2026&sig", "gw&202613450000&c2lnbmF0dXJl",
                                  "a&b&c", "gw-1 202612250856 sigsigsigsig", "gw&202612250856&"])
def test_rejects_malformed_without_echoing(text: str) -> None:
    with pytest.raises(InvalidToken) as err:
        GatewayToken.parse(text)
    if len(text) > 6:
        assert text not in str(err.value)


def test_repr_and_str_never_show_the_value() -> None:
    token = GatewayToken.parse(RAW)
    for shown in (repr(token), str(token), f"{token}", repr([token])):
        assert "c2lnbmF0dXJl" not in shown
        assert token.fingerprint in shown


def test_fingerprint_is_12_hex_of_sha256() -> None:
    assert fingerprint("x") == "2d711642b726"
    assert GatewayToken.parse(f"GatewayKey {RAW}").fingerprint == fingerprint(RAW)


def test_formatted() -> None:
    token = GatewayToken.parse(RAW)
    assert token.formatted() == f"GatewayKey {RAW}"
    assert token.formatted("{token}") == RAW


def test_parse_stored_treats_garbage_as_no_token() -> None:
    assert parse_stored(None) is None
    assert parse_stored("not a token") is None
    assert parse_stored(RAW) == GatewayToken.parse(RAW)

"""The process-wide registry of secret values and the boundaries that use it.

A token the process has just generated (ARM), read (Key Vault, a Secret) or sent (a Secret PATCH) is
known; any 12-character piece of it, or of its base64, is cut out of what leaves: telemetry records
(customDimensions and message), CLI output however it is split over writes (json.dump writes a
document in many small pieces: CPython's json.encoder `_iterencode`), HTTP bodies.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets

import pytest

from rotation.boundary import Terminal, clean_tree
from rotation.known_secrets import KnownSecrets, remember
from rotation.telemetry import emit, fields_of

TOKEN = "gw-1&202612011200&" + base64.b64encode(secrets.token_bytes(64)).decode()
SIG = TOKEN.rsplit("&", 1)[1]


def _pieces(text: str) -> list[str]:
    return [SIG[i:i + 12] for i in range(len(SIG) - 11) if SIG[i:i + 12] in text]


def test_cli_output_split_over_writes_is_scrubbed() -> None:
    remember(TOKEN)
    target = io.StringIO()
    terminal = Terminal(target)
    json.dump({"error": f"upstream said: {SIG[:40]}", "b64": base64.b64encode(f"GatewayKey {TOKEN}".encode()).decode(),
               "caData": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUMuLi4KLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="},
              terminal, indent=2)
    terminal.write("\n" + SIG[10:30])
    terminal.flush()
    out = target.getvalue()
    assert _pieces(out) == [] and "<redacted>" in out
    assert "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t" in out  # key material that is no secret is kept


def test_telemetry_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    remember(TOKEN)
    with caplog.at_level(logging.INFO, logger="rotation"):
        emit("rotation.target", {"error": f"denied data={base64.b64encode(TOKEN.encode()).decode()[:60]}",
                                 "cluster": "east"})
    (record,) = [r for r in caplog.records if r.getMessage().startswith("rotation.target")]
    text = record.getMessage() + repr(fields_of(record))
    assert _pieces(text) == [] and "east" in text
    assert base64.b64encode(TOKEN.encode()).decode()[4:20] not in text


def test_http_bodies_are_scrubbed_deeply() -> None:
    remember(TOKEN)
    body = clean_tree({"targets": [{"error": f"x {SIG[5:50]} y"}], "n": 3, "ok": False})
    assert _pieces(json.dumps(body)) == [] and body["n"] == 3 and body["ok"] is False


def test_the_registry_is_bounded_and_forgets_the_oldest() -> None:
    known = KnownSecrets(limit=2)
    tokens = [f"gw&202612011200&{base64.b64encode(secrets.token_bytes(64)).decode()}" for _ in range(3)]
    for t in tokens:
        known.remember(t)
    assert tokens[0].rsplit("&", 1)[1][:30] in known.scrub_known(tokens[0].rsplit("&", 1)[1][:30])  # forgotten
    for t in tokens[1:]:
        assert known.scrub_known(t.rsplit("&", 1)[1][:30]) == "<redacted>"
    known.remember(None, "", "short")  # ignored
    known.clear()
    assert known.scrub_known(tokens[2]) == tokens[2]

"""Names from outside never reach the operator's terminal or the logs as control sequences.

An event id and a gateway instance come from whoever can publish to the Event Grid topic (or write a
dead-letter blob); the gateway part of a token-shaped value from whoever can write the Secret. ECMA-48
control functions (ESC `[1A` cursor up, `[2K` erase line, CR) let such a value overwrite the line
above it: a `skipped` event rendered as `replayed`, a `mismatch` as `in_sync`. Unicode's bidi
override U+202E (UAX #9) reverses what follows. Each is shown as an escape (`\\x1b`, `\\u202e`).
"""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime

import pytest

from rotation import cli, replay
from rotation.core.events import parse_event
from rotation.core.model import Outcome, RotationReport, TargetReport
from rotation.core.printable import printable
from rotation.core.registry import load_registry
from rotation.core.status import foreign_token
from rotation.live_check import LiveResult, print_results
from rotation.printing import print_report
from rotation.telemetry import emit
from tests.samples import SERVICE_ID, gateway, gateway_id, registry, target

UP = "\x1b[1A\x1b[2K\r"
CONTROL = [UP, "\u202e", "\x9b1A", "\x07", "\x7f"]


def _clean(text: str) -> None:
    assert not any(c in text for c in "\x1b\u202e\x9b\x07\x7f\r"), repr(text)


def test_printable_escapes_control_and_bidi_characters() -> None:
    assert printable(f"ok{UP}replayed") == "ok\\x1b[1A\\x1b[2K\\x0dreplayed"
    assert printable("a\u202eb") == "a\\u202eb"
    assert printable("plain text / ümlaut") == "plain text / ümlaut"


def test_replayed_event_ids_and_blob_names_are_escaped() -> None:
    event = replay.EventResult(f"evt-1{UP}  replayed evt-2", "GatewayTokenNearExpiry", f"apim/gw{UP}", "x", 1,
                               "y", "skipped", detail=f"malformed: {UP}")
    blob = replay.BlobResult(f"blob{UP}", None, [event], note=f"1 event(s) skipped{UP}")
    out = io.StringIO()
    replay._print("https://st.blob.core.windows.net/dl", [blob], [], replay._summary([blob], {}), False, out)
    _clean(out.getvalue())
    assert "evt-1\\x1b[1A" in out.getvalue()


def test_report_lines_escape_target_errors() -> None:
    report = RotationReport(gateway_id("gw-1"), False, None, None, None, "r", 1,
                            (TargetReport("east", "apim", "s", Outcome.FAILED, error=f"denied{UP}in_sync"),))
    out = io.StringIO()
    print_report(report, out)
    _clean(out.getvalue())


def test_the_gateway_of_a_foreign_token_is_escaped() -> None:
    value = "GatewayKey gw\x1b[1A\x1b[2Kin_sync&202612011200&" + "QUJD" * 12  # no whitespace in a token
    why = foreign_token(value, "gw-1")
    assert why is not None
    _clean(why)


def test_live_check_lines_are_escaped() -> None:
    reg = load_registry(registry(gateway("gw-1", target("east", "s"))))
    g = reg.gateways[0]
    out = io.StringIO()
    print_results([LiveResult(g, g.targets[0], "mismatch", fix=f"x{UP}", holds=f"token of gw{UP}in_sync ready")], out)
    _clean(out.getvalue())


@pytest.mark.parametrize("control", CONTROL)
def test_event_ids_and_instances_are_escaped_when_parsed(control: str) -> None:
    event = parse_event({"id": f"e{control}1", "topic": SERVICE_ID, "subject": f"/gateways/gw-1/pod{control}",
                         "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
                         "data": {"gatewayInfo": {"gatewayId": "gw-1", "instanceId": f"pod{control}"}}})
    _clean(event.event_id + (event.instance or "") + event.reason)


def test_telemetry_messages_escape_values(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rotation"):
        emit("rotation.target", {"instance": f"pod{UP}", "error": "x\u202ey"})
    (record,) = [r for r in caplog.records if r.getMessage().startswith("rotation.target")]
    _clean(record.getMessage())
    _clean(str(record.__dict__["instance"]) + str(record.__dict__["error"]))


def test_cli_output_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    """Whatever a command prints goes through the CLI's writer (here: an error naming a file)."""
    out = io.StringIO()
    code = cli.main(["validate-registry", f"/nonexistent/reg{UP}.json"], out)
    assert code == 2
    _clean(out.getvalue() + capsys.readouterr().err)


def test_timestamps_are_not_touched() -> None:
    assert printable(datetime(2026, 12, 1, tzinfo=UTC).isoformat()) == "2026-12-01T00:00:00+00:00"

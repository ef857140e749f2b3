"""Human-readable renderings shared by the CLI commands (rotate, sweep, replay-deadletter).

Kept apart from `rotation.cli` so other command modules do not reach into the CLI's privates.
Nothing printed here carries a token: reports hold fingerprints only.
"""

from __future__ import annotations

from typing import TextIO

from rotation.boundary import shown
from rotation.core.model import RotationReport


def print_report(report: RotationReport, out: TextIO) -> None:
    expires = report.expires_at.strftime("%Y-%m-%d %H:%M UTC") if report.expires_at else "-"
    head = "rotated" if report.rotated else ("planned" if report.dry_run else "kept")
    print(f"{report.gateway_id.split('/service/')[-1].replace('/gateways/', '/')}: {head}, token "
          f"{report.fingerprint or '-'} expires {expires} ({report.key_type or '-'} key), "
          f"{report.duration_ms} ms", file=out)
    if report.error:
        print(f"  error: {shown(report.error)}", file=out)
    for t in report.targets:
        extra = f"  restarted {', '.join(t.restarted)}" if t.restarted and t.outcome.value == "updated" else ""
        err = f"  ({shown(t.error)})" if t.error else ""
        print(f"  {t.outcome.value:8} {t.cluster}/{t.namespace}/{t.secret}{extra}{err}", file=out)

"""`python -m rotation`: the operator's view of the same core the functions run.

Exit code 0 only when everything asked for holds; 1 when it ran but something is not done
(a failed target, a pending key roll, an unhealthy status); 2 for bad input or configuration.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from rotation.core.errors import PermanentError, RotationError, SettingsError
from rotation.core.model import (
    GatewayConfig,
    GatewayRef,
    KeyType,
    RotationReport,
    check_gateway_name,
    check_service_name,
)

EXAMPLES = """\
examples:
  python -m rotation --settings .devstack/demo/settings.json status
  python -m rotation rotate contoso-apim/onprem-gw --force --reason "suspected leak"
  python -m rotation rotate contoso-apim/onprem-gw --dry-run --json
  python -m rotation sweep --dry-run
  python -m rotation roll-keys contoso-apim/onprem-gw --from primary --wait 120
  python -m rotation validate-registry registry.json
  python -m rotation replay-deadletter --since 2026-11-01
  python -m rotation devstack up --dir .devstack/dev && python -m rotation devstack down --dir .devstack/dev
  python -m rotation demo
"""


class UsageError(Exception):
    pass


def _load_settings_file(path: str) -> None:
    """A flat JSON of app settings (devstack's settings.json) or local.settings.json's `Values`."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--settings {path}: {exc}") from None
    values = data.get("Values", data) if isinstance(data, dict) else None
    if not isinstance(values, dict):
        raise UsageError(f"--settings {path}: expected a JSON object of settings")
    os.environ.update({str(k): str(v) for k, v in values.items() if v is not None and v != ""})


def _container() -> Any:
    from rotation import bootstrap

    box = bootstrap.container()
    box.developer_credentials = True  # the operator's Azure login off Azure; managed identity in Azure
    return box


def _gateway(text: str) -> GatewayConfig:
    box = _container()
    if text.startswith("/"):
        ref = GatewayRef.parse(text)
        service, gateway = ref.service, ref.gateway
    else:
        service, sep, gateway = text.partition("/")
        if not sep:
            raise UsageError(f"gateway must be SERVICE/GATEWAY or a full ARM id, got {text[:80]!r}")
        check_service_name(service)
        check_gateway_name(gateway)
    return box.rotator.gateway(service, gateway)  # type: ignore[no-any-return]


def _print_report(report: RotationReport, out: TextIO) -> None:
    expires = report.expires_at.strftime("%Y-%m-%d %H:%M UTC") if report.expires_at else "-"
    head = "rotated" if report.rotated else ("planned" if report.dry_run else "kept")
    print(f"{report.gateway_id.split('/service/')[-1].replace('/gateways/', '/')}: {head}, token "
          f"{report.fingerprint or '-'} expires {expires} ({report.key_type or '-'} key), "
          f"{report.duration_ms} ms", file=out)
    if report.error:
        print(f"  error: {report.error}", file=out)
    for t in report.targets:
        extra = f"  restarted {', '.join(t.restarted)}" if t.restarted and t.outcome.value == "updated" else ""
        err = f"  ({t.error})" if t.error else ""
        print(f"  {t.outcome.value:8} {t.cluster}/{t.namespace}/{t.secret}{extra}{err}", file=out)


def cmd_rotate(args: argparse.Namespace, out: TextIO) -> int:
    config = _gateway(args.gateway)
    box = _container()
    report = box.rotator.reconcile(config, reason=args.reason, force=args.force, dry_run=args.dry_run,
                                   deadline_seconds=args.deadline or box.settings.deadline_seconds)
    if args.json:
        json.dump(report.to_dict(), out, indent=2, default=str)
        print(file=out)
    else:
        _print_report(report, out)
    return 0 if report.ok else 1


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    box = _container()
    configs = [_gateway(args.gateway)] if args.gateway else None
    statuses = box.rotator.status(configs, timeout=args.deadline or box.settings.deadline_seconds)
    if args.json:
        json.dump({"gateways": [s.to_dict() for s in statuses]}, out, indent=2, default=str)
        print(file=out)
    else:
        from rotation.bootstrap import utcnow

        now = utcnow()
        for s in statuses:
            left = f"{(s.expires_at - now).total_seconds() / 86400:.1f} days left" if s.expires_at else "no token"
            expires = s.expires_at.strftime("%Y-%m-%d %H:%M UTC") if s.expires_at else "-"
            roll = f", key roll from {s.key_roll_pending} pending" if s.key_roll_pending else ""
            print(f"{s.service}/{s.gateway}: expires {expires} ({left}), {s.key_type or '-'} key, "
                  f"token {s.fingerprint or '-'}{roll}", file=out)
            for t in s.targets:
                rollouts = "".join(f"  {r.workload}: {'ready' if r.ready else 'rolling'} ({r.detail})"
                                   for r in t.rollouts)
                err = f"  ({t.error})" if t.error else ""
                print(f"  {t.state.value:11} {t.cluster}/{t.namespace}/{t.secret}{rollouts}{err}", file=out)
        for warning in sorted({s.warning for s in statuses if s.warning}):
            print(f"warning: {warning}", file=out)
    return 0 if all(s.healthy for s in statuses) else 1


def cmd_sweep(args: argparse.Namespace, out: TextIO) -> int:
    box = _container()
    total = len(box.settings.registry.gateways)
    done = 0

    def progress(report: RotationReport) -> None:
        nonlocal done
        done += 1
        if sys.stderr.isatty() or args.progress:
            mark = "ok" if report.ok else "FAILED"
            print(f"\r[{done}/{total}] {report.gateway_id.rsplit('/', 1)[-1]} {mark}".ljust(60),
                  end="" if sys.stderr.isatty() else "\n", file=sys.stderr, flush=True)

    result = box.rotator.sweep(deadline_seconds=args.deadline or box.settings.deadline_seconds,
                               dry_run=args.dry_run, progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if args.json:
        json.dump(result.to_dict(), out, indent=2, default=str)
        print(file=out)
    else:
        for report in result.reports:
            _print_report(report, out)
        summary = result.to_dict()
        print(f"sweep: {summary['gateways']} gateways, {summary['rotated']} rotated, {summary['failed']} failed, "
              f"{result.duration_ms} ms", file=out)
    return 0 if result.ok else 1


def cmd_roll_keys(args: argparse.Namespace, out: TextIO) -> int:
    config = _gateway(args.gateway)
    box = _container()
    report = box.rotator.roll_keys(config, from_key=KeyType(args.from_key),
                                   deadline_seconds=args.deadline or box.settings.deadline_seconds,
                                   rollout_wait_seconds=args.wait, dry_run=args.dry_run,
                                   confirm_restarted=args.confirm_restarted)
    if args.json:
        json.dump(report.to_dict(), out, indent=2, default=str)
        print(file=out)
    else:
        _print_report(report.rotation, out)
        print(f"key roll {report.from_key} -> {report.to_key}{' (resumed)' if report.resumed else ''}: "
              f"{report.phase}"
              + (f", {report.from_key} key regenerated" if report.regenerated else ""), file=out)
        for item in report.pending:
            print(f"  pending: {item}", file=out)
        if report.pending:
            print(f"  the {report.from_key} key was NOT regenerated; fix the above and run "
                  f"roll-keys --from {report.from_key} again to resume", file=out)
    return 0 if report.ok else 1


def cmd_validate_registry(args: argparse.Namespace, out: TextIO) -> int:
    from rotation.core.registry import load_registry

    try:
        text = Path(args.file).read_text()
    except OSError as exc:
        raise UsageError(f"{args.file}: {exc.strerror}") from None
    from rotation.cloud import cloud_named

    try:  # aks servers are checked against the configured cloud (and loopback only for the devstack)
        cloud = cloud_named(os.environ.get("AZURE_CLOUD", "").strip())
    except ValueError as exc:
        raise UsageError(f"AZURE_CLOUD: {exc}") from None
    local = os.environ.get("ROTATION_LOCAL_EMULATORS", "").strip().lower() in {"1", "true", "yes", "on"}
    registry = load_registry(text, aks_servers=cloud.aks_rule(allow_loopback=local))
    targets = sum(len(g.targets) for g in registry.gateways)
    if args.json:
        json.dump({"valid": True, "clusters": len(registry.clusters), "gateways": len(registry.gateways),
                   "targets": targets}, out)
        print(file=out)
    else:
        print(f"{args.file}: valid ({len(registry.clusters)} clusters, {len(registry.gateways)} gateways, "
              f"{targets} targets)", file=out)
        for g in registry.gateways:
            print(f"  {g.ref}: Key Vault secret {g.key_vault_secret}, "
                  f"{', '.join(str(t) for t in g.targets)}", file=out)
    return 0


def cmd_devstack(args: argparse.Namespace, out: TextIO) -> int:
    from devstack import stack

    if args.action == "up":
        s = stack.up(args.dir, say=lambda m: print(m, file=sys.stderr), with_azurite=args.azurite)
        print(f"devstack up in {s.dir}: settings {s.dir / 'settings.json'}, kubeconfig {s.dir / 'kubeconfig'}",
              file=out)
        print(f"  try: python -m rotation --settings {s.dir / 'settings.json'} status", file=out)
    else:
        stopped = stack.down(args.dir)
        print(f"devstack down in {args.dir}: stopped {', '.join(stopped) or 'nothing'}", file=out)
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from devstack.demo import run

    return run(Path(args.dir), keep=args.keep, out=out)


def cmd_replay_deadletter(args: argparse.Namespace, out: TextIO) -> int:
    from rotation.replay import replay

    return replay(args, out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rotation", description=(
        "Rotate Azure API Management self-hosted gateway tokens into Kubernetes, with Key Vault as the "
        "source of truth. Reads the same app settings as the Function App (environment or --settings)."),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", metavar="FILE", help="JSON of app settings (devstack settings.json or "
                   "local.settings.json) to load into the environment first")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Callable[[argparse.Namespace, TextIO], int], help_text: str,
                *, gateway: str | None = None, dry_run: bool = False, json_out: bool = True) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.set_defaults(func=fn)
        if gateway == "required":
            c.add_argument("gateway", help="SERVICE/GATEWAY or the gateway's full ARM id")
        elif gateway == "optional":
            c.add_argument("gateway", nargs="?", help="SERVICE/GATEWAY (default: all registered gateways)")
        if dry_run:
            c.add_argument("--dry-run", action="store_true", help="show the plan; write nothing anywhere")
        if json_out:
            c.add_argument("--json", action="store_true", help="machine-readable output")
        c.add_argument("--deadline", type=float, metavar="SECONDS",
                       help="budget per gateway (default ROTATION_DEADLINE_SECONDS)")
        return c

    c = command("rotate", cmd_rotate, "reconcile one gateway now (renews only when due, unless --force)",
                gateway="required", dry_run=True)
    c.add_argument("--force", action="store_true", help="generate a new token even if the current one is fresh")
    c.add_argument("--reason", default="cli", help="recorded in logs and the report")
    command("status", cmd_status, "token expiry and per-target sync state (never shows a token)",
            gateway="optional")
    c = command("sweep", cmd_sweep, "reconcile every registered gateway (what the timer runs)", dry_run=True)
    c.add_argument("--progress", action="store_true", help="print progress lines even when not on a terminal")
    c = command("roll-keys", cmd_roll_keys, "two-phase key roll: move to the other key, then regenerate the old one",
                gateway="required", dry_run=True)
    c.add_argument("--from", dest="from_key", required=True, choices=["primary", "secondary"],
                   help="the key to roll away from and regenerate (refused if it contradicts a pending roll)")
    c.add_argument("--wait", type=float, default=60, metavar="SECONDS",
                   help="how long to wait for restarted workloads to finish rolling out (default 60)")
    c.add_argument("--confirm-restarted", action="store_true",
                   help="you restarted the pods of targets that have no `restart` list: their Secrets still "
                        "have to hold the new token")
    c = sub.add_parser("validate-registry", help="check a registry file and print what it registers")
    c.set_defaults(func=cmd_validate_registry)
    c.add_argument("file")
    c.add_argument("--json", action="store_true")
    c = sub.add_parser("replay-deadletter", help="reconcile the gateways of dead-lettered events")
    c.set_defaults(func=cmd_replay_deadletter)
    c.add_argument("--container-url", help="dead-letter container URL (default DEADLETTER_BLOB_URL)")
    c.add_argument("--since", help="only blobs written on or after this date (YYYY-MM-DD)")
    c.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    c.add_argument("--keep", action="store_true", help="do not delete replayed blobs")
    c.add_argument("--json", action="store_true")
    c = sub.add_parser("demo", help="the whole story on the local stack: near-expiry tokens, an event, the report")
    c.set_defaults(func=cmd_demo)
    c.add_argument("--dir", default=".devstack/demo", help="state directory (default .devstack/demo)")
    c.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    c = sub.add_parser("devstack", help="start or stop the local stack")
    c.set_defaults(func=cmd_devstack)
    c.add_argument("action", choices=["up", "down"])
    c.add_argument("--dir", default=".devstack/dev", help="state directory (default .devstack/dev)")
    c.add_argument("--azurite", action="store_true",
                   help="also start Azurite with a dead-letter container (DEADLETTER_BLOB_URL)")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = parser().parse_args(argv)
    try:
        if args.settings:
            _load_settings_file(args.settings)
        return int(args.func(args, out))
    except (UsageError, PermanentError) as exc:
        kind = "configuration error" if isinstance(exc, SettingsError) else "error"
        print(f"{kind}: {exc}", file=sys.stderr)
        return 2
    except RotationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

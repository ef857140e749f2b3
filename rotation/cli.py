"""`python -m rotation`: the operator's view of the same core the functions run.

Exit code 0 only when everything asked for holds; 1 when it ran but something is not done
(a failed target, a pending key roll, an unhealthy status); 2 for bad input or configuration.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

from rotation.core.consumption import Consumption, ConsumptionState
from rotation.core.errors import PermanentError, RotationError, SettingsError, UpstreamError
from rotation.core.model import (
    GatewayConfig,
    GatewayRef,
    KeyType,
    RotationReport,
    check_gateway_name,
    check_service_name,
)
from rotation.core.status import GatewayStatus, TargetStatus
from rotation.core.token import GatewayToken
from rotation.printing import print_report
from rotation.settings import load_into_environment

if TYPE_CHECKING:
    from rotation.bootstrap import Container
    from rotation.cloud import OperatorCloud

EXAMPLES = """\
examples:
  python -m rotation --settings .devstack/demo/settings.json status
  python -m rotation rotate contoso-apim/onprem-gw --force --reason "suspected leak"
  python -m rotation rotate contoso-apim/onprem-gw --dry-run --json
  python -m rotation sweep --dry-run
  python -m rotation roll-keys contoso-apim/onprem-gw --from primary --wait 120
  python -m rotation validate-registry registry.json --live
  python -m rotation discover --service /subscriptions/…/service/contoso-apim --context aks-prod --out registry.json
  python -m rotation adopt contoso-apim/onprem-gw --dry-run
  python -m rotation replay-deadletter --since 2026-11-01
  python -m devstack up --dir .devstack/dev && python -m devstack down --dir .devstack/dev   (the local stack)
  python -m devstack demo
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
    try:
        load_into_environment(values)  # the rotator's own names only
    except ValueError as exc:
        raise UsageError(f"--settings {path}: {exc}") from None


def _operator_cloud() -> OperatorCloud:
    from rotation.settings import operator_cloud

    try:
        return operator_cloud()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _container() -> Container:
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
    return box.rotator.gateway(service, gateway)


_print_report = print_report  # the name replay and older callers used


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
        _print_statuses(statuses, out)
    return 0 if all(s.healthy for s in statuses) else 1


def _print_statuses(statuses: Sequence[GatewayStatus], out: TextIO) -> None:
    from rotation.bootstrap import utcnow

    now = utcnow()
    for s in statuses:
        _print_gateway_status(s, now, out)
        for t in s.targets:
            _print_target_status(t, out)
            _print_consumption(t.consumption, out)
    for warning in sorted({s.warning for s in statuses if s.warning}):
        print(f"warning: {warning}", file=out)


def _print_gateway_status(s: GatewayStatus, now: datetime, out: TextIO) -> None:
    left = f"{(s.expires_at - now).total_seconds() / 86400:.1f} days left" if s.expires_at else "no token"
    expires = s.expires_at.strftime("%Y-%m-%d %H:%M UTC") if s.expires_at else "-"
    roll = f", key roll from {s.key_roll_pending} pending" if s.key_roll_pending else ""
    print(f"{s.service}/{s.gateway}: expires {expires} ({left}), {s.key_type or '-'} key, "
          f"token {s.fingerprint or '-'}{roll}", file=out)
    if s.error and s.expires_at:
        print(f"  {s.error}", file=out)
    if s.origin:
        print(f"  token {s.origin}: Key Vault's first version is the one the targets already ran",
              file=out)


def _print_target_status(t: TargetStatus, out: TextIO) -> None:
    rollouts = "".join(f"  {r.workload}: {'ready' if r.ready else 'rolling'} ({r.detail})"
                       for r in t.rollouts)
    err = f"  ({t.error})" if t.error else ""
    if t.restart_pending:
        err += "  (restart onto this token not done: rotate restarts its workloads)"
    print(f"  {t.state.value:11} {t.cluster}/{t.namespace}/{t.secret}{rollouts}{err}", file=out)


def _print_consumption(consumption: Consumption | None, out: TextIO) -> None:
    if consumption is None:
        return
    if consumption.state is ConsumptionState.MISMATCH and consumption.fix:
        print(f"              fix: {consumption.fix}", file=out)
    if consumption.helm:
        print(f"              helm: {consumption.helm}", file=out)


def cmd_adopt(args: argparse.Namespace, out: TextIO) -> int:
    """Key Vault's first version from the newest token the targets run, then bring the rest to it."""
    import time

    from rotation.app.adoption import choose
    from rotation.bootstrap import utcnow

    config = _gateway(args.gateway)
    box = _container()
    rotator = box.rotator
    budget = args.deadline or box.settings.deadline_seconds
    current = rotator.store.get(config.key_vault_secret, timeout=budget)
    if current is not None:
        print(f"{config.ref}: Key Vault already holds its token ({current.token.fingerprint}, expires "
              f"{current.token.expires_at:%Y-%m-%d %H:%M} UTC): nothing to adopt", file=out)
        return 1
    end = time.monotonic() + float(budget)

    def check(what: str) -> float:
        left = end - time.monotonic()
        if left <= 0:
            raise UpstreamError(f"deadline passed before {what}")
        return left

    adopted, considered = choose(rotator.deps, config, utcnow(), check)
    for c in considered:
        mark = "chosen" if adopted is not None and c is adopted.candidate else "not verified"
        print(f"  candidate {c.token.fingerprint} expires {c.token.expires_at:%Y-%m-%d %H:%M} UTC held by "
              f"{c.where}: {mark}", file=out)
    if adopted is None:
        why = ("no target holds a valid token of this gateway that is not due for renewal" if not considered else
               "no key reproduces these tokens (key type unknown: signed by another or a regenerated key)")
        print(f"{config.ref}: nothing adopted: {why}; `rotate` mints a new token", file=out)
        return 1
    if args.dry_run:
        print(f"{config.ref}: would adopt {adopted.token.fingerprint} ({adopted.record.origin})", file=out)
        return 0
    # The reconcile adopts the same way (Key Vault is empty) under the gateway's lock, then brings
    # the other targets up to it.
    report = rotator.reconcile(config, reason="adopt", deadline_seconds=budget)
    _print_report(report, out)
    stored = rotator.store.get(config.key_vault_secret, timeout=budget)
    if stored is not None and stored.origin:
        print(f"{config.ref}: {stored.origin}", file=out)
    return 0 if report.ok and stored is not None and stored.origin else 1


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
    where = _operator_cloud()  # aks servers: the configured cloud's (loopback only for the devstack)
    registry = load_registry(text, aks_servers=where.cloud.aks_rule(allow_loopback=where.local_emulators))
    targets = sum(len(g.targets) for g in registry.gateways)
    summary: dict[str, object] = {"valid": True, "clusters": len(registry.clusters),
                               "gateways": len(registry.gateways), "targets": targets}
    results = None
    if getattr(args, "live", False):
        from rotation.app.evidence import prove
        from rotation.live_check import live_check

        box = _container()  # the app's own access: its credential and the kubeconfigs in Key Vault
        timeout = args.deadline or box.settings.deadline_seconds
        rotator = box.rotator

        def verify(config: GatewayConfig, token: GatewayToken) -> KeyType | None:
            return prove(rotator.store, rotator.issuer, config, token, rotator.clock(), timeout)

        results = live_check(registry, rotator.clusters, timeout=timeout, verify=verify)
        summary["live"] = [r.to_dict() for r in results]
    if args.json:
        json.dump(summary, out, indent=2 if results is not None else None)
        print(file=out)
    else:
        print(f"{args.file}: valid ({len(registry.clusters)} clusters, {len(registry.gateways)} gateways, "
              f"{targets} targets)", file=out)
        for g in registry.gateways:
            print(f"  {g.ref}: Key Vault secret {g.key_vault_secret}, "
                  f"{', '.join(str(t) for t in g.targets)}", file=out)
        if results is not None:
            from rotation.live_check import print_results

            print("live check (the app's identity; does each registered workload read its target's key?):",
                  file=out)
            print_results(results, out)
    return 0 if results is None or all(r.ok for r in results) else 1


def cmd_local_stack(args: argparse.Namespace, out: TextIO) -> int:
    """`demo` and `devstack up|down` belong to the local stack, which has its own entry point: the product
    never imports it (a deployed package has none), so these names only say where it is."""
    words = ["python", "-m", "devstack", *([] if args.command == "devstack" else [args.command]), *args.rest]
    raise UsageError(f"the local stack has its own entry point: run `{' '.join(words)}` from the source checkout "
                     "(it is not part of the app)")


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
    c.add_argument("--live", action="store_true",
                   help="also check, with the app's access (settings), that each target's registered workloads "
                        "read its Secret key and that the key holds a token of that gateway")
    c.add_argument("--deadline", type=float, metavar="SECONDS", help="per-request timeout of --live")
    c = command("adopt", cmd_adopt, "Key Vault has no token yet: store the newest one the targets already run "
                "(verified by ARM), then bring the other targets to it", gateway="required", dry_run=True,
                json_out=False)
    from rotation.discover import add_parser as add_discover

    add_discover(sub, EXAMPLES)
    c = sub.add_parser("replay-deadletter", help="reconcile the gateways of dead-lettered events")
    c.set_defaults(func=cmd_replay_deadletter)
    c.add_argument("--container-url", help="dead-letter container URL (default DEADLETTER_BLOB_URL)")
    c.add_argument("--since", help="only blobs written on or after this date (YYYY-MM-DD)")
    c.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    c.add_argument("--keep", action="store_true", help="do not delete replayed blobs")
    c.add_argument("--json", action="store_true")
    for name in ("demo", "devstack"):
        c = sub.add_parser(name, help="the local stack's own command: python -m devstack "
                           + ("demo" if name == "demo" else "up|down"), add_help=False)
        c.set_defaults(func=cmd_local_stack)
        c.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    from rotation.boundary import Terminal

    # Names from events, Secrets and blobs escaped and known secrets cut out, whatever prints them.
    terminal = Terminal(out or sys.stdout)
    try:
        return _run(argv, cast(TextIO, terminal))
    finally:
        terminal.flush()


def _run(argv: Sequence[str] | None, out: TextIO) -> int:
    from rotation.boundary import shown

    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra and args.func is not cmd_local_stack:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    args.rest = [*getattr(args, "rest", []), *extra]
    try:
        if args.settings:
            _load_settings_file(args.settings)
        return int(args.func(args, out))
    except (UsageError, PermanentError) as exc:
        kind = "configuration error" if isinstance(exc, SettingsError) else "error"
        print(f"{kind}: {shown(exc)}", file=sys.stderr)
        return 2
    except RotationError as exc:
        print(f"error: {shown(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

"""`python -m devstack up|down|demo`: the local stack's own entry point.

The product package (`rotation`) does not import the development stack by any means (a deployed
package has no devstack); `python -m rotation demo` and `python -m rotation devstack up|down` only
print the command to run here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO


def up(directory: str, *, azurite: bool = False, out: TextIO) -> int:
    from devstack import stack

    s = stack.up(directory, say=lambda m: print(m, file=sys.stderr), with_azurite=azurite)
    print(f"devstack up in {s.dir}: settings {s.dir / 'settings.json'}, kubeconfig {s.dir / 'kubeconfig'}",
          file=out)
    print(f"  try: python -m rotation --settings {s.dir / 'settings.json'} status", file=out)
    print(f"       python -m rotation --settings {s.dir / 'settings.json'} discover --service {stack.SERVICE_ID} "
          f"--kubeconfig {s.dir / 'kubeconfig'} --context east --context west", file=out)
    return 0


def down(directory: str, *, out: TextIO) -> int:
    from devstack import stack

    stopped = stack.down(directory)
    print(f"devstack down in {directory}: stopped {', '.join(stopped) or 'nothing'}", file=out)
    return 0


def demo(directory: str, *, keep: bool = False, out: TextIO) -> int:
    from devstack.demo import run

    return run(Path(directory), keep=keep, out=out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devstack", description=(
        "The local stack: real kube-apiservers (RBAC on) and HTTPS fakes of ARM, Key Vault, the "
        "managed-identity endpoint and Event Grid, seeded with near-expiry gateway tokens."))
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = sub.add_parser("up", help="start the stack in the background; returns once it is ready")
    c.add_argument("--dir", default=".devstack/dev", help="state directory (default .devstack/dev)")
    c.add_argument("--azurite", action="store_true",
                   help="also start Azurite with the gateway-leases (LEASE_CONTAINER_URL) and "
                        "dead-letter (DEADLETTER_BLOB_URL) containers")
    c = sub.add_parser("down", help="stop the stack started in --dir")
    c.add_argument("--dir", default=".devstack/dev", help="state directory (default .devstack/dev)")
    c = sub.add_parser("demo", help="the whole story: discovery, near-expiry tokens, an event, the report")
    c.add_argument("--dir", default=".devstack/demo", help="state directory (default .devstack/demo)")
    c.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = parser().parse_args(argv)
    try:
        if args.action == "up":
            return up(args.dir, azurite=args.azurite, out=out)
        if args.action == "down":
            return down(args.dir, out=out)
        return demo(args.dir, keep=args.keep, out=out)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

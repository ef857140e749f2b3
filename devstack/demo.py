"""`make demo`: the product's main job, end to end, on the local stack.

Starts the devstack (real kube-apiservers with RBAC, HTTPS fakes of ARM, Key Vault and the identity
endpoint), discovers the gateways' Secrets and workloads from ARM and the clusters alone (and shows
the proposal is the stack's own registry, every target consumed), shows gateways whose tokens expire
within the renew window, delivers one
`GatewayTokenNearExpiry` event per gateway to the real Event Grid function (decoded by
azure-functions' own converter), prints each target as it completes and the report, delivers a
duplicate to show that it writes nothing, checks every target's token with the ARM fake, shows the
status, and stops the stack. Exit 0 only if every target ended up updated with a valid token.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from devstack import stack as devstack
from rotation import telemetry


class _Progress(logging.Handler):
    """Turns the structured `rotation.*` log records into demo output as they happen."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(logging.INFO)
        self.out = out
        self.reconciles: list[dict[str, Any]] = []
        self.targets: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = telemetry.fields_of(record)
        if not fields:
            return
        event = fields["event"]
        if event == "rotation.token":
            print(f"    new token {fields['fingerprint']} from the {fields['keyType']} key, "
                  f"expires {fields['expiresAt'][:16]}Z, stored in Key Vault first", file=self.out)
        elif event == "rotation.target":
            self.targets.append(fields)
            restarted = f", restarted {fields['restarted'].replace(',', ', ')}" if fields.get("restarted") else ""
            error = f" ({fields['error']})" if fields.get("error") else ""
            print(f"    {fields['outcome']:8} {fields['cluster']}/{fields['namespace']}/{fields['secret']}"
                  f" in {fields['durationMs']} ms{restarted}{error}", file=self.out)
        elif event == "rotation.reconcile":
            self.reconciles.append(fields)


def _event(gateway: str, expires_at: str) -> dict[str, Any]:
    instance = f"{gateway}-7c9d8f6b5-{uuid.uuid4().hex[:5]}"
    return {
        "id": str(uuid.uuid4()), "topic": devstack.SERVICE_ID, "subject": f"/gateways/{gateway}/{instance}",
        "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
        "eventTime": datetime.now(UTC).isoformat(), "dataVersion": "1", "metadataVersion": "1",
        "data": {"gatewayInfo": {"gatewayId": gateway, "instanceId": instance},
                 "tokenInfo": {"expiresAtUtc": expires_at}},
    }


def _deliver(payload: dict[str, Any]) -> None:
    from azure.functions import meta
    from azure.functions.eventgrid import EventGridEventInConverter

    import function_app

    handler = {f.get_function_name(): f for f in _indexed(function_app)}["on_gateway_token_event"]
    event = EventGridEventInConverter.decode(meta.Datum(type="json", value=json.dumps(payload)),
                                             trigger_metadata=None)
    handler.get_user_function()(event)


_INDEX: list[Any] = []


def _indexed(module: Any) -> list[Any]:
    if not _INDEX:
        _INDEX.extend(module.app.get_functions())
    return _INDEX


INTERRUPTED = 130  # the product CLI's exit code for Ctrl-C (128 + SIGINT, as shells report it)


def _stops_on_ctrl_c(cli: Any) -> Any:
    """The product CLI answers Ctrl-C with exit code 130 instead of raising; the demo must stop too
    (its `finally` takes the stack down), not carry on with what the interrupted command never did."""

    def call(argv: list[str], out: TextIO) -> int:
        code = int(cli(argv, out))
        if code == INTERRUPTED:
            raise KeyboardInterrupt
        return code

    return call


def run(directory: Path, *, keep: bool = False, out: TextIO) -> int:
    from rotation import bootstrap
    from rotation.cli import main

    cli = _stops_on_ctrl_c(main)

    started = time.monotonic()
    print("== 1. local stack: 2 real kube-apiservers (RBAC on) + HTTPS fakes of ARM, Key Vault, managed identity",
          file=out)
    # Azurite (installed by `make demo`'s setup) holds the per-gateway blob leases, as storage does in Azure.
    stack = devstack.up(directory, say=lambda m: print(f"   {m}", file=out), with_azurite=_azurite_installed())
    ok = False
    try:
        os.environ.update(stack.settings)
        bootstrap.reset()
        settings_file = stack.dir / "settings.json"
        print(f"   ready in {time.monotonic() - started:.1f}s; settings in {settings_file}", file=out)

        print("\n== 2. onboarding: discover what already runs (ARM's gateway list, both clusters' Secrets and "
              "workloads, the operator's admin kubeconfig)", file=out)
        reproduced = _discover(stack, out, cli)

        print("\n== 3. seeded state: every token expires within RENEW_BEFORE_DAYS (7)", file=out)
        cli(["status"], out)

        print("\n== 4. Event Grid delivers GatewayTokenNearExpiry for each gateway to on_gateway_token_event",
              file=out)
        progress = _Progress(out)
        logger = logging.getLogger("rotation")
        logger.addHandler(progress)
        logger.setLevel(logging.INFO)
        try:
            status = bootstrap.container().rotator.status(timeout=20)
            for gw in status:
                expires = gw.expires_at.strftime("%Y-%m-%dT%H:%M:%S.0000000Z") if gw.expires_at else ""
                print(f"  -> {gw.service}/{gw.gateway}", file=out)
                _deliver(_event(gw.gateway, expires))
                last = progress.reconciles[-1]
                print(f"    report: rotated={last['rotated']} outcome={last['outcome']} "
                      f"in {last['durationMs']} ms", file=out)
            print("\n== 5. the same event again (Event Grid delivers at least once): nothing is written", file=out)
            # A duplicate that arrives while the restarted pods still roll out fails for a retry (its
            # instance may be an old pod); Event Grid's retry comes later: wait for the rollouts first.
            rotator = bootstrap.container().rotator
            wait_until = time.monotonic() + 30
            while time.monotonic() < wait_until and not all(
                    r.ready for g in rotator.status(timeout=20) for t in g.targets for r in t.rollouts):
                time.sleep(0.5)
            before = len(progress.targets)
            _deliver(_event(status[0].gateway, ""))
            again = progress.targets[before:]
        finally:
            logger.removeHandler(progress)

        print("\n== 6. every target checked against APIM (the ARM fake verifies the signature)", file=out)
        valid = _verify_targets(stack, out)

        print("\n== 7. status after rotation (once the restarted workloads have rolled out)", file=out)
        rotator = bootstrap.container().rotator
        wait_until = time.monotonic() + 30
        while not all(s.healthy for s in rotator.status(timeout=20)) and time.monotonic() < wait_until:
            time.sleep(0.5)
        healthy = cli(["status"], out) == 0
        first_pass = progress.targets[:before]
        updated = all(t["outcome"] == "updated" for t in first_pass) and len(first_pass) == 4
        dup_ok = all(t["outcome"] == "in_sync" for t in again)
        ok = reproduced and updated and dup_ok and valid and healthy
        print(f"\n{'OK' if ok else 'FAILED'}: discovery reproduced the registry: {reproduced}, "
              f"{len(first_pass)} targets updated, duplicate wrote nothing: "
              f"{dup_ok}, tokens valid: {valid}, status healthy: {healthy} "
              f"({time.monotonic() - started:.1f}s)", file=out)
    finally:
        if keep:
            print(f"stack left running: python -m rotation --settings {stack.dir / 'settings.json'} status; "
                  f"stop it with python -m devstack down --dir {stack.dir}", file=out)
        else:
            devstack.down(stack.dir)
    return 0 if ok else 1


def _discover(stack: devstack.Stack, out: TextIO, cli: Any) -> bool:
    """`discover` on the stack; True when its proposal is the registry the stack was seeded with."""
    import io

    from rotation.cloud import cloud_named
    from rotation.core.registry import load_registry

    proposal = stack.dir / "discovered-registry.json"
    text = io.StringIO()
    cli(["discover", "--service", devstack.SERVICE_ID, "--kubeconfig", str(stack.dir / "kubeconfig"),
         "--context", "east", "--context", "west", "--aks", "east", "--principal", devstack.APP_PRINCIPAL,
         "--out", str(proposal)], text)
    lines = text.getvalue().splitlines()
    shown = next((i for i, line in enumerate(lines) if line.startswith("RBAC for cluster")), len(lines))
    for line in lines[:shown]:
        print(f"   {line}", file=out)
    roles = sum(line == "kind: Role" for line in lines)
    loopback = cloud_named("").aks_rule(allow_loopback=True)  # the devstack's AKS cluster is on loopback
    reproduced = (load_registry(proposal.read_text(), aks_servers=loopback)
                  == load_registry(stack.settings["ROTATION_REGISTRY"], aks_servers=loopback))
    print(f"   + {roles} Role/RoleBinding pairs to apply (infra/k8s/ shapes); the proposal equals the stack's "
          f"registry: {reproduced}", file=out)
    print("   validate-registry --live, with the app's own least-privilege access:", file=out)
    live = io.StringIO()
    cli(["validate-registry", str(proposal), "--live"], live)
    for line in live.getvalue().splitlines()[1:]:
        if not line.startswith("  apim-devstack/") and not line.startswith("live check"):
            print(f"   {line}", file=out)
    return reproduced


def _verify_targets(stack: devstack.Stack, out: TextIO) -> bool:
    from kubernetes import client

    from rotation.core.token import GatewayToken

    valid = True
    for gateway, targets in devstack.targets().items():
        for t in targets:
            api = client.CoreV1Api(stack.admin(t["cluster"]))
            secret = api.read_namespaced_secret(t["secret"], t["namespace"])
            raw = base64.b64decode((secret.data or {})[t.get("key", "config.service.auth.key")]).decode()
            token = GatewayToken.parse(raw)
            verdict = stack.verify(gateway, token.value)
            valid &= bool(verdict.get("valid"))
            print(f"   {t['cluster']}/{t['namespace']}/{t['secret']}: token {token.fingerprint} "
                  f"{'valid' if verdict.get('valid') else 'INVALID'} ({verdict.get('keyType')} key), "
                  f"expires {token.expires_at:%Y-%m-%d %H:%M}", file=out)
    return valid


def _azurite_installed() -> bool:
    from devstack import azurite

    # Not installed: the demo runs with in-process leases, and `status` says so.
    return azurite.find_binary() is not None

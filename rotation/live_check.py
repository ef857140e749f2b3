"""`validate-registry FILE --live`: is each target what its gateway actually reads?

With the app's own access (its credential and the kubeconfigs in Key Vault), hence with exactly its
least privilege: one GET of the target's Secret and one of each registered workload (the Role
grants both; the rollout state already needs the workload GET). Reports, per target, whether the
Secret key holds a token of the registered gateway, whether each registered workload's pod template
reads that Secret key (`rotation.core.consumption`), with the fix when not, and the Helm chart
settings when the Secret is Helm's. Nothing is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TextIO

from rotation.boundary import shown
from rotation.core.consumption import Consumption, ConsumptionState, SecretUse, check
from rotation.core.errors import RotationError
from rotation.core.model import GatewayConfig, Registry, Target, Workload
from rotation.core.ports import Clusters
from rotation.core.printable import printable
from rotation.core.token import parse_stored


@dataclass(frozen=True, slots=True)
class LiveResult:
    gateway: GatewayConfig
    target: Target
    state: str  # consumed | mismatch | unchecked | unreachable
    fix: str | None = None
    helm: str | None = None
    holds: str | None = None  # what the key holds, described (fingerprint, never the value)

    @property
    def ok(self) -> bool:
        return self.state == ConsumptionState.CONSUMED.value

    def to_dict(self) -> dict[str, object]:
        t = self.target
        return {"gatewayId": self.gateway.ref.id, "cluster": t.cluster, "namespace": t.namespace, "secret": t.secret,
                "key": t.key, "state": self.state, "fix": self.fix, "helm": self.helm, "holds": self.holds}


def _one(registry: Registry, clusters: Clusters, config: GatewayConfig, target: Target,
         timeout: float) -> LiveResult:
    try:
        client = clusters.client(registry.clusters[target.cluster])
        secret = client.read_secret(target.namespace, target.secret, target.key, timeout=timeout)
    except RotationError as exc:
        return LiveResult(config, target, "unreachable", fix=str(exc))
    uses: dict[Workload, tuple[SecretUse, ...] | None] = {}
    errors: list[str] = []
    for workload in target.restart:
        try:
            uses[workload] = client.rollout(target.namespace, workload, timeout=timeout).uses
        except RotationError as exc:
            uses[workload] = None
            errors.append(str(exc))
    consumption: Consumption = check(target, uses, secret.labels)
    state, fix = consumption.state.value, consumption.fix
    held = parse_stored(secret.value)
    if secret.value is None:
        holds = f"key {target.key!r} is not in the Secret"
    elif held is None:
        holds = "no gateway token"
    else:
        holds = (f"token {held.fingerprint} of {printable(held.gateway)}, expires "
                 f"{held.expires_at:%Y-%m-%d %H:%M} UTC")
        if held.gateway.lower() != config.ref.gateway.lower():
            state = ConsumptionState.MISMATCH.value
            fix = "; ".join(filter(None, [f"the Secret holds a token of gateway {printable(held.gateway)}, not "
                                          f"{config.ref.gateway}: is this the right Secret?", fix]))
    if errors:
        fix = "; ".join(filter(None, [fix, *errors]))
    return LiveResult(config, target, state, fix, consumption.helm, holds)


def live_check(registry: Registry, clusters: Clusters, *, timeout: float = 20.0) -> list[LiveResult]:
    """Every target of every gateway, checked in parallel; results in registry order."""
    jobs = [(g, t) for g in registry.gateways for t in g.targets]
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(len(jobs), 16), thread_name_prefix="live") as pool:
        futures = [pool.submit(_one, registry, clusters, g, t, timeout) for g, t in jobs]
        return [f.result() for f in futures]


def print_results(results: Sequence[LiveResult], out: TextIO) -> None:
    for r in results:
        t = r.target
        print(f"  {r.state:11} {r.gateway.ref} -> {t.cluster}/{t.namespace}/{t.secret} key {t.key!r}"
              + (f": {shown(r.holds)}" if r.holds else ""), file=out)
        if r.fix:
            print(f"              fix: {shown(r.fix)}", file=out)
        if r.helm:
            print(f"              helm: {r.helm}", file=out)

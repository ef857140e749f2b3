"""`validate-registry FILE --live`: is each target what its gateway actually reads?

With the app's own access (its credential and the kubeconfigs in Key Vault), hence with exactly its
least privilege: one GET of the target's Secret and one of each registered workload (the Role
grants both; the rollout state already needs the workload GET). Reports, per target, whether the
Secret key holds a token of the registered gateway, whether each registered workload's pod template
reads that Secret key (`rotation.core.consumption`), with the fix when not, and the Helm chart
settings when the Secret is Helm's. Nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TextIO

from rotation.boundary import shown
from rotation.core.consumption import Consumption, ConsumptionState, SecretUse, check
from rotation.core.errors import RotationError
from rotation.core.model import GatewayConfig, KeyType, Registry, Target, Workload
from rotation.core.ports import Clusters
from rotation.core.printable import printable
from rotation.core.token import GatewayToken, parse_stored

Verify = Callable[[GatewayConfig, GatewayToken], KeyType | None]


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
         timeout: float, verify: Verify | None) -> LiveResult:
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
        key = verify(config, held) if verify is not None else None
        proof = f"{key.value} key, verified" if key is not None else "UNVERIFIED"
        holds = (f"token {held.fingerprint} named {printable(held.gateway)}, expires "
                 f"{held.expires_at:%Y-%m-%d %H:%M} UTC ({proof})")
        if key is None and state == ConsumptionState.CONSUMED.value:
            # Provenance, not the name inside the value: a planted or forged token is never "consumed".
            state = "unverified"
            fix = "; ".join(filter(None, [
                f"the key holds a token nobody vouches for: not one of {config.ref.id}'s Key Vault versions and "
                "ARM does not reproduce it (planted, forged, of another service's gateway or of a regenerated "
                "key); the next rotate overwrites it", fix]))
    if errors:
        fix = "; ".join(filter(None, [fix, *errors]))
    return LiveResult(config, target, state, fix, consumption.helm, holds)


def live_check(registry: Registry, clusters: Clusters, *, timeout: float = 20.0,
               verify: Verify | None = None) -> list[LiveResult]:
    """Every target of every gateway, checked in parallel; results in registry order. `verify` says
    which key signed a token of the gateway (None: unverified, never reported consumed)."""
    jobs = [(g, t) for g in registry.gateways for t in g.targets]
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(len(jobs), 16), thread_name_prefix="live") as pool:
        futures = [pool.submit(_one, registry, clusters, g, t, timeout, verify) for g, t in jobs]
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

"""Does a workload actually read the Secret key the registry says it does? Pure, over API JSON.

Writing a token into a key nobody reads is reported `updated` while the pods never see it (the
portal's YAML reads key `value`, the Helm chart `gateway-key`, Microsoft's rotation doc
`config.service.auth.key`). A pod template reads a Secret key through
- `env[].valueFrom.secretKeyRef {name, key}` (one key),
- `envFrom[].secretRef {name}` (every key, as variables named after the keys),
- a `secret` volume (every key, or the listed `items`) or a `projected` volume's `secret` source,
  mounted by the container.
Init containers count too: they run with the same token on every restart.

A Secret created by the gateway's Helm chart (label `app.kubernetes.io/managed-by: Helm`) is
rewritten with the chart's `gateway.auth.key` on the next `helm upgrade`: the chart must be told to
use the rotated Secret instead (`secret.createSecret=false`, `secret.existingSecretName=NAME`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from rotation.core.podspec import SecretUse, UseKind

if TYPE_CHECKING:
    from rotation.core.model import Target, Workload

__all__ = ["HELM_LABEL", "HELM_VALUE", "Consumption", "ConsumptionState", "SecretUse", "UseKind", "check",
           "consumers", "helm_fix", "is_helm_managed", "secret_uses", "template_of"]

HELM_LABEL = "app.kubernetes.io/managed-by"
HELM_VALUE = "Helm"


def _list(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _volume_secrets(volume: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(secret, key or None) pairs a volume exposes."""
    found: list[tuple[str, str | None]] = []
    sources: list[tuple[Mapping[str, Any], str]] = []
    secret = volume.get("secret")
    if isinstance(secret, Mapping):
        sources.append((secret, "secretName"))
    projected = volume.get("projected")
    if isinstance(projected, Mapping):
        sources.extend((s["secret"], "name") for s in _list(projected.get("sources"))
                       if isinstance(s.get("secret"), Mapping))
    for source, name_field in sources:
        name = source.get(name_field)
        if not isinstance(name, str):
            continue
        items = _list(source.get("items"))
        if items:
            found.extend((name, str(i["key"])) for i in items if isinstance(i.get("key"), str))
        else:
            found.append((name, None))
    return found


def secret_uses(template: Mapping[str, Any] | None) -> tuple[SecretUse, ...]:
    """Every Secret read by the containers of a pod template (`spec.template` of a workload, API JSON)."""
    spec = (template or {}).get("spec")
    if not isinstance(spec, Mapping):
        return ()
    volumes = {str(v.get("name")): _volume_secrets(v) for v in _list(spec.get("volumes"))}
    uses: list[SecretUse] = []
    for container in _list(spec.get("initContainers")) + _list(spec.get("containers")):
        uses.extend(_container_uses(container, volumes))
    return tuple(dict.fromkeys(uses))


def _container_uses(container: Mapping[str, Any],
                    volumes: Mapping[str, list[tuple[str, str | None]]]) -> list[SecretUse]:
    cname = str(container.get("name") or "?")
    uses: list[SecretUse] = []
    for env in _list(container.get("env")):
        source = env.get("valueFrom")
        ref = source.get("secretKeyRef") if isinstance(source, Mapping) else None
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str) and isinstance(ref.get("key"), str):
            uses.append(SecretUse(cname, UseKind.ENV, ref["name"], ref["key"]))
    for env_from in _list(container.get("envFrom")):
        ref = env_from.get("secretRef")
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
            uses.append(SecretUse(cname, UseKind.ENV_FROM, ref["name"]))
    for mount in _list(container.get("volumeMounts")):
        for secret, key in volumes.get(str(mount.get("name")), []):
            uses.append(SecretUse(cname, UseKind.VOLUME, secret, key))
    return uses


def template_of(workload_json: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = workload_json.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    return template if isinstance(template, Mapping) else None


def is_helm_managed(labels: Mapping[str, str] | None) -> bool:
    return (labels or {}).get(HELM_LABEL) == HELM_VALUE


def helm_fix(secret: str) -> str:
    """What stops `helm upgrade` from writing the chart's old token back over the rotated one.

    Helm deletes a resource that drops out of the chart's manifests, so the Secret is first kept
    (`helm.sh/resource-policy: keep`), then the chart pointed at it.
    """
    return (f"Secret {secret} is managed by Helm: the next `helm upgrade` writes the chart's gateway.auth.key "
            f"back. Keep it (kubectl annotate secret {secret} helm.sh/resource-policy=keep), then upgrade "
            f"the release with --set secret.createSecret=false --set secret.existingSecretName={secret}")


class ConsumptionState(StrEnum):
    CONSUMED = "consumed"        # every registered workload reads the registered Secret key
    MISMATCH = "mismatch"        # a registered workload does not read it (the fix says what it reads)
    UNCHECKED = "unchecked"      # no workload registered, or its spec could not be read


@dataclass(frozen=True, slots=True)
class Consumption:
    state: ConsumptionState
    fix: str | None = None
    helm: str | None = None  # the chart settings that stop drift, when the Secret is Helm's

    def to_dict(self) -> dict[str, object]:
        return {"state": self.state.value, "fix": self.fix, "helm": self.helm}


def check(target: Target, workloads: Mapping[Workload, tuple[SecretUse, ...] | None],
          labels: Mapping[str, str] | None = None) -> Consumption:
    """Whether each registered workload (`target.restart`) reads `target.secret`'s `target.key`.

    `workloads` maps each to its uses, or None when its spec could not be read.
    """
    helm = helm_fix(target.secret) if is_helm_managed(labels) else None
    if not target.restart:
        return Consumption(ConsumptionState.UNCHECKED, "no workload registered: the rotator cannot tell who "
                           "reads this Secret nor restart it (`discover` lists the workloads that do)", helm)
    problems: list[str] = []
    unknown: list[str] = []
    for workload in target.restart:
        uses = workloads.get(workload)
        if uses is None:
            unknown.append(str(workload))
        elif not any(u.reads(target.secret, target.key) for u in uses):
            problems.append(_misread(target, workload, uses))
    if problems:
        return Consumption(ConsumptionState.MISMATCH, "; ".join(problems), helm)
    if unknown:
        return Consumption(ConsumptionState.UNCHECKED, f"could not read the spec of {', '.join(unknown)}", helm)
    return Consumption(ConsumptionState.CONSUMED, None, helm)


def _misread(target: Target, workload: Workload, uses: tuple[SecretUse, ...]) -> str:
    """What a registered workload reads instead of the target's key, and the registry fix."""
    same_secret = sorted({u.key for u in uses if u.secret == target.secret and u.key is not None})
    if same_secret:
        keys = ", ".join(repr(k) for k in same_secret)
        return (f"{workload} reads key {keys} of Secret {target.secret}, not {target.key!r}: "
                f"set the target's \"key\" to {same_secret[0]!r}")
    others = sorted({u.secret for u in uses})
    seen = f"it reads Secret(s) {', '.join(others)}" if others else "it reads no Secret"
    return (f"{workload} does not read Secret {target.secret} ({seen}): fix the target's "
            "\"secret\" or its \"restart\" list")


def consumers(secret: str, key: str,
              workloads: Sequence[tuple[Workload, tuple[SecretUse, ...]]]) -> tuple[Workload, ...]:
    """The workloads whose containers read `secret`'s `key` (discovery's restart list)."""
    return tuple(w for w, uses in workloads if any(u.reads(secret, key) for u in uses))

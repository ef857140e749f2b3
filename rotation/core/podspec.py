"""Which Secret keys a pod template reads: the parsing half of the consumption check, over API JSON.

A lower module of its own because the model (a workload's `RolloutState.uses`) and the consumption
check (`rotation.core.consumption`, which judges targets of the model) both need `SecretUse`.
A pod template reads a Secret key through `env[].valueFrom.secretKeyRef`, `envFrom[].secretRef`, or a
`secret` / `projected` volume mounted by the container (Kubernetes API reference, PodSpec).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class UseKind(StrEnum):
    ENV = "env"
    ENV_FROM = "envFrom"
    VOLUME = "volume"


@dataclass(frozen=True, slots=True)
class SecretUse:
    """One way a container reads a Secret; `key` None means every key of it."""

    container: str
    kind: UseKind
    secret: str
    key: str | None = None

    def reads(self, secret: str, key: str) -> bool:
        return self.secret == secret and (self.key is None or self.key == key)

    def __str__(self) -> str:
        what = f"key {self.key!r}" if self.key is not None else "every key"
        return f"container {self.container} reads {what} of Secret {self.secret} ({self.kind.value})"


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
        cname = str(container.get("name") or "?")
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
    return tuple(dict.fromkeys(uses))


def template_of(workload_json: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = workload_json.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    return template if isinstance(template, Mapping) else None

"""One way a container reads a Secret (`SecretUse`), as `rotation.core.consumption` finds it in a pod template.

A module of its own, below both: the model (a workload's `RolloutState.uses`) and the consumption check
(which judges the model's targets) each need it, and neither may import the other in a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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

"""What every step of a reconcile needs, bundled once instead of threaded through each signature."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from rotation.core.deadline import Deadline
from rotation.core.model import GatewayConfig, Registry
from rotation.core.ports import Clusters, OutcomePublisher, TokenIssuer, TokenStore

Clock = Callable[[], datetime]
Guard = Callable[[], None]  # raises UpstreamError when the caller no longer holds the gateway's lease


def unguarded() -> None:
    return None


def deadline(seconds: float) -> Deadline:
    """A budget on this process's monotonic clock (wall-clock jumps do not stretch or cut it)."""
    return Deadline.after(seconds, time.monotonic)


@dataclass(frozen=True, slots=True)
class Deps:
    """The ports and settings the application acts through (built per call by the facade, so a
    changed setting takes effect on the next operation)."""

    registry: Registry
    issuer: TokenIssuer
    store: TokenStore
    clusters: Clusters
    clock: Clock
    token_lifetime: timedelta = timedelta(days=29)
    renew_before: timedelta = timedelta(days=7)
    publisher: OutcomePublisher | None = None
    adopt_existing: bool = False


@dataclass(frozen=True, slots=True)
class Scope:
    """One gateway's operation: its config, its deadline, and the lease check every write calls first."""

    config: GatewayConfig
    deadline: Deadline
    guard: Guard = unguarded

    def check(self, what: str) -> float:
        return self.deadline.check(what)

    def writing(self, what: str) -> float:
        """Before a write: still the gateway's writer (the lease), and time left for it."""
        self.guard()
        return self.deadline.check(what)

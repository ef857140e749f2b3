"""What every step of a reconcile needs, bundled once instead of threaded through each signature."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from rotation.core.deadline import Deadline
from rotation.core.errors import UpstreamError
from rotation.core.fencing import FenceHead
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


class Fence(Protocol):
    """The held lease's fence (`rotation.app.holding.Holding`): see `rotation.core.fencing`."""

    @property
    def generation(self) -> int: ...

    @property
    def head(self) -> FenceHead | None: ...

    def remaining(self) -> float: ...

    def commit(self, head: FenceHead, timeout: float | None) -> None: ...


# A write needs at least this long; less lease time left than that and the writer stops.
MIN_WRITE_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Scope:
    """One gateway's operation: its config, its deadline, the lease check every write calls first,
    and the lease's fence (None only for reads: dry runs, status)."""

    config: GatewayConfig
    deadline: Deadline
    guard: Guard = unguarded
    fence: Fence | None = None

    def check(self, what: str) -> float:
        return self.deadline.check(what)

    def writing(self, what: str) -> float:
        """Before a write: still the gateway's writer (the lease), and time left for it — no more than
        the lease time still guaranteed, so a write the client gives up on was sent while the lease held."""
        self.guard()
        left = self.deadline.check(what)
        if self.fence is not None:
            lease_left = self.fence.remaining()
            if lease_left < MIN_WRITE_SECONDS:
                raise UpstreamError(f"the gateway's lease has {lease_left:.1f}s left: not {what}")
            left = min(left, lease_left)
        return left

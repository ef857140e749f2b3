"""The per-gateway lease while held: one writer per gateway across every instance and the CLI."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rotation.core.deadline import Deadline
from rotation.core.errors import RotationError, UpstreamError
from rotation.core.fencing import FenceHead
from rotation.core.model import GatewayConfig
from rotation.core.ports import HeldLease, Lease
from rotation.telemetry import attributed

log = logging.getLogger("rotation")

# One blob lease per gateway (15-60 s); renewed in the background every third of it while held.
LEASE_SECONDS = 30.0


def lease_name(config: GatewayConfig) -> str:
    """One blob per gateway; service and gateway names are validated to [A-Za-z0-9_-]."""
    return f"{config.ref.service}/{config.ref.gateway}".lower()


class Holding:
    """A held gateway lease, renewed in the background so a long roll wait cannot lose it silently.

    Every write under it (Key Vault, a Secret, a restart, regenerateKey) first calls `check` (or
    `renew`): a holder that lost its lease, e.g. paused longer than its duration while another instance
    took it, must stop writing rather than carry on as the gateway's one writer.
    """

    def __init__(self, held: HeldLease, name: str, interval: float) -> None:
        self._held = held
        self._name = name
        self._stop = threading.Event()
        self.lost: str | None = None
        self.closed = False  # the operation that took the lease returned: nothing may write any more
        self._thread = threading.Thread(target=attributed(lambda: self._run(interval)), name="lease-renew",
                                        daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._held.renew()
            except Exception as exc:  # noqa: BLE001 - any failure: stop counting on the lease
                if self._stop.is_set():
                    return  # released meanwhile: nothing is lost
                self.lost = str(exc) if isinstance(exc, RotationError) else f"internal error: {type(exc).__name__}"
                log.warning("lease %s lost while held: %s", self._name, self.lost)
                return

    def renew(self) -> None:
        """Proves the lease is still ours (before an irreversible step); raises UpstreamError if not."""
        if self.lost is not None:
            raise UpstreamError(f"lease {self._name} was lost: {self.lost}")
        try:
            self._held.renew()
        except RotationError as exc:
            self.lost = str(exc)
            raise

    def check(self) -> None:
        """Before each write: raises UpstreamError if the lease was lost, including while this process
        was paused past its duration (then it renews first; that fails if another holder took it),
        or once the operation returned (a straggler thread of its fan-out must not write)."""
        if self.closed:
            raise UpstreamError(f"lease {self._name}: the operation already returned; nothing more is written")
        if self.lost is not None:
            raise UpstreamError(f"lease {self._name} was lost: {self.lost}")
        try:
            self._held.check()
        except RotationError as exc:
            self.lost = str(exc)
            raise

    # --- the fence (rotation.core.fencing) -------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._held.generation

    @property
    def head(self) -> FenceHead | None:
        return self._held.head

    def remaining(self) -> float:
        """Seconds this holder can still count on the lease: every write's timeout is capped at it."""
        return 0.0 if self.closed or self.lost is not None else self._held.remaining()

    def commit(self, head: FenceHead, timeout: float | None) -> None:
        """Makes `head` the gateway's authoritative Key Vault version. A lease that expired but was
        not taken is renewed once and the commit tried again (Blob Storage lets the same lease id
        renew then); if that fails, the write stays a fork and UpstreamError is raised."""
        self.check()
        try:
            self._held.commit(head, timeout)
        except RotationError:
            self.renew()
            self._held.commit(head, timeout)

    def release(self, timeout: float | None = None) -> None:
        """Ends the holding within `timeout` (the caller's deadline): a release that cannot finish in
        time is left undone and the lease expires on its own."""
        self.closed = True
        self._stop.set()
        self._thread.join(timeout=0 if timeout is None else min(0.2, max(0.0, timeout)))
        self._held.release(timeout=timeout)


@contextmanager
def exclusive(lease: Lease, config: GatewayConfig, deadline: Deadline) -> Iterator[Holding]:
    """The gateway's lease, across every instance and the CLI: one writer per gateway. Not getting
    it within the deadline raises UpstreamError (transient: Event Grid redelivers)."""
    name = lease_name(config)
    held = lease.acquire(name, duration=LEASE_SECONDS, wait=deadline.check("taking the gateway lease"))
    holding = Holding(held, name, LEASE_SECONDS / 3)
    try:
        yield holding
    finally:
        holding.release(timeout=deadline.left())

"""The ports the service drives. Adapters implement them over the SDKs; tests over memory.

Every method may raise only `rotation.core.errors` types. `timeout` is the seconds left in the
caller's deadline: adapters pass it to the SDK as the request timeout so a slow upstream cannot hold
a reconcile past its budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from rotation.core.fencing import FenceHead
from rotation.core.model import (
    Cluster,
    GatewayRef,
    KeyType,
    RolloutState,
    RotationReport,
    SecretState,
    TokenInfo,
    TokenRecord,
    Workload,
)


class TokenIssuer(Protocol):
    """APIM through ARM."""

    def generate_token(self, gateway: GatewayRef, key_type: KeyType, expiry: datetime,
                       timeout: float | None = None) -> str:
        """A new token signed with `key_type`, valid until `expiry` (whole minutes, UTC)."""
        ...

    def regenerate_key(self, gateway: GatewayRef, key_type: KeyType, timeout: float | None = None) -> None:
        """Invalidates every token signed with `key_type`."""
        ...


class TokenStore(Protocol):
    """Key Vault: the source of truth for each gateway's current token."""

    def get(self, secret_name: str, timeout: float | None = None, version: str | None = None) -> TokenRecord | None:
        """The latest version (or the given one), or None when the secret (or that version) does not exist."""
        ...

    def put(self, secret_name: str, record: TokenRecord, timeout: float | None = None) -> str:
        """Writes a new version (value, expires_on, tags); returns the version id."""
        ...

    def list(self, timeout: float | None = None) -> Sequence[TokenInfo]:
        """Every token secret's properties in one paged listing (no values)."""
        ...

    def versions(self, secret_name: str, timeout: float | None = None) -> Sequence[TokenInfo]:
        """Every enabled version's properties of one secret, oldest first (no values)."""
        ...


class ClusterClient(Protocol):
    """One Kubernetes cluster, as the app's least-privilege identity."""

    def read_secret(self, namespace: str, name: str, key: str, timeout: float | None = None) -> SecretState:
        """Raises NotFound when the Secret does not exist; `value` is None when only the key is missing."""
        ...

    def write_secret_key(self, namespace: str, name: str, key: str, value: str, resource_version: str,
                         timeout: float | None = None, annotations: Mapping[str, str | None] | None = None,
                         ) -> str:
        """Patches one key (and optionally annotations; None removes one) with a resourceVersion
        precondition; raises Conflict on 409. Returns the Secret's new resourceVersion ("" if the
        answer did not say)."""
        ...

    def write_secret_key_if(self, namespace: str, name: str, key: str, value: str, expected: str | None,
                            timeout: float | None = None,
                            annotations: Mapping[str, str | None] | None = None) -> str:
        """Sets one key only if it still holds `expected` (None: only if the key is absent), without
        reading the Secret first; raises Conflict when it does not (nothing written). `annotations`
        as for `write_secret_key`. Returns the Secret's new resourceVersion ("" if not said)."""
        ...

    def annotate_secret(self, namespace: str, name: str, annotations: Mapping[str, str | None],
                        timeout: float | None = None, resource_version: str | None = None) -> None:
        """Sets (or with None removes) annotations on the Secret, without touching its data; with a
        `resource_version`, only if the Secret is still at it (raises Conflict otherwise)."""
        ...

    def restart(self, namespace: str, workload: Workload, at: datetime, timeout: float | None = None,
                fingerprint: str | None = None) -> None:
        """Sets `kubectl.kubernetes.io/restartedAt` on the pod template and, with a `fingerprint`
        (12 hex characters, never a token), TOKEN_FINGERPRINT_ANNOTATION, in one write."""
        ...

    def rollout(self, namespace: str, workload: Workload, timeout: float | None = None) -> RolloutState:
        """kubectl rollout status semantics, plus the pod template's last `restartedAt` and token
        fingerprint."""
        ...


class Clusters(Protocol):
    def client(self, cluster: Cluster) -> ClusterClient:
        """The cached client of a cluster (built on first use)."""
        ...


class OutcomePublisher(Protocol):
    def publish(self, report: RotationReport, timeout: float | None = None) -> None:
        """Best effort: must not raise, and returns within `timeout` seconds (the caller's deadline)."""
        ...


class HeldLease(Protocol):
    """A lease this process holds; it expires on its own if the holder dies.

    It also fences Key Vault writes (rotation.core.fencing): `generation` is this acquisition's
    fencing generation, strictly greater than every earlier holder's; `head` the Key Vault version the
    previous holders recorded as authoritative; `commit` records a new head only while the lease is
    held, so a holder that lost it can write Key Vault but can never make that write count.
    """

    @property
    def generation(self) -> int:
        """This acquisition's fencing generation (advanced with the lease when it was acquired)."""
        ...

    @property
    def head(self) -> FenceHead | None:
        """The gateway's authoritative Key Vault version as last committed (None: never committed)."""
        ...

    def commit(self, head: FenceHead, timeout: float | None = None) -> None:
        """Records `head` as the gateway's authoritative version, conditioned on holding the lease.
        Raises UpstreamError when the lease was lost (then the write it names stays a fork)."""
        ...

    def remaining(self) -> float:
        """Seconds the lease is still guaranteed to be this holder's (from its last confirmed renewal,
        less a safety margin); a write's timeout is capped at it."""
        ...

    def renew(self) -> None:
        """Resets the lease's clock. Raises UpstreamError when the lease was lost (expired and taken)."""
        ...

    def check(self) -> None:
        """Raises UpstreamError unless this holder can still count on the lease: renews first when the
        last confirmed renewal is older than half the duration (a pause the holder did not see)."""
        ...

    def release(self, timeout: float | None = None) -> None:
        """Best effort, within `timeout` seconds (the caller's time left; no call at all when none is
        left): must not raise (an unreleased lease expires)."""
        ...


class Lease(Protocol):
    """One writer per gateway across every instance and the operator's CLI."""

    @property
    def shared(self) -> bool:
        """False for the in-process fallback, which serialises only this process."""
        ...

    def heads(self, names: Sequence[str], timeout: float | None = None) -> Mapping[str, FenceHead]:
        """The committed heads of these leases (absent: never committed), read without taking them:
        status and the sweep compare them with Key Vault's latest versions."""
        ...

    def acquire(self, name: str, *, duration: float, wait: float) -> HeldLease:
        """Takes the lease `name` for `duration` seconds (15-60), waiting up to `wait` seconds for
        another holder to release it or for its lease to expire. Raises UpstreamError when it cannot
        (a transient failure: the caller's caller retries)."""
        ...

"""In-memory ports with the real semantics (versions, resourceVersion conflicts, signed tokens).

They stand in for ARM, Key Vault and Kubernetes in the service and function tiers; the devstack
tiers run the real SDK adapters instead. Every token they mint is registered with the leak check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rotation.core.errors import Conflict, NotFound, PermanentError, UpstreamError
from rotation.core.model import (
    FINGERPRINT_PATTERN,
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
from rotation.core.podspec import SecretUse, UseKind
from rotation.core.tags import info_from, record_from, tags_for
from tests import leakcheck


def sign(gateway: str, expiry: datetime, key: bytes) -> str:
    stamp = expiry.strftime("%Y%m%d%H%M")
    mac = hmac.new(key, f"{gateway}\n{stamp}".encode(), hashlib.sha512).digest()
    token = f"{gateway}&{stamp}&{base64.b64encode(mac).decode()}"
    leakcheck.register(token)
    return token


@dataclass
class Faults:
    """Errors to raise on the next calls of an operation: {operation: [exception, ...]}."""

    queue: dict[str, list[Exception]] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)

    def hit(self, operation: str) -> None:
        if operation in self.delay:
            time.sleep(self.delay[operation])
        pending = self.queue.get(operation)
        if pending:
            raise pending.pop(0)


@dataclass
class MemoryIssuer:
    keys: dict[tuple[str, KeyType], bytes] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    regenerated: list[KeyType] = field(default_factory=list)

    def key(self, gateway: GatewayRef, key_type: KeyType) -> bytes:
        return self.keys.setdefault((gateway.id.lower(), key_type), secrets.token_bytes(32))

    def generate_token(self, gateway: GatewayRef, key_type: KeyType, expiry: datetime,
                       timeout: float | None = None) -> str:
        self.calls.append(("generateToken", gateway.id))
        self.faults.hit("generateToken")
        return sign(gateway.gateway, expiry, self.key(gateway, key_type))

    def regenerate_key(self, gateway: GatewayRef, key_type: KeyType, timeout: float | None = None) -> None:
        self.calls.append(("regenerateKey", gateway.id))
        self.faults.hit("regenerateKey")
        self.regenerated.append(key_type)
        self.keys[(gateway.id.lower(), key_type)] = secrets.token_bytes(32)

    def verify(self, gateway: GatewayRef, token: str) -> KeyType | None:
        name, stamp, _ = token.split("&")
        for key_type in KeyType:
            expected = sign(name, datetime.strptime(stamp, "%Y%m%d%H%M"), self.key(gateway, key_type))
            if hmac.compare_digest(expected, token):
                return key_type
        return None

    @property
    def generated(self) -> int:
        return sum(1 for op, _ in self.calls if op == "generateToken")


@dataclass
class _Version:
    value: str
    tags: dict[str, str]
    expires_on: datetime
    version: str
    created: datetime | None = None


@dataclass
class MemoryStore:
    secrets: dict[str, list[_Version]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    lock: threading.Lock = field(default_factory=threading.Lock)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def get(self, secret_name: str, timeout: float | None = None, version: str | None = None) -> TokenRecord | None:
        self.calls.append(("get", secret_name))
        self.faults.hit("get")
        with self.lock:
            versions = self.secrets.get(secret_name.lower())
            if not versions:
                return None
            found = [v for v in versions if version is None or v.version == version]
            if not found:
                return None
            latest = found[-1]
        return record_from(latest.value, latest.tags, latest.version, latest.created)

    def put(self, secret_name: str, record: TokenRecord, timeout: float | None = None) -> str:
        self.calls.append(("put", secret_name))
        self.faults.hit("put")
        version = secrets.token_hex(16)
        with self.lock:
            self.secrets.setdefault(secret_name.lower(), []).append(
                _Version(record.token.value, tags_for(record), record.token.expires_at, version, self.clock()))
        return version

    def list(self, timeout: float | None = None) -> Sequence[TokenInfo]:
        self.calls.append(("list", "*"))
        self.faults.hit("list")
        with self.lock:
            return [info_from(name, v[-1].tags, v[-1].expires_on) for name, v in self.secrets.items() if v]

    def versions(self, secret_name: str, timeout: float | None = None) -> Sequence[TokenInfo]:
        self.calls.append(("versions", secret_name))
        self.faults.hit("versions")
        with self.lock:
            return [info_from(secret_name, v.tags, v.expires_on, v.created, v.version)
                    for v in self.secrets.get(secret_name.lower(), [])]

    def read_text(self, secret_name: str) -> str:
        raise NotFound(secret_name)

    def current(self, secret_name: str) -> str | None:
        versions = self.secrets.get(secret_name.lower())
        return versions[-1].value if versions else None

    @property
    def writes(self) -> int:
        return sum(1 for op, _ in self.calls if op == "put")


@dataclass
class _Secret:
    data: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    resource_version: int = 1


@dataclass
class MemoryCluster:
    name: str
    secrets: dict[tuple[str, str], _Secret] = field(default_factory=dict)
    restarts: dict[tuple[str, str], list[datetime]] = field(default_factory=dict)
    fingerprints: dict[tuple[str, str], str] = field(default_factory=dict)  # the pod template's annotation
    # What each workload's pod template reads, {(namespace, "kind/name"): uses}; a workload not listed
    # reads nothing anyone told this cluster, and its rollout says so with uses=None (unchecked).
    reads: dict[tuple[str, str], tuple[SecretUse, ...]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    conflicts: int = 0  # the next N writes find their resourceVersion stale (someone else wrote)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seed(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        self.secrets[(namespace, name)] = _Secret(dict(data))

    def value(self, namespace: str, name: str, key: str) -> str | None:
        return self.secrets[(namespace, name)].data.get(key)

    def read_secret(self, namespace: str, name: str, key: str, timeout: float | None = None) -> SecretState:
        self.calls.append(("read", f"{namespace}/{name}"))
        self.faults.hit("read")
        with self.lock:
            secret = self.secrets.get((namespace, name))
            if secret is None:
                raise NotFound(f"cluster {self.name}: Secret {namespace}/{name} not found")
            return SecretState(str(secret.resource_version), secret.data.get(key), dict(secret.annotations))

    def write_secret_key(self, namespace: str, name: str, key: str, value: str, resource_version: str,
                         timeout: float | None = None,
                         annotations: Mapping[str, str | None] | None = None) -> str:
        self.calls.append(("write", f"{namespace}/{name}"))
        self.faults.hit("write")
        with self.lock:
            secret = self.secrets.get((namespace, name))
            if secret is None:
                raise NotFound(f"cluster {self.name}: Secret {namespace}/{name} not found")
            if self.conflicts > 0:
                self.conflicts -= 1
                secret.resource_version += 1
            if str(secret.resource_version) != resource_version:
                raise Conflict(f"cluster {self.name}: Secret {namespace}/{name} changed meanwhile")
            secret.data[key] = value
            self._annotate(secret, annotations or {})
            return str(secret.resource_version)

    def write_secret_key_if(self, namespace: str, name: str, key: str, value: str, expected: str | None,
                            timeout: float | None = None,
                            annotations: Mapping[str, str | None] | None = None) -> str:
        """The JSON Patch `test` + `add` of the Kubernetes adapter: written only if the key holds
        `expected` (None: absent); `conflicts` makes the next N find another value there."""
        self.calls.append(("write", f"{namespace}/{name}"))
        self.faults.hit("write")
        with self.lock:
            secret = self.secrets.get((namespace, name))
            if secret is None:
                raise NotFound(f"cluster {self.name}: Secret {namespace}/{name} not found")
            if self.conflicts > 0:
                self.conflicts -= 1
                raise Conflict(f"cluster {self.name}: Secret {namespace}/{name}: the key does not hold the "
                               "expected value")
            if secret.data.get(key) != expected:
                raise Conflict(f"cluster {self.name}: Secret {namespace}/{name}: the key does not hold the "
                               "expected value")
            secret.data[key] = value
            self._annotate(secret, annotations or {})
            return str(secret.resource_version)

    def annotate_secret(self, namespace: str, name: str, annotations: Mapping[str, str | None],
                        timeout: float | None = None, resource_version: str | None = None) -> None:
        self.calls.append(("annotate", f"{namespace}/{name}"))
        self.faults.hit("annotate")
        with self.lock:
            secret = self.secrets[(namespace, name)]
            if resource_version is not None and str(secret.resource_version) != resource_version:
                raise Conflict(f"cluster {self.name}: Secret {namespace}/{name} changed meanwhile")
            self._annotate(secret, annotations)

    @staticmethod
    def _annotate(secret: _Secret, annotations: Mapping[str, str | None]) -> None:
        for k, v in annotations.items():
            if v is None:
                secret.annotations.pop(k, None)
            else:
                secret.annotations[k] = v
        secret.resource_version += 1

    def restart(self, namespace: str, workload: Workload, at: datetime, timeout: float | None = None,
                fingerprint: str | None = None) -> None:
        self.calls.append(("restart", f"{namespace}/{workload}"))
        self.faults.hit("restart")
        if fingerprint is not None and not FINGERPRINT_PATTERN.match(fingerprint):
            raise PermanentError(f"cluster {self.name}: not a token fingerprint")
        with self.lock:
            self.restarts.setdefault((namespace, str(workload)), []).append(at)
            if fingerprint is not None:
                self.fingerprints[(namespace, str(workload))] = fingerprint

    def rollout(self, namespace: str, workload: Workload, timeout: float | None = None) -> RolloutState:
        self.calls.append(("rollout", f"{namespace}/{workload}"))
        self.faults.hit("rollout")
        with self.lock:
            restarts = self.restarts.get((namespace, str(workload)))
            fingerprint = self.fingerprints.get((namespace, str(workload)))
            uses = self.reads.get((namespace, str(workload)))
        return RolloutState(workload, True, "1/1 updated", restarts[-1] if restarts else None, uses=uses,
                            token_fingerprint=fingerprint)

    def reading(self, namespace: str, workload: str, secret: str, key: str, container: str = "gateway") -> None:
        """Say the workload's pod template reads `secret`'s `key` (an env secretKeyRef), besides what
        it read before."""
        uses = self.reads.get((namespace, workload), ())
        self.reads[(namespace, workload)] = (*uses, SecretUse(container, UseKind.ENV, secret, key))

    @property
    def writes(self) -> int:
        return sum(1 for op, _ in self.calls if op == "write")


@dataclass
class MemoryClusters:
    clusters: dict[str, MemoryCluster]

    def client(self, cluster: Cluster) -> MemoryCluster:
        if cluster.name not in self.clusters:
            raise UpstreamError(f"cluster {cluster.name} unreachable")
        return self.clusters[cluster.name]


@dataclass
class RecordingPublisher:
    published: list[RotationReport] = field(default_factory=list)

    def publish(self, report: RotationReport, timeout: float | None = None) -> None:
        self.published.append(report)

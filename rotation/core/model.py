"""Domain values shared by every layer: what a gateway is, where it runs, and what happened to it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from rotation.core.errors import InvalidGatewayId, InvalidInput
from rotation.core.podspec import SecretUse
from rotation.core.token import DEFAULT_FORMAT, GatewayToken

DEFAULT_SECRET_KEY = "config.service.auth.key"  # noqa: S105 - a key name, not a secret
# Pod-template annotation naming the token a workload was restarted for: its fingerprint (12 hex
# characters of SHA-256, `rotation.core.token.fingerprint`), never the token. Changing it rolls the pods.
TOKEN_FINGERPRINT_ANNOTATION = "apim-token-rotator/token-fingerprint"  # noqa: S105 - an annotation name
FINGERPRINT_PATTERN = re.compile(r"^[0-9a-f]{12}$")

# Names that reach URLs, Key Vault secret names and Kubernetes objects. Deliberately stricter than
# ARM: a name that could traverse a path or smuggle an encoded separator never gets that far.
_SUBSCRIPTION = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RESOURCE_GROUP = re.compile(r"^[A-Za-z0-9_()-][A-Za-z0-9_.()-]{0,88}[A-Za-z0-9_()-]$|^[A-Za-z0-9_()-]$")
_SERVICE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9-]{0,48}[A-Za-z0-9])?$")
_GATEWAY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,78}[A-Za-z0-9])?$")


def _check(kind: str, value: str, pattern: re.Pattern[str], error: type[InvalidInput]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        shown = value[:80] + "…" if isinstance(value, str) and len(value) > 80 else value
        raise error(f"invalid {kind} name {shown!r}")
    return value


def check_service_name(value: str) -> str:
    return _check("APIM service", value, _SERVICE, InvalidInput)


def check_gateway_name(value: str) -> str:
    return _check("gateway", value, _GATEWAY, InvalidInput)


class KeyType(StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"

    @property
    def other(self) -> KeyType:
        return KeyType.SECONDARY if self is KeyType.PRIMARY else KeyType.PRIMARY


class Outcome(StrEnum):
    UPDATED = "updated"
    IN_SYNC = "in_sync"
    NEWER = "newer"
    FAILED = "failed"
    TIMEOUT = "timeout"
    PLANNED = "planned"

    @property
    def ok(self) -> bool:
        return self not in (Outcome.FAILED, Outcome.TIMEOUT)


class SyncState(StrEnum):
    IN_SYNC = "in_sync"
    STALE = "stale"
    MISSING = "missing"
    UNREACHABLE = "unreachable"
    MISMATCH = "mismatch"  # a registered workload does not read the registered Secret key


class WorkloadKind(StrEnum):
    DEPLOYMENT = "deployment"
    STATEFULSET = "statefulset"
    DAEMONSET = "daemonset"


@dataclass(frozen=True, slots=True)
class GatewayRef:
    """One self-hosted gateway, identified by its ARM id."""

    subscription: str
    resource_group: str
    service: str
    gateway: str

    @classmethod
    def parse(cls, resource_id: str) -> GatewayRef:
        if not isinstance(resource_id, str):
            raise InvalidGatewayId(f"gateway id must be a string, got {type(resource_id).__name__}")
        parts = resource_id.split("/")
        shape = ["", "subscriptions", None, "resourcegroups", None, "providers",
                 "microsoft.apimanagement", "service", None, "gateways", None]
        if len(parts) != len(shape) or any(
            want is not None and got.lower() != want for got, want in zip(parts, shape, strict=True)
        ):
            shown = resource_id[:120] + "…" if len(resource_id) > 120 else resource_id
            raise InvalidGatewayId(
                "gateway id must look like /subscriptions/{sub}/resourceGroups/{rg}/providers/"
                f"Microsoft.ApiManagement/service/{{service}}/gateways/{{gateway}}, got {shown!r}"
            )
        return cls(
            subscription=_check("subscription", parts[2], _SUBSCRIPTION, InvalidGatewayId),
            resource_group=_check("resource group", parts[4], _RESOURCE_GROUP, InvalidGatewayId),
            service=_check("APIM service", parts[8], _SERVICE, InvalidGatewayId),
            gateway=_check("gateway", parts[10], _GATEWAY, InvalidGatewayId),
        )

    @property
    def service_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ApiManagement/service/{self.service}"
        )

    @property
    def id(self) -> str:
        return f"{self.service_id}/gateways/{self.gateway}"

    @property
    def key(self) -> tuple[str, str]:
        """What routes and events address a gateway by (service and gateway, case-insensitive)."""
        return (self.service.lower(), self.gateway.lower())

    def __str__(self) -> str:
        return f"{self.service}/{self.gateway}"


@dataclass(frozen=True, slots=True)
class Workload:
    kind: WorkloadKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value}/{self.name}"


@dataclass(frozen=True, slots=True)
class Target:
    """One Kubernetes Secret key that must hold the gateway's token."""

    cluster: str
    namespace: str
    secret: str
    key: str = DEFAULT_SECRET_KEY
    format: str = DEFAULT_FORMAT
    restart: tuple[Workload, ...] = ()

    def __str__(self) -> str:
        return f"{self.cluster}/{self.namespace}/{self.secret}"


@dataclass(frozen=True, slots=True)
class AksAuth:
    """Entra ID token of the app's identity for the AKS server scope."""

    server: str
    ca_data: str


@dataclass(frozen=True, slots=True)
class KubeconfigAuth:
    """A kubeconfig kept in Key Vault under this secret name."""

    secret_name: str


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    auth: AksAuth | KubeconfigAuth


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    ref: GatewayRef
    key_vault_secret: str
    key_type: KeyType | None
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class Registry:
    clusters: Mapping[str, Cluster]
    gateways: tuple[GatewayConfig, ...]

    def find(self, service: str, gateway: str) -> GatewayConfig | None:
        wanted = (service.lower(), gateway.lower())
        return next((g for g in self.gateways if g.ref.key == wanted), None)

    def find_by_gateway(self, service_id: str | None, gateway: str) -> GatewayConfig | None:
        """Match an event: by service id when the event has one. Without one (no topic/source), only
        when exactly one registered gateway has that name: an event naming just `gw-1` must not touch
        the `gw-1` of whichever service happens to be listed first."""
        named = [c for c in self.gateways if c.ref.gateway.lower() == gateway.lower()]
        if service_id is None:
            return named[0] if len(named) == 1 else None
        return next((c for c in named if c.ref.service_id.lower() == service_id.lower()), None)


# --- what the stores hold -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """The gateway's token as Key Vault keeps it: the value plus tags describing it."""

    token: GatewayToken
    key_type: KeyType
    gateway_id: str
    version: str | None = None
    roll_from: KeyType | None = None  # set while a two-phase key roll away from this key is pending
    created_at: datetime | None = None  # when Key Vault stored this version (its `created` attribute)
    origin: str | None = None  # set when the token was adopted from a target instead of generated
    generation: int | None = None  # the lease's fencing generation of the writer (rotation.core.fencing)
    based_on: str | None = None  # the Key Vault version the writer read as the latest before writing


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What one listing of Key Vault properties tells about a stored token, without its value."""

    secret_name: str
    gateway_id: str | None
    key_type: KeyType | None
    expires_at: datetime | None
    fingerprint: str | None
    roll_from: KeyType | None = None
    created_at: datetime | None = None  # the version's `created` (listings of versions only)
    origin: str | None = None
    generation: int | None = None  # the writer's fencing generation (untagged: written before fencing)
    version: str | None = None  # the version id (listings of versions only)


@dataclass(frozen=True, slots=True)
class SecretState:
    """One key of a Kubernetes Secret as read, with the resourceVersion to write against."""

    resource_version: str
    value: str | None = field(repr=False)
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RolloutState:
    workload: Workload
    ready: bool
    detail: str
    restarted_at: datetime | None = None  # the pod template's kubectl.kubernetes.io/restartedAt
    uses: tuple[SecretUse, ...] | None = None  # the Secrets its pod template reads (None: not read)
    # The pod template's TOKEN_FINGERPRINT annotation: which token the workload was last restarted for
    # (None: never restarted by this product, or the annotation is not a fingerprint).
    token_fingerprint: str | None = None


# --- what happened --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetReport:
    cluster: str
    namespace: str
    secret: str
    outcome: Outcome
    restarted: tuple[str, ...] = ()
    error: str | None = None
    duration_ms: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "cluster": self.cluster,
            "namespace": self.namespace,
            "secret": self.secret,
            "outcome": self.outcome.value,
            "restarted": list(self.restarted),
            "error": self.error,
            "durationMs": self.duration_ms,
        }


@dataclass(frozen=True, slots=True)
class RotationReport:
    gateway_id: str
    rotated: bool
    expires_at: datetime | None
    key_type: KeyType | None
    fingerprint: str | None
    reason: str
    duration_ms: int
    targets: tuple[TargetReport, ...]
    dry_run: bool = False
    error: str | None = None  # set when the reconcile failed before reaching the targets
    instance: str | None = None  # the gateway instance (pod) an event named

    @property
    def ok(self) -> bool:
        return self.error is None and all(t.outcome.ok for t in self.targets)

    @property
    def failed_targets(self) -> tuple[TargetReport, ...]:
        return tuple(t for t in self.targets if not t.outcome.ok)

    def to_dict(self) -> dict[str, object]:
        return {
            "gatewayId": self.gateway_id,
            "rotated": self.rotated,
            "expiresAt": self.expires_at.isoformat() if self.expires_at else None,
            "keyType": self.key_type.value if self.key_type else None,
            "fingerprint": self.fingerprint,
            "reason": self.reason,
            "dryRun": self.dry_run,
            "durationMs": self.duration_ms,
            "ok": self.ok,
            "error": self.error,
            "instance": self.instance,
            "targets": [t.to_dict() for t in self.targets],
        }

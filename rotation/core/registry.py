"""Loading the registry: which gateways to rotate and where each one runs.

The registry is operator-written JSON, so every error names the JSON path and the offending value
(`gateways[0].targets[1].namespace: 'Prod_NS' is not a valid Kubernetes namespace`). Unknown fields
are errors too: a misspelt `restart` must not silently mean "restart nothing".
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from rotation.core.errors import InvalidInput, RegistryError
from rotation.core.hosts import AksServerRule
from rotation.core.model import (
    DEFAULT_SECRET_KEY,
    AksAuth,
    Cluster,
    GatewayConfig,
    GatewayRef,
    KeyType,
    KubeconfigAuth,
    Registry,
    Target,
    Workload,
    WorkloadKind,
)
from rotation.core.redact import url_shown
from rotation.core.token import DEFAULT_FORMAT, RAW_FORMAT

# The forms `GatewayToken.parse` reads back (it strips only a leading `GatewayKey `).
FORMATS = (RAW_FORMAT, DEFAULT_FORMAT)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_VAULT_SECRET = re.compile(r"^[0-9a-zA-Z-]{1,127}$")

T = TypeVar("T")


def _show(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


class _Reader:
    """Walks the JSON document, remembering where it is for error messages."""

    def __init__(self, path: str, value: object) -> None:
        self.path = path
        self.value = value

    def fail(self, message: str) -> RegistryError:
        return RegistryError(f"registry: {self.path or '$'}: {message}")

    def obj(self, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(self.value, dict):
            raise self.fail(f"expected an object, got {_show(self.value)}")
        unknown = sorted(set(self.value) - allowed)
        if unknown:
            raise self.fail(f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
        return self.value

    def child(self, key: str | int) -> _Reader:
        path = f"{self.path}[{key}]" if isinstance(key, int) else (f"{self.path}.{key}" if self.path else key)
        if isinstance(key, int) and isinstance(self.value, list):
            return _Reader(path, self.value[key])
        return _Reader(path, self.value.get(str(key)) if isinstance(self.value, dict) else None)

    def items(self) -> list[_Reader]:
        if not isinstance(self.value, list):
            raise self.fail(f"expected a list, got {_show(self.value)}")
        return [self.child(i) for i in range(len(self.value))]

    def string(self, pattern: re.Pattern[str] | None = None, what: str = "value",
               default: str | None = None) -> str:
        if self.value is None and default is not None:
            return default
        if self.value is None:
            raise self.fail("is required")
        if not isinstance(self.value, str) or not self.value:
            raise self.fail(f"expected a non-empty string, got {_show(self.value)}")
        if pattern is not None and not pattern.fullmatch(self.value):
            raise self.fail(f"{_show(self.value)} is not a valid {what}")
        return self.value

    def parsed(self, parse: Callable[[str], T]) -> T:
        text = self.string()
        try:
            return parse(text)
        except InvalidInput as exc:
            raise self.fail(str(exc)) from None


def _cluster(r: _Reader, aks_servers: AksServerRule) -> Cluster:
    fields = r.obj({"name", "auth", "server", "caData", "kubeconfigSecret"})
    name = r.child("name").string(_CLUSTER_NAME, "cluster name")
    auth = r.child("auth").string()
    if auth == "aks":
        for extra in ("kubeconfigSecret",):
            if extra in fields:
                raise r.child(extra).fail("only allowed with auth 'kubeconfig'")
        server = r.child("server").string()
        # The app's Entra token for AKS goes to this host: only AKS API servers of the cloud qualify.
        why = aks_servers.problem(server)
        if why is not None:
            raise r.child("server").fail(f"{url_shown(server)!r} {why}")
        ca_reader = r.child("caData")
        ca = ca_reader.string()
        try:
            pem = base64.b64decode(ca, validate=True)
        except (binascii.Error, ValueError):
            raise ca_reader.fail("is not base64") from None
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise ca_reader.fail("does not decode to a PEM certificate")
        return Cluster(name=name, auth=AksAuth(server=server, ca_data=ca))
    if auth == "kubeconfig":
        for extra in ("server", "caData"):
            if extra in fields:
                raise r.child(extra).fail("only allowed with auth 'aks'")
        secret = r.child("kubeconfigSecret").string(_VAULT_SECRET, "Key Vault secret name")
        return Cluster(name=name, auth=KubeconfigAuth(secret_name=secret))
    raise r.child("auth").fail(f"{_show(auth)} must be 'aks' or 'kubeconfig'")


def _workload(r: _Reader) -> Workload:
    text = r.string()
    kind, sep, name = text.partition("/")
    kinds = ", ".join(k.value for k in WorkloadKind)
    if not sep or kind not in {k.value for k in WorkloadKind}:
        raise r.fail(f"{_show(text)} must be KIND/NAME with KIND one of {kinds}")
    if not _DNS_SUBDOMAIN.fullmatch(name):
        raise r.fail(f"{_show(name)} is not a valid Kubernetes object name")
    return Workload(WorkloadKind(kind), name)


def _target(r: _Reader, clusters: Mapping[str, Cluster]) -> Target:
    r.obj({"cluster", "namespace", "secret", "key", "format", "restart"})
    cluster = r.child("cluster").string()
    if cluster not in clusters:
        known = ", ".join(sorted(clusters)) or "none"
        raise r.child("cluster").fail(f"unknown cluster {_show(cluster)} (known: {known})")
    fmt_reader = r.child("format")
    fmt = fmt_reader.string(default=DEFAULT_FORMAT)
    if fmt.count("{token}") != 1:
        raise fmt_reader.fail(f"{_show(fmt)} must contain {{token}} exactly once")
    if fmt not in FORMATS:
        # Anything else is never read back as a token: every reconcile would rewrite the Secret and
        # restart its workloads, and the foreign/newer checks would not see what the Secret holds.
        raise fmt_reader.fail(f"{_show(fmt)} must be exactly {' or '.join(map(repr, FORMATS))}: the forms a "
                              "Secret's token is read back from (the raw token, or the portal's 'GatewayKey ' "
                              "prefix)")
    restart_reader = r.child("restart")
    restart = () if restart_reader.value is None else tuple(_workload(w) for w in restart_reader.items())
    if len(set(restart)) != len(restart):
        raise restart_reader.fail("lists a workload twice")
    return Target(
        cluster=cluster,
        namespace=r.child("namespace").string(_DNS_LABEL, "Kubernetes namespace"),
        secret=r.child("secret").string(_DNS_SUBDOMAIN, "Kubernetes Secret name"),
        key=r.child("key").string(_SECRET_KEY, "Secret key", default=DEFAULT_SECRET_KEY),
        format=fmt,
        restart=restart,
    )


def default_secret_name(ref: GatewayRef) -> str:
    """Key Vault secret holding the gateway's token: `apim-{service}-{gateway}-token`."""
    return f"apim-{ref.service}-{ref.gateway}-token".replace("_", "-").lower()[:127]


def _gateway(r: _Reader, clusters: Mapping[str, Cluster]) -> GatewayConfig:
    r.obj({"id", "keyVaultSecret", "keyType", "targets"})
    ref = r.child("id").parsed(GatewayRef.parse)
    key_type_reader = r.child("keyType")
    key_type: KeyType | None = None
    if key_type_reader.value is not None:
        text = key_type_reader.string()
        if text not in {k.value for k in KeyType}:
            raise key_type_reader.fail(f"{_show(text)} must be 'primary' or 'secondary'")
        key_type = KeyType(text)
    targets_reader = r.child("targets")
    targets = tuple(_target(t, clusters) for t in targets_reader.items())
    if not targets:
        raise targets_reader.fail("needs at least one target")
    seen: set[tuple[str, str, str, str]] = set()
    for i, t in enumerate(targets):
        where = (t.cluster, t.namespace, t.secret, t.key)
        if where in seen:
            raise targets_reader.child(i).fail(f"duplicates another target ({t}, key {t.key!r})")
        seen.add(where)
    return GatewayConfig(
        ref=ref,
        key_vault_secret=r.child("keyVaultSecret").string(
            _VAULT_SECRET, "Key Vault secret name", default=default_secret_name(ref)
        ),
        key_type=key_type,
        targets=targets,
    )


class _DuplicateField(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads keeps the last of duplicate names: a reviewer reading the first `server` and the app
    using the last would disagree about where the AKS token goes, so duplicates are refused."""
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise _DuplicateField(name[:40])
        out[name] = value
    return out


def _distinct(r: _Reader, cluster: Cluster, earlier: Iterable[Cluster]) -> None:
    """Key Vault secret names are case-insensitive: two kubeconfigs under names differing only in case
    are one secret (the second stored overwrites the first). Cluster names follow the same rule."""
    for other in earlier:
        if other.name.lower() == cluster.name.lower():
            raise r.child("name").fail(f"duplicate cluster name {_show(cluster.name)} (ignoring case: "
                                       f"{_show(other.name)})")
        if (isinstance(cluster.auth, KubeconfigAuth) and isinstance(other.auth, KubeconfigAuth)
                and cluster.auth.secret_name.lower() == other.auth.secret_name.lower()):
            raise r.child("kubeconfigSecret").fail(
                f"{_show(cluster.auth.secret_name)} is already the kubeconfig secret of cluster {other.name} "
                "(Key Vault names are case-insensitive): each cluster needs its own")


def load_registry(document: str | Mapping[str, object], *,
                  aks_servers: AksServerRule | None = None) -> Registry:
    """Parse and validate a registry; raises RegistryError naming the first problem.

    `aks_servers` says where `aks` clusters may be (default: the public cloud's AKS domain, no
    loopback); settings pass the configured cloud's rule."""
    data = _parse(document) if isinstance(document, str) else dict(document)
    aks_servers = aks_servers or AksServerRule()
    root = _Reader("", data)
    root.obj({"clusters", "gateways", "$schema"})
    clusters = _clusters(root.child("clusters"), aks_servers)
    gateways = _gateways(root.child("gateways"), clusters)
    return Registry(clusters=clusters, gateways=tuple(gateways))


def _parse(document: str) -> object:
    try:
        data: object = json.loads(document, object_pairs_hook=_unique_fields)
    except _DuplicateField as dup:
        raise RegistryError(f"registry: duplicate field {dup.name!r}: readers disagree on which one "
                            "counts (JSON keeps the last)") from None
    except RecursionError:
        raise RegistryError("registry: not valid JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise RegistryError(f"registry: not valid JSON: {exc.msg} at {where}") from None
    return data


def _clusters(readers: _Reader, aks_servers: AksServerRule) -> dict[str, Cluster]:
    clusters: dict[str, Cluster] = {}
    for r in readers.items():
        cluster = _cluster(r, aks_servers)
        if cluster.name in clusters:
            raise r.child("name").fail(f"duplicate cluster name {_show(cluster.name)}")
        _distinct(r, cluster, clusters.values())
        clusters[cluster.name] = cluster
    return clusters


def _gateways(readers: _Reader, clusters: Mapping[str, Cluster]) -> list[GatewayConfig]:
    gateways: list[GatewayConfig] = []
    for r in readers.items():
        gateway = _gateway(r, clusters)
        for other in gateways:
            _distinct_gateway(r, gateway, other)
        _not_a_kubeconfig(r, gateway, clusters.values())
        gateways.append(gateway)
    return gateways


def _distinct_gateway(r: _Reader, gateway: GatewayConfig, other: GatewayConfig) -> None:
    if other.ref.key == gateway.ref.key:
        raise r.child("id").fail(f"gateway {gateway.ref} is registered twice")
    if other.key_vault_secret.lower() == gateway.key_vault_secret.lower():
        raise r.fail(f"Key Vault secret {gateway.key_vault_secret!r} is already used by {other.ref}")
    # One Secret key feeds one gateway: under two, each reconcile would overwrite the other's
    # token and both would report success while one gateway is cut off.
    theirs = {(t.cluster, t.namespace, t.secret, t.key) for t in other.targets}
    for j, t in enumerate(gateway.targets):
        if (t.cluster, t.namespace, t.secret, t.key) in theirs:
            raise r.child("targets").child(j).fail(
                f"{t.cluster}/{t.namespace}/{t.secret} key {t.key!r} is already a target of {other.ref.id}")


def _not_a_kubeconfig(r: _Reader, gateway: GatewayConfig, clusters: Iterable[Cluster]) -> None:
    """With one vault for both, a forced rotation would overwrite the kubeconfig with a token."""
    for cluster in clusters:
        if (isinstance(cluster.auth, KubeconfigAuth)
                and cluster.auth.secret_name.lower() == gateway.key_vault_secret.lower()):
            raise r.fail(
                f"Key Vault secret {gateway.key_vault_secret!r} is the kubeconfig secret of cluster "
                f"{cluster.name}")

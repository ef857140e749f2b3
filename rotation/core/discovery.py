"""Onboarding: from what runs (APIM's gateways, the clusters' Secrets and workloads) to a registry.

Pure: the I/O part (`rotation.discover`) lists gateways through ARM and Secrets and workloads
through the operator's kubeconfig contexts, and hands them here. A Secret key is a target when its
value parses as a gateway token (with or without the `GatewayKey ` prefix) whose gateway name is
one of the listed gateways; the token's own name is all there is to match on (a signature cannot be
checked without the gateway's key). Everything else that looks like a token is reported, never
silently dropped: tokens of gateways not in the given services, names present in two services.

Nothing here keeps or returns a token: targets carry fingerprints and expiries.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rotation.core.consumption import SecretUse, consumers, helm_fix, is_helm_managed
from rotation.core.errors import InvalidInput
from rotation.core.model import GatewayRef, Workload, WorkloadKind
from rotation.core.provenance import possible
from rotation.core.token import DEFAULT_FORMAT, PREFIX, RAW_FORMAT, GatewayToken, fingerprint, parse_stored

APP_USER = "apim-token-rotator"  # the kubeconfig identity's user name (infra/k8s/rolebinding-kubeconfig.yaml)
PRINCIPAL_PLACEHOLDER = "${PRINCIPAL}"
ROLE_LABELS = {"app.kubernetes.io/name": "apim-token-rotator"}
ALL_NAMESPACES = ""  # ClusterScan.not_scanned key: the whole context could not be scanned


def parse_service_id(text: str) -> str:
    """A full ARM id of an APIM service, normalised (validated through the gateway id rules)."""
    probe = f"{text.rstrip('/')}/gateways/probe"
    try:
        return GatewayRef.parse(probe).service_id
    except InvalidInput:
        raise InvalidInput("--service must look like /subscriptions/{sub}/resourceGroups/{rg}/providers/"
                           f"Microsoft.ApiManagement/service/{{name}}, got {text[:120]!r}") from None


@dataclass(frozen=True, slots=True)
class ScannedSecret:
    """One Secret as the scan read it; `values` are decoded and never leave this module."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    values: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True, slots=True)
class ClusterScan:
    """What one kubeconfig context showed. `entry` is its registry `clusters[]` object; `auth` is
    how the app reaches it (`aks` or `kubeconfig`), which decides the RoleBinding's subject."""

    name: str
    entry: Mapping[str, Any]
    secrets: Sequence[ScannedSecret]
    workloads: Mapping[str, Sequence[tuple[Workload, tuple[SecretUse, ...]]]]  # namespace → workloads
    not_scanned: Mapping[str, str] = field(default_factory=dict)  # namespace → why (e.g. list forbidden)

    @property
    def auth(self) -> str:
        return str(self.entry.get("auth"))


@dataclass(frozen=True, slots=True)
class FoundTarget:
    gateway: GatewayRef
    cluster: str
    namespace: str
    secret: str
    key: str
    format: str
    restart: tuple[Workload, ...]
    fingerprint: str
    expires_at: str
    helm: bool

    def registry_entry(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "namespace": self.namespace, "secret": self.secret, "key": self.key,
                "format": self.format, "restart": [str(w) for w in self.restart]}


@dataclass(frozen=True, slots=True)
class Proposal:
    registry: dict[str, Any]
    unmatched: list[dict[str, Any]]
    manifests: dict[str, list[dict[str, Any]]]
    warnings: list[dict[str, Any]]
    targets: tuple[FoundTarget, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"registry": self.registry, "unmatched": self.unmatched, "manifests": self.manifests,
                "warnings": self.warnings}


MIN_SIGNATURE_BYTES = 32  # an HMAC: SHA-256 gives 32 bytes, the SHA-512 of APIM's documented SAS tokens 64


def plausible_signature(token: GatewayToken) -> bool:
    """Whether the token's signature could be an HMAC: base64 (standard or URL-safe) of at least 32
    bytes. A value of a token's shape whose "signature" is a word (a template's placeholder, a note) is
    not a credential a gateway reads; proposing it would make the rotator overwrite that Secret."""
    signature = token.value.rsplit("&", 1)[1]
    padded = signature + "=" * (-len(signature) % 4)
    for alphabet in (None, b"-_"):
        try:
            raw = base64.b64decode(padded, altchars=alphabet, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) >= MIN_SIGNATURE_BYTES:
            return True
    return False


def _format_of(value: str) -> str:
    return DEFAULT_FORMAT if value.strip().startswith(PREFIX) else RAW_FORMAT


def _where(cluster: str, s: ScannedSecret, key: str) -> dict[str, Any]:
    return {"cluster": cluster, "namespace": s.namespace, "secret": s.name, "key": key}


def candidate_tokens(gateways: Sequence[GatewayRef], scans: Sequence[ClusterScan]
                     ) -> list[tuple[GatewayToken, list[GatewayRef]]]:
    """Each distinct plausible token found, with the gateways whose name it carries: what the command
    asks ARM to reproduce (the name inside a value is a claim, never proof)."""
    by_name: dict[str, list[GatewayRef]] = {}
    for ref in gateways:
        by_name.setdefault(ref.gateway.lower(), []).append(ref)
    seen: dict[str, tuple[GatewayToken, list[GatewayRef]]] = {}
    for scan in scans:
        for secret in scan.secrets:
            for value in secret.values.values():
                token = parse_stored(value)
                if token is not None and plausible_signature(token) and token.fingerprint not in seen:
                    refs = by_name.get(token.gateway.lower(), [])
                    if refs:
                        seen[token.fingerprint] = (token, refs)
    return list(seen.values())


def propose(gateways: Sequence[GatewayRef], scans: Sequence[ClusterScan], *,
            principal: str | None = None, proven: Mapping[str, GatewayRef] | None = None,
            now: datetime | None = None) -> Proposal:
    """The registry proposal, what matched nothing, the RBAC each target needs, and warnings.

    `proven`: fingerprint -> the gateway ARM reproduced the token for. Only such tokens are proposed
    (a Secret anyone may write could otherwise be planted into the registry); `now` rules out expiries
    no APIM token can have."""
    by_name: dict[str, list[GatewayRef]] = {}
    for ref in gateways:
        by_name.setdefault(ref.gateway.lower(), []).append(ref)
    found: list[FoundTarget] = []
    unmatched: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    for scan in scans:
        for secret in sorted(scan.secrets, key=lambda s: (s.namespace, s.name)):
            for key in sorted(secret.values):
                value = secret.values[key]
                token = parse_stored(value)
                if token is None:
                    continue
                refs = by_name.get(token.gateway.lower(), [])
                why = _not_proposed(token, refs, scan.name, secret, key, proven or {}, now)
                if why is not None:
                    unmatched.append(why)
                    continue
                refs = [(proven or {})[token.fingerprint]]
                restart = tuple(sorted(consumers(secret.name, key, scan.workloads.get(secret.namespace, ())),
                                       key=str))
                target = FoundTarget(refs[0], scan.name, secret.namespace, secret.name, key, _format_of(value),
                                     restart, token.fingerprint, token.expires_at.isoformat(),
                                     is_helm_managed(secret.labels))
                found.append(target)
                warnings.extend(_warnings(target, scan.name, secret, key))
    unmatched.extend(_not_scanned(scans))
    with_target = {t.gateway for t in found}
    for ref in gateways:
        if ref not in with_target:
            unmatched.append({"kind": "gateway-without-target", "gateway": ref.id, "detail":
                              f"no Secret in the scanned contexts/namespaces holds a token of {ref.gateway}"})
    return Proposal(_registry(gateways, scans, found), unmatched, manifests(found, scans, principal), warnings,
                    tuple(found))


def _not_proposed(token: GatewayToken, refs: Sequence[GatewayRef], cluster: str, secret: ScannedSecret,
                  key: str, proven: Mapping[str, GatewayRef], now: datetime | None) -> dict[str, Any] | None:
    """Why a token-shaped value is not proposed as a target (None: it is, for proven[fingerprint])."""
    about = {**_where(cluster, secret, key), "gateway": token.gateway,
             "fingerprint": token.fingerprint, "expiresAt": token.expires_at.isoformat()}
    if not plausible_signature(token):
        return {"kind": "token-like-value", **about, "detail":
                f"has the shape of a token of {token.gateway!r} but its signature is not "
                f"base64 of an HMAC (at least {MIN_SIGNATURE_BYTES} bytes): not proposed; "
                "register it by hand if a gateway really reads it"}
    if not refs:
        return {"kind": "token-of-unknown-gateway", **about, "detail":
                f"holds a token of gateway {token.gateway!r}, which is not a self-hosted "
                "gateway of the given APIM service(s)"}
    if now is not None and not possible(token, now):
        return {"kind": "unverified-token", **about, "detail":
                "expires more than 30 days ahead, which no APIM token does: a forged value, not proposed"}
    if token.fingerprint not in proven:
        return {"kind": "unverified-token", **about, "detail":
                f"carries the name {token.gateway!r} but ARM does not reproduce it for "
                f"{' or '.join(r.id for r in refs)} (generateToken with its expiry, either key): planted, "
                "forged, or signed by a regenerated key; not proposed"}
    return None


def _warnings(target: FoundTarget, cluster: str, secret: ScannedSecret, key: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not target.restart:
        out.append({"kind": "no-workload", **_where(cluster, secret, key), "detail":
                    "no Deployment, StatefulSet or DaemonSet reads this key: nothing would be "
                    "restarted after a rotation (add \"restart\" by hand if pods read it)"})
    if target.helm:
        out.append({"kind": "helm-managed", **_where(cluster, secret, key), "detail": helm_fix(secret.name)})
    return out


def _not_scanned(scans: Sequence[ClusterScan]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for scan in scans:
        for namespace, why in sorted(scan.not_scanned.items()):
            if namespace == ALL_NAMESPACES:
                out.append({"kind": "context-not-scanned", "cluster": scan.name,
                            "detail": f"{why}: targets in it, if any, are missing from this proposal"})
                continue
            out.append({"kind": "namespace-not-scanned", "cluster": scan.name, "namespace": namespace,
                        "detail": f"{why}: targets in it, if any, are missing from this proposal"})
    return out


def _registry(gateways: Sequence[GatewayRef], scans: Sequence[ClusterScan],
              found: Sequence[FoundTarget]) -> dict[str, Any]:
    order = {s.name: i for i, s in enumerate(scans)}
    used = {t.cluster for t in found}
    entries = []
    for ref in sorted({t.gateway for t in found}, key=lambda r: (r.service_id.lower(), r.gateway.lower())):
        mine = sorted((t for t in found if t.gateway == ref),
                      key=lambda t: (order[t.cluster], t.namespace, t.secret, t.key))
        entries.append({"id": ref.id, "targets": [t.registry_entry() for t in mine]})
    return {"clusters": [dict(s.entry) for s in scans if s.name in used], "gateways": entries}


def role_manifests(namespace: str, secret: str, workloads: Sequence[Workload], subject: str) -> list[dict[str, Any]]:
    """The Role and RoleBinding of infra/k8s/ (role.yaml, rolebinding-*.yaml) for one Secret.

    Same shape as rendering those templates (a test compares them): get/patch on the one Secret and
    on the listed workloads, each workload list starting with "" so an empty one grants nothing.
    """
    name = f"apim-token-rotator-{secret}"
    by_kind = {kind: [w.name for w in workloads if w.kind is kind] for kind in WorkloadKind}
    rules: list[dict[str, Any]] = [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret],
                                    "verbs": ["get", "patch"]}]
    for kind, resource in ((WorkloadKind.DEPLOYMENT, "deployments"), (WorkloadKind.STATEFULSET, "statefulsets"),
                           (WorkloadKind.DAEMONSET, "daemonsets")):
        rules.append({"apiGroups": ["apps"], "resources": [resource], "resourceNames": ["", *by_kind[kind]],
                      "verbs": ["get", "patch"]})
    meta = {"name": name, "namespace": namespace, "labels": dict(ROLE_LABELS)}
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": dict(meta),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": subject}]},
    ]


def manifests(found: Sequence[FoundTarget], scans: Sequence[ClusterScan],
              principal: str | None) -> dict[str, list[dict[str, Any]]]:
    """Per cluster: one Role/RoleBinding per target Secret (workloads of all its keys merged)."""
    auth = {s.name: s.auth for s in scans}
    merged: dict[tuple[str, str, str], list[Workload]] = {}
    for t in found:
        workloads = merged.setdefault((t.cluster, t.namespace, t.secret), [])
        workloads.extend(w for w in t.restart if w not in workloads)
    out: dict[str, list[dict[str, Any]]] = {}
    for (cluster, namespace, secret), workloads in merged.items():
        subject = (principal or PRINCIPAL_PLACEHOLDER) if auth[cluster] == "aks" else APP_USER
        out.setdefault(cluster, []).extend(role_manifests(namespace, secret, workloads, subject))
    return out



_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def cluster_entry(context: str, *, server: str | None, ca_data: str | None, aks: bool) -> dict[str, Any]:
    """The registry `clusters[]` object for a kubeconfig context (named after it).

    `aks`: the app reaches it with its managed identity (server and CA from the context); otherwise
    through a kubeconfig the operator stores in Key Vault as `kubeconfig-{context}`.
    """
    if not _CLUSTER_NAME.fullmatch(context):
        raise InvalidInput(f"context {context[:80]!r} is not a valid registry cluster name (letters, digits, "
                           "'.', '_', '-'; at most 63): rename it first (kubectl config rename-context)")
    if aks:
        if not server or not server.startswith("https://") or not ca_data:
            raise InvalidInput(f"context {context}: --aks needs an https server and inline "
                               "certificate-authority-data in the kubeconfig")
        return {"name": context, "auth": "aks", "server": server, "caData": ca_data}
    return {"name": context, "auth": "kubeconfig", "kubeconfigSecret": kubeconfig_secret_name(context)}


def kubeconfig_secret_name(context: str) -> str:
    """`kubeconfig-{context}` when that is a Key Vault name as it stands (lowercase letters, digits,
    '-'); otherwise the vault-safe, lowercased name plus 8 hex of the context's SHA-256. Key Vault names
    are case-insensitive and allow no '_' or '.', so `aks_prod` and `aks-prod` (or `Prod` and `prod`)
    would otherwise share one secret; the suffix keeps the name stable from one run to the next."""
    plain = f"kubeconfig-{context}"
    if re.fullmatch(r"[0-9a-z-]{1,127}", plain):
        return plain
    safe = re.sub(r"[^0-9a-z-]", "-", plain.lower())[:118]
    return f"{safe}-{fingerprint(context)[:8]}"


def distinct_contexts(contexts: Sequence[str]) -> None:
    """Registry cluster names are the contexts' names and unique ignoring case (as Key Vault names
    are): two contexts that differ only in case cannot both be proposed. InvalidInput names them."""
    seen: dict[str, str] = {}
    for context in contexts:
        other = seen.setdefault(context.lower(), context)
        if other != context:
            raise InvalidInput(f"contexts {other!r} and {context!r} differ only in case: registry cluster names "
                               "are unique ignoring case; rename one (kubectl config rename-context)")

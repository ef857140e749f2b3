"""Shared setup for the benchmarks that need the devstack: bulk Kubernetes objects, RBAC and Key Vault.

The devstack seeds three gateways; the benchmarks add their own (100 targets of one gateway, 1,000
gateways of one target each) with the same least-privilege shape the app has in production: a
namespaced Role with `get`/`patch` on exactly the named Secrets and workloads (rendered from
`infra/k8s/` per target for the fan-out; one Role per namespace naming its 100 Secrets for the sweep,
which is the same permission set written as one object instead of 100).
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from devstack import kube
from devstack import stack as devstack

T = TypeVar("T")


def parallel(items: Iterable[T], fn: Callable[[T], Any], workers: int = 8) -> list[Any]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def apply_by_namespace(stack: devstack.Stack, cluster: str, docs: Sequence[Mapping[str, Any]],
                       workers: int = 8) -> None:
    """Server-side apply as admin; namespaces first, then the rest in parallel chunks."""
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    rest = [d for d in docs if d["kind"] != "Namespace"]
    info = stack.cluster(cluster)
    kube.apply(info, namespaces)
    local = threading.local()

    def one(chunk: Sequence[Mapping[str, Any]]) -> None:
        if not hasattr(local, "api"):
            local.api = kube.api_client(info)
        kube.apply(info, chunk, api=local.api)

    chunks = [rest[i:i + 25] for i in range(0, len(rest), 25)]
    parallel(chunks, one, workers)


def workload(kind: str, name: str, namespace: str, secret: str) -> dict[str, Any]:
    doc = devstack._workload(kind, name, namespace)
    doc["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": secret}}]
    return doc


def namespace_role(namespace: str, secrets: Sequence[str], principal: str) -> list[dict[str, Any]]:
    """infra/k8s/role.yaml's rules for many Secrets of one namespace (get/patch, by resourceNames)."""
    name = "apim-token-rotator-bench"
    labels = {"app.kubernetes.io/name": "apim-token-rotator"}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": list(secrets),
                       "verbs": ["get", "patch"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": name, "namespace": namespace, "labels": labels},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": principal}]}
    return [role, binding]


class Control:
    """The fakes' control routes over one kept-alive connection per thread (bulk seeding)."""

    def __init__(self, stack: devstack.Stack) -> None:
        self.stack = stack
        self._ctx = ssl.create_default_context(cafile=stack.ca)

    def call(self, base: str, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        if not base.startswith("https://"):
            raise ValueError(f"control URLs are https, got {base[:40]!r}")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, method=method,  # noqa: S310 - https only
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self._ctx, timeout=30) as resp:  # noqa: S310 - https only
            text = resp.read()
        return json.loads(text) if text else None

    def calls(self, base: str) -> list[dict[str, Any]]:
        return list(self.call(base, "GET", "/_devstack/calls"))

    def clear_calls(self) -> None:
        for base in (self.stack.arm_url, self.stack.keyvault_url):
            self.call(base, "DELETE", "/_devstack/calls")

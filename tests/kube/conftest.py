"""Two real clusters (kube-apiserver + etcd on loopback) with the shipped least-privilege RBAC.

`west` is reached like AKS (bearer token from a credential, CA from `caData`), `east` through a
kubeconfig. The app's identities are bound only by the Role/RoleBinding rendered from `infra/k8s/`.

Without a kube-apiserver binary (and no way to build one) the tests skip, unless `CI=true`, where
they fail: CI must really run them.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from azure.core.credentials import AccessToken

from devstack import kube
from rotation.adapters.kubernetes import KubernetesClusters
from rotation.core.model import AksAuth, Cluster, KubeconfigAuth
from tests import leakcheck

NS = "gw"
SECRET = "gw-token"
KEY = "config.service.auth.key"
OTHER_SECRET = "other-secret"
EMPTY_NS = "gw-empty"  # the Role names a Secret that does not exist here
AKS_PRINCIPAL = "0b7c4a52-1d1e-4f0e-9d55-6a0c2e3f9a11"  # the managed identity's object id
GHOSTS = ("deployment/ghost", "daemonset/ghost")  # allowed in EMPTY_NS, never created
WORKLOADS = ("deployment/gw", "deployment/gw-paused", "statefulset/gw-sts", "daemonset/gw-ds")


@dataclass
class StaticCredential:
    """A TokenCredential of our own: hands out one bearer token and records what was asked."""

    token: str
    lifetime: float = 3600.0
    scopes: list[tuple[str, ...]] = field(default_factory=list)

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time() + self.lifetime))


@dataclass
class KubeStack:
    dir: Path
    west: kube.ClusterInfo  # auth: aks
    east: kube.ClusterInfo  # auth: kubeconfig
    aks_token: str
    app_token: str
    kubeconfig_east: str

    def aks_cluster(self, name: str = "west", server: str | None = None,
                    ca_pem: bytes | None = None) -> Cluster:
        ca = ca_pem if ca_pem is not None else self.west.ca_pem.read_bytes()
        return Cluster(name, AksAuth(server=server or self.west.server,
                                     ca_data=base64.b64encode(ca).decode()))

    def kubeconfig_cluster(self) -> Cluster:
        return Cluster("east", KubeconfigAuth("kubeconfig-east"))

    def clusters(self, credential: StaticCredential | None = None) -> KubernetesClusters:
        kubeconfigs: Mapping[str, str] = {"kubeconfig-east": self.kubeconfig_east}
        return KubernetesClusters(credential or StaticCredential(self.aks_token), kubeconfigs.__getitem__)

    def info(self, name: str) -> kube.ClusterInfo:
        return self.west if name == "west" else self.east


def _workloads(ns: str) -> list[dict[str, Any]]:
    def template(name: str) -> dict[str, Any]:
        return {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{
                "name": "gateway", "image": "mcr.microsoft.com/azure-api-management/gateway:v2",
                "env": [{"name": "config.service.auth", "valueFrom": {
                    "secretKeyRef": {"name": SECRET, "key": KEY}}}],
            }]},
        }

    def meta(name: str) -> dict[str, str]:
        return {"name": name, "namespace": ns}

    selector = {"matchLabels": {"app": "x"}}
    docs: list[dict[str, Any]] = []
    for name, paused in (("gw", False), ("gw-paused", True), ("not-listed", False)):
        t = template(name)
        t["metadata"]["labels"]["app"] = "x"
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name),
                     "spec": {"replicas": 3, "paused": paused, "selector": selector, "template": t}})
    sts = template("gw-sts")
    sts["metadata"]["labels"]["app"] = "x"
    docs.append({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("gw-sts"),
                 "spec": {"replicas": 2, "serviceName": "gw-sts", "selector": selector, "template": sts}})
    ds = template("gw-ds")
    ds["metadata"]["labels"]["app"] = "x"
    docs.append({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("gw-ds"),
                 "spec": {"selector": selector, "template": ds}})
    return docs


def seed(info: kube.ClusterInfo, principal: str, auth_kind: str) -> None:
    initial = "GatewayKey gw&202001010000&" + base64.b64encode(secrets.token_bytes(32)).decode()
    leakcheck.register(initial)
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": EMPTY_NS}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NS},
         "type": "Opaque", "stringData": {KEY: initial, "unrelated": "keep-me"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": OTHER_SECRET, "namespace": NS},
         "type": "Opaque", "stringData": {KEY: "not-yours"}},
        *_workloads(NS),
        *kube.render_rbac(NS, SECRET, WORKLOADS, principal, auth_kind),
        *kube.render_rbac(EMPTY_NS, SECRET, GHOSTS, principal, auth_kind),
    ]
    kube.apply(info, docs)


@pytest.fixture(scope="session")
def kube_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStack]:
    in_ci = os.environ.get("CI", "").lower() == "true"
    try:
        binaries = kube.ensure_binaries(build=True)
    except kube.KubeStackError as exc:
        if in_ci:
            pytest.fail(f"real kube-apiserver unavailable in CI: {exc}", pytrace=False)
        pytest.skip(f"real kube-apiserver unavailable (build it with `sudo scripts/kube-apiserver.sh`): {exc}")

    d = tmp_path_factory.mktemp("kube")
    ca = trustme.CA(organization_name="apim-token-rotator tests")
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(d / "server-key.pem"))
    (d / "server.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))

    aks_token = "aks-" + secrets.token_urlsafe(32)
    app_token = "app-" + secrets.token_urlsafe(32)
    for t in (aks_token, app_token):
        leakcheck.register(t)
    tls = kube.ServingTLS(ca_cert=d / "ca.pem", cert=d / "server.pem", key=d / "server-key.pem")
    tokens: dict[str, tuple[str, tuple[str, ...]]] = {aks_token: (AKS_PRINCIPAL, ()),
                                                        app_token: (kube.APP_USER, ())}
    try:
        west, east = kube.start_clusters(d, ["west", "east"], tls, tokens, binaries=binaries)
    except kube.KubeStackError as exc:
        if in_ci:
            pytest.fail(f"could not start the clusters: {exc}", pytrace=False)
        pytest.skip(f"could not start the clusters: {exc}")
    try:
        for t in (west.admin_token, east.admin_token):
            leakcheck.register(t)
        seed(west, AKS_PRINCIPAL, "aks")
        seed(east, kube.APP_USER, "kubeconfig")
        yield KubeStack(dir=d, west=west, east=east, aks_token=aks_token, app_token=app_token,
                        kubeconfig_east=kube.kubeconfig_text(east, app_token))
    finally:
        kube.stop(d)

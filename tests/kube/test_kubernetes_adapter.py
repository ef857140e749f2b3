"""The Kubernetes adapter against real kube-apiservers, as the app's least-privilege identity."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import trustme

from devstack import kube
from rotation.adapters.kubernetes import AKS_SCOPE, RESTARTED_AT, KubernetesClusterClient, KubernetesClusters
from rotation.core.errors import AccessDenied, Conflict, NotFound, PermanentError, UpstreamError
from rotation.core.model import Cluster, KubeconfigAuth, Workload, WorkloadKind
from tests import leakcheck
from tests.kube.conftest import EMPTY_NS, KEY, NS, OTHER_SECRET, SECRET, KubeStack, StaticCredential

pytestmark = pytest.mark.devstack

AUTHS = ("aks", "kubeconfig")


def token_value(tag: str) -> str:
    value = f"GatewayKey gw&203001010000&{base64.b64encode(tag.encode() * 8).decode()}"
    leakcheck.register(value)
    return value


@pytest.fixture(scope="module")
def clusters(kube_stack: KubeStack) -> Iterator[KubernetesClusters]:
    c = kube_stack.clusters()
    yield c
    c.close()


def app_client(kube_stack: KubeStack, clusters: KubernetesClusters, auth: str) -> KubernetesClusterClient:
    cluster = kube_stack.aks_cluster() if auth == "aks" else kube_stack.kubeconfig_cluster()
    return clusters.client(cluster)


_admins: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_admin_clients() -> Iterator[None]:
    yield
    for api in _admins.values():
        api.close()
    _admins.clear()


def admin(kube_stack: KubeStack, auth: str) -> Any:
    if auth not in _admins:
        _admins[auth] = kube.api_client(kube_stack.west if auth == "aks" else kube_stack.east)
    return _admins[auth]


# --- Secret -------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", AUTHS)
def test_read_then_patch_one_key_with_precondition(kube_stack: KubeStack, clusters: KubernetesClusters,
                                                   auth: str) -> None:
    c = app_client(kube_stack, clusters, auth)
    before = c.read_secret(NS, SECRET, KEY, timeout=5)
    assert before.resource_version
    assert before.value is not None
    assert before.value.startswith("GatewayKey gw&")

    new = token_value(f"read-patch-{auth}")
    written = c.write_secret_key(NS, SECRET, KEY, new, before.resource_version, timeout=5)

    after = c.read_secret(NS, SECRET, KEY, timeout=5)
    assert after.value == new
    assert after.resource_version != before.resource_version
    # The PATCH's answer names the new resourceVersion (the restart marker is cleared with it, no GET).
    assert written == after.resource_version
    # only the one key changed
    assert c.read_secret(NS, SECRET, "unrelated").value == "keep-me"
    assert c.read_secret(NS, SECRET, "absent-key").value is None


@pytest.mark.parametrize("auth", AUTHS)
def test_stale_resource_version_is_a_conflict(kube_stack: KubeStack, clusters: KubernetesClusters,
                                              auth: str) -> None:
    c = app_client(kube_stack, clusters, auth)
    stale = c.read_secret(NS, SECRET, KEY).resource_version
    first = token_value(f"first-{auth}")
    c.write_secret_key(NS, SECRET, KEY, first, stale, timeout=5)

    loser = token_value(f"loser-{auth}")
    with pytest.raises(Conflict) as caught:
        c.write_secret_key(NS, SECRET, KEY, loser, stale, timeout=5)
    assert loser not in str(caught.value)
    assert f"secrets {NS}/{SECRET}" in str(caught.value)
    assert c.read_secret(NS, SECRET, KEY).value == first  # the loser wrote nothing


def test_missing_secret_is_not_found(kube_stack: KubeStack, clusters: KubernetesClusters) -> None:
    # The Role in EMPTY_NS names SECRET, which does not exist there: a real 404 (not a 403).
    for auth in AUTHS:
        c = app_client(kube_stack, clusters, auth)
        with pytest.raises(NotFound, match=f"secrets {EMPTY_NS}/{SECRET} not found"):
            c.read_secret(EMPTY_NS, SECRET, KEY, timeout=5)


# --- least privilege ----------------------------------------------------------------------------


@pytest.mark.parametrize("auth", AUTHS)
def test_role_is_minimal(kube_stack: KubeStack, clusters: KubernetesClusters, auth: str) -> None:
    from kubernetes import client as k8s

    c = app_client(kube_stack, clusters, auth)
    cluster = "west" if auth == "aks" else "east"
    with pytest.raises(AccessDenied, match=f"cluster {cluster}: forbidden to get secrets {NS}/{OTHER_SECRET}"):
        c.read_secret(NS, OTHER_SECRET, KEY)
    with pytest.raises(AccessDenied, match="forbidden to patch secrets"):
        c.write_secret_key(NS, OTHER_SECRET, KEY, token_value("x"), "1")
    with pytest.raises(AccessDenied, match="forbidden to patch deployments gw/not-listed"):
        c.restart(NS, Workload(WorkloadKind.DEPLOYMENT, "not-listed"), datetime.now(UTC))
    with pytest.raises(AccessDenied, match="forbidden to get deployments gw/not-listed"):
        c.rollout(NS, Workload(WorkloadKind.DEPLOYMENT, "not-listed"))
    with pytest.raises(AccessDenied, match="forbidden to get secrets default/"):
        c.read_secret("default", SECRET, KEY)

    # What the adapter never does is denied too: list, create (same ApiClient, same identity).
    core = k8s.CoreV1Api(c._api)
    with pytest.raises(AccessDenied, match=f"forbidden to list secrets {NS}"), \
            c._errors("list", f"secrets {NS}", 5) as t:
        core.list_namespaced_secret(NS, _request_timeout=t)
    body = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="new-one"), string_data={"a": "b"})
    with pytest.raises(AccessDenied, match="forbidden to create secrets"), \
            c._errors("create", f"secrets {NS}/new-one", 5) as t:
        core.create_namespaced_secret(NS, body, _request_timeout=t)
    with pytest.raises(AccessDenied), c._errors("delete", f"secrets {NS}/{SECRET}", 5) as t:
        core.delete_namespaced_secret(SECRET, NS, _request_timeout=t)


# --- workloads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", AUTHS)
@pytest.mark.parametrize(("kind", "name"), [(WorkloadKind.DEPLOYMENT, "gw"),
                                            (WorkloadKind.STATEFULSET, "gw-sts"),
                                            (WorkloadKind.DAEMONSET, "gw-ds")])
def test_restart_sets_restarted_at(kube_stack: KubeStack, clusters: KubernetesClusters, auth: str,
                                   kind: WorkloadKind, name: str) -> None:
    from kubernetes import client as k8s

    c = app_client(kube_stack, clusters, auth)
    at = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    c.restart(NS, Workload(kind, name), at, timeout=5)

    apps = k8s.AppsV1Api(admin(kube_stack, auth))
    read: Any = {WorkloadKind.DEPLOYMENT: apps.read_namespaced_deployment,
            WorkloadKind.STATEFULSET: apps.read_namespaced_stateful_set,
            WorkloadKind.DAEMONSET: apps.read_namespaced_daemon_set}[kind]
    obj = read(name, NS)
    assert obj.spec.template.metadata.annotations[RESTARTED_AT] == "2030-01-02T03:04:05Z"
    assert obj.metadata.generation >= 2


def test_restart_of_a_paused_deployment_is_reported_not_done(kube_stack: KubeStack,
                                                             clusters: KubernetesClusters) -> None:
    """One PATCH, no prior GET: the annotation is set (the pods roll on resume), the restart fails."""
    from kubernetes import client as k8s

    c = app_client(kube_stack, clusters, "aks")
    at = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    with pytest.raises(PermanentError, match=r"paused deployment gw/gw-paused does not roll: .*rollout resume"):
        c.restart(NS, Workload(WorkloadKind.DEPLOYMENT, "gw-paused"), at, timeout=5)
    obj: Any = k8s.AppsV1Api(admin(kube_stack, "aks")).read_namespaced_deployment("gw-paused", NS)
    assert obj.spec.paused is True
    assert obj.spec.template.metadata.annotations[RESTARTED_AT] == "2031-05-06T07:08:09Z"


def test_restart_of_unlisted_or_missing_workload(kube_stack: KubeStack, clusters: KubernetesClusters) -> None:
    # statefulset "gw" is not in the Role either -> the API answers 403 before it looks for it.
    c = app_client(kube_stack, clusters, "kubeconfig")
    with pytest.raises(AccessDenied, match="forbidden to patch statefulsets gw/gw"):
        c.restart(NS, Workload(WorkloadKind.STATEFULSET, "gw"), datetime.now(UTC))
    # allowed by the Role but absent: a real 404
    with pytest.raises(NotFound, match=f"cluster east: deployments {EMPTY_NS}/ghost not found"):
        c.restart(EMPTY_NS, Workload(WorkloadKind.DEPLOYMENT, "ghost"), datetime.now(UTC))
    with pytest.raises(NotFound, match=f"daemonsets {EMPTY_NS}/ghost not found"):
        c.restart(EMPTY_NS, Workload(WorkloadKind.DAEMONSET, "ghost"), datetime.now(UTC))
    with pytest.raises(NotFound, match=f"daemonsets {EMPTY_NS}/ghost not found"):
        c.rollout(EMPTY_NS, Workload(WorkloadKind.DAEMONSET, "ghost"))


def _set_status(kube_stack: KubeStack, auth: str, kind: WorkloadKind, name: str,
                status: dict[str, Any], observed_lag: int = 0) -> None:
    """What the controller-manager would write (there is none)."""
    from kubernetes import client as k8s

    apps = k8s.AppsV1Api(admin(kube_stack, auth))
    pair: Any = {
        WorkloadKind.DEPLOYMENT: (apps.read_namespaced_deployment, apps.patch_namespaced_deployment_status),
        WorkloadKind.STATEFULSET: (apps.read_namespaced_stateful_set,
                                   apps.patch_namespaced_stateful_set_status),
        WorkloadKind.DAEMONSET: (apps.read_namespaced_daemon_set, apps.patch_namespaced_daemon_set_status),
    }[kind]
    read, patch = pair
    generation = read(name, NS).metadata.generation
    patch(name, NS, {"status": {"observedGeneration": generation - observed_lag, **status}},
          _content_type="application/merge-patch+json")


@pytest.mark.parametrize("auth", AUTHS)
def test_rollout_state_of_a_deployment(kube_stack: KubeStack, clusters: KubernetesClusters,
                                       auth: str) -> None:
    c = app_client(kube_stack, clusters, auth)
    w = Workload(WorkloadKind.DEPLOYMENT, "gw")
    c.restart(NS, w, datetime.now(UTC), timeout=5)

    _set_status(kube_stack, auth, w.kind, w.name, {"replicas": 3}, observed_lag=1)
    state = c.rollout(NS, w, timeout=5)
    assert (state.ready, state.detail) == (False, "waiting for the new spec to be observed")

    _set_status(kube_stack, auth, w.kind, w.name,
                {"replicas": 3, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3})
    state = c.rollout(NS, w, timeout=5)
    assert (state.ready, state.detail) == (False, "2/3 updated")

    _set_status(kube_stack, auth, w.kind, w.name,
                {"replicas": 4, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3})
    assert c.rollout(NS, w).detail == "1 old replica pending termination"

    _set_status(kube_stack, auth, w.kind, w.name,
                {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 2})
    assert c.rollout(NS, w).detail == "2/3 available"

    _set_status(kube_stack, auth, w.kind, w.name,
                {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3})
    state = c.rollout(NS, w, timeout=5)
    assert state.ready
    assert state.workload == w
    assert state.detail == "rolled out (3/3 available)"


def test_rollout_state_of_statefulset_and_daemonset(kube_stack: KubeStack,
                                                    clusters: KubernetesClusters) -> None:
    c = app_client(kube_stack, clusters, "aks")
    sts = Workload(WorkloadKind.STATEFULSET, "gw-sts")
    _set_status(kube_stack, "aks", sts.kind, sts.name,
                {"replicas": 2, "updatedReplicas": 1, "readyReplicas": 2,
                 "currentRevision": "a", "updateRevision": "b"})
    assert (c.rollout(NS, sts).ready, c.rollout(NS, sts).detail) == (False, "1/2 updated")
    _set_status(kube_stack, "aks", sts.kind, sts.name,
                {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                 "currentRevision": "b", "updateRevision": "b"})
    assert c.rollout(NS, sts).ready

    ds = Workload(WorkloadKind.DAEMONSET, "gw-ds")
    counts = {"currentNumberScheduled": 4, "numberMisscheduled": 0, "desiredNumberScheduled": 4,
              "numberReady": 4}
    _set_status(kube_stack, "aks", ds.kind, ds.name,
                {**counts, "updatedNumberScheduled": 1, "numberAvailable": 4})
    assert (c.rollout(NS, ds).ready, c.rollout(NS, ds).detail) == (False, "1/4 updated")
    _set_status(kube_stack, "aks", ds.kind, ds.name,
                {**counts, "updatedNumberScheduled": 4, "numberAvailable": 4})
    assert c.rollout(NS, ds).ready


# --- connection, auth, TLS ----------------------------------------------------------------------


def test_aks_auth_asks_for_the_aks_scope_and_refreshes(kube_stack: KubeStack) -> None:
    short = StaticCredential(kube_stack.aks_token, lifetime=60)  # inside the refresh margin
    clusters = KubernetesClusters(short, lambda _: "")
    c = clusters.client(kube_stack.aks_cluster())
    c.read_secret(NS, SECRET, KEY)
    c.read_secret(NS, SECRET, KEY)
    assert short.scopes == [(AKS_SCOPE,), (AKS_SCOPE,)]  # refreshed before expiry: every call

    long = StaticCredential(kube_stack.aks_token, lifetime=3600)
    clusters = KubernetesClusters(long, lambda _: "")
    c = clusters.client(kube_stack.aks_cluster())
    for _ in range(3):
        c.read_secret(NS, SECRET, KEY)
    assert long.scopes == [(AKS_SCOPE,)]  # cached while valid


def test_rejected_token_is_access_denied(kube_stack: KubeStack) -> None:
    wrong = StaticCredential("not-a-valid-token-" + "x" * 20)
    leakcheck.register(wrong.token)
    c = KubernetesClusters(wrong, lambda _: "").client(kube_stack.aks_cluster())
    with pytest.raises(AccessDenied, match=f"cluster west: unauthorized to get secrets {NS}/{SECRET}") as e:
        c.read_secret(NS, SECRET, KEY)
    assert wrong.token not in str(e.value)


def test_failing_credential_is_upstream_error(kube_stack: KubeStack) -> None:
    class Broken:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise RuntimeError("identity endpoint said 503")

    c = KubernetesClusters(Broken(), lambda _: "").client(kube_stack.aks_cluster())
    with pytest.raises(UpstreamError, match="cluster west: could not get an Entra ID token"):
        c.read_secret(NS, SECRET, KEY)


def test_closed_port_is_upstream_error_quickly(kube_stack: KubeStack) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    c = kube_stack.clusters().client(kube_stack.aks_cluster(name="gone", server=f"https://127.0.0.1:{port}"))
    started = time.monotonic()
    with pytest.raises(UpstreamError,
                       match=r"cluster gone unreachable: get secrets gw/gw-token: .*Connection refused"):
        c.read_secret(NS, SECRET, KEY, timeout=5)
    assert time.monotonic() - started < 2


def test_silent_server_times_out_within_the_budget(kube_stack: KubeStack) -> None:
    with socket.socket() as listener:  # accepts TCP, never speaks TLS
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        c = kube_stack.clusters().client(
            kube_stack.aks_cluster(name="mute", server=f"https://127.0.0.1:{port}"))
        started = time.monotonic()
        with pytest.raises(UpstreamError, match=r"cluster mute unreachable: .*timed out"):
            c.read_secret(NS, SECRET, KEY, timeout=0.5)
        assert time.monotonic() - started < 3
    with pytest.raises(UpstreamError, match="no time left"):
        c.read_secret(NS, SECRET, KEY, timeout=0)


def test_untrusted_server_certificate_is_upstream_error(kube_stack: KubeStack) -> None:
    other_ca = trustme.CA().cert_pem.bytes()
    c = kube_stack.clusters().client(kube_stack.aks_cluster(name="spoofed", ca_pem=other_ca))
    with pytest.raises(UpstreamError, match=r"cluster spoofed unreachable: get secrets gw/gw-token: .*certificate verify failed"):
        c.read_secret(NS, SECRET, KEY, timeout=5)


def test_bad_ca_data_and_kubeconfig_are_permanent(kube_stack: KubeStack) -> None:
    clusters = KubernetesClusters(StaticCredential("t"), lambda name: ":\n  - [not yaml")
    with pytest.raises(PermanentError, match="kubeconfig secret 'kc' is not valid YAML"):
        clusters.client(Cluster("east", KubeconfigAuth("kc"))).read_secret(NS, SECRET, KEY, timeout=10)
    clusters = KubernetesClusters(StaticCredential("t"), lambda name: "apiVersion: v1\nkind: Config\n")
    with pytest.raises(PermanentError, match="kubeconfig secret 'kc': clusters is required"):
        clusters.client(Cluster("east", KubeconfigAuth("kc"))).read_secret(NS, SECRET, KEY, timeout=10)
    with pytest.raises(PermanentError, match="caData is not a base64 PEM"):
        clusters.client(kube_stack.aks_cluster(ca_pem=b"garbage"))


def test_clients_are_cached_and_built_once_under_concurrency(kube_stack: KubeStack) -> None:
    reads: list[str] = []

    def read_kubeconfig(name: str) -> str:
        reads.append(name)
        time.sleep(0.05)
        return kube_stack.kubeconfig_east

    clusters = KubernetesClusters(StaticCredential(kube_stack.aks_token), read_kubeconfig)
    got: list[KubernetesClusterClient] = []
    threads = [threading.Thread(target=lambda: got.append(clusters.client(kube_stack.kubeconfig_cluster())))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(g) for g in got}) == 1
    assert reads == []  # the kubeconfig is read by the first call, within its timeout
    # and the cached client serves parallel calls, reading the kubeconfig once
    results: list[str | None] = []
    workers = [threading.Thread(target=lambda: results.append(got[0].read_secret(NS, SECRET, KEY).value))
               for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(results) == 8
    assert all(r and r.startswith("GatewayKey ") for r in results)
    assert reads == ["kubeconfig-east"]
    clusters.close()


@pytest.mark.parametrize("auth", AUTHS)
def test_annotations_ride_with_the_key_and_can_be_removed(kube_stack: KubeStack, clusters: KubernetesClusters,
                                                          auth: str) -> None:
    c = app_client(kube_stack, clusters, auth)
    mark = "apim-token-rotator/test-mark"
    state = c.read_secret(NS, SECRET, KEY)
    new = token_value(f"annotated-{auth}")
    c.write_secret_key(NS, SECRET, KEY, new, state.resource_version, timeout=5, annotations={mark: "yes"})
    after = c.read_secret(NS, SECRET, KEY)
    assert after.value == new
    assert after.annotations[mark] == "yes"

    c.annotate_secret(NS, SECRET, {mark: None}, timeout=5)  # the data stays, the annotation goes
    final = c.read_secret(NS, SECRET, KEY)
    assert mark not in final.annotations
    assert final.value == new
    with pytest.raises(AccessDenied, match=f"forbidden to patch secrets {NS}/{OTHER_SECRET}"):
        c.annotate_secret(NS, OTHER_SECRET, {mark: "no"})

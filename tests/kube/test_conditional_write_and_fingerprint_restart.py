"""Two writes per target, no read: a Secret key written only if it still holds what the writer
expects, and a restart that records which token the workload was restarted for. Against real
kube-apiservers, as the app's least-privilege identity (the Role from infra/k8s/: get/patch on one
Secret and its workloads; a JSON Patch is verb `patch` like any other PATCH).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack import kube
from rotation.adapters.kubernetes import RESTARTED_AT, KubernetesClusterClient, KubernetesClusters
from rotation.core.errors import AccessDenied, Conflict, PermanentError
from rotation.core.model import TOKEN_FINGERPRINT_ANNOTATION, Workload, WorkloadKind
from rotation.core.token import fingerprint
from tests import leakcheck
from tests.kube.conftest import EMPTY_NS, KEY, NS, OTHER_SECRET, SECRET, KubeStack

pytestmark = pytest.mark.devstack

AUTHS = ("aks", "kubeconfig")


def token_value(tag: str) -> str:
    value = f"GatewayKey gw&203101010000&{base64.b64encode(tag.encode() * 8).decode()}"
    leakcheck.register(value)
    return value


@pytest.fixture(scope="module")
def clusters(kube_stack: KubeStack) -> Iterator[KubernetesClusters]:
    c = kube_stack.clusters()
    yield c
    c.close()


def app(kube_stack: KubeStack, clusters: KubernetesClusters, auth: str) -> KubernetesClusterClient:
    return clusters.client(kube_stack.aks_cluster() if auth == "aks" else kube_stack.kubeconfig_cluster())


def admin_core(kube_stack: KubeStack, auth: str) -> Any:
    from kubernetes import client as k8s

    return k8s.CoreV1Api(kube.api_client(kube_stack.west if auth == "aks" else kube_stack.east))


def stored(kube_stack: KubeStack, auth: str, namespace: str = NS) -> Any:
    return admin_core(kube_stack, auth).read_namespaced_secret(SECRET, namespace)


def decoded(secret: Any, key: str) -> str | None:
    raw = (secret.data or {}).get(key)
    return None if raw is None else base64.b64decode(raw).decode()


@pytest.mark.parametrize("auth", AUTHS)
def test_the_expected_value_is_replaced_in_one_patch(kube_stack: KubeStack, clusters: KubernetesClusters,
                                                     auth: str) -> None:
    """RFC 6902 `test` then `add` (application/json-patch+json), applied by the apiserver to the object
    it stores (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go, jsonPatcher.applyJSPatch):
    no read before, the new resourceVersion comes back, the Secret's other keys stay."""
    c = app(kube_stack, clusters, auth)
    current = decoded(stored(kube_stack, auth), KEY)
    assert current is not None
    new = token_value(f"cas-{auth}")
    version = c.write_secret_key_if(NS, SECRET, KEY, new, current, timeout=5)
    after = stored(kube_stack, auth)
    assert decoded(after, KEY) == new
    assert version == after.metadata.resource_version
    assert decoded(after, "unrelated") == "keep-me"
    # The next writer expects what this one wrote.
    newer = token_value(f"cas-2-{auth}")
    c.write_secret_key_if(NS, SECRET, KEY, newer, new, timeout=5)
    assert decoded(stored(kube_stack, auth), KEY) == newer


@pytest.mark.parametrize("auth", AUTHS)
def test_a_value_other_than_the_expected_one_is_a_conflict_and_stays(kube_stack: KubeStack,
                                                                     clusters: KubernetesClusters,
                                                                     auth: str) -> None:
    """A failed `test` operation: evanphx/json-patch returns ErrTestFailed ("testing value … failed"),
    which the apiserver's patch handler answers with 422 Unprocessable Entity
    (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go, applyJSPatch:
    `errors.NewGenericServerResponse(http.StatusUnprocessableEntity, …)`; kube-apiserver 1.20, run
    here, gives only reason `Invalid`, so the adapter reads once to tell it from a missing map).
    The adapter raises Conflict; nothing is written and neither value appears in the error."""
    c = app(kube_stack, clusters, auth)
    before = stored(kube_stack, auth)
    expected = token_value(f"stale-expectation-{auth}")
    new = token_value(f"never-written-{auth}")
    with pytest.raises(Conflict, match=f"conflict on patch secrets {NS}/{SECRET}: the key does not hold") as e:
        c.write_secret_key_if(NS, SECRET, KEY, new, expected, timeout=5)
    for secret in (expected, new):
        assert secret not in str(e.value) and base64.b64encode(secret.encode()).decode() not in str(e.value)
    after = stored(kube_stack, auth)
    assert decoded(after, KEY) == decoded(before, KEY)
    assert after.metadata.resource_version == before.metadata.resource_version


@pytest.mark.parametrize("auth", AUTHS)
def test_expecting_an_absent_key(kube_stack: KubeStack, clusters: KubernetesClusters, auth: str) -> None:
    """`test` with value null passes for a member that does not exist (evanphx/json-patch `test`: a
    missing key reads as nil, equal to a null value): "only if the key is absent" needs no read."""
    c = app(kube_stack, clusters, auth)
    key = f"absent-{auth}"
    first = token_value(f"absent-{auth}")
    c.write_secret_key_if(NS, SECRET, key, first, None, timeout=5)
    assert decoded(stored(kube_stack, auth), key) == first
    with pytest.raises(Conflict):
        c.write_secret_key_if(NS, SECRET, key, token_value(f"absent-again-{auth}"), None, timeout=5)
    assert decoded(stored(kube_stack, auth), key) == first


@pytest.mark.parametrize("auth", AUTHS)
def test_annotations_ride_with_the_conditional_write(kube_stack: KubeStack, clusters: KubernetesClusters,
                                                     auth: str) -> None:
    c = app(kube_stack, clusters, auth)
    mark = "apim-token-rotator/test-conditional"
    current = decoded(stored(kube_stack, auth), KEY)
    new = token_value(f"annotated-cas-{auth}")
    c.write_secret_key_if(NS, SECRET, KEY, new, current, timeout=5, annotations={mark: "set"})
    assert (stored(kube_stack, auth).metadata.annotations or {})[mark] == "set"
    newer = token_value(f"annotated-cas-2-{auth}")
    c.write_secret_key_if(NS, SECRET, KEY, newer, new, timeout=5, annotations={mark: None, f"{mark}-absent": None})
    after = stored(kube_stack, auth)
    assert mark not in (after.metadata.annotations or {})
    assert decoded(after, KEY) == newer


def test_a_secret_without_data_or_annotations_is_written_after_one_read(kube_stack: KubeStack,
                                                                        clusters: KubernetesClusters) -> None:
    """`add` needs the parent map (RFC 6902 4.1; evanphx: "doc is missing path"): for a Secret with no
    `data` or no annotations the adapter reads once and writes the maps whole, still conditionally."""
    core = admin_core(kube_stack, "aks")
    core.create_namespaced_secret(EMPTY_NS, {"metadata": {"name": SECRET}, "type": "Opaque"})
    try:
        c = app(kube_stack, clusters, "aks")
        value = token_value("into-an-empty-secret")
        version = c.write_secret_key_if(EMPTY_NS, SECRET, KEY, value, None, timeout=5,
                                        annotations={"apim-token-rotator/test": "first"})
        after = stored(kube_stack, "aks", EMPTY_NS)
        assert decoded(after, KEY) == value and after.metadata.resource_version == version
        assert after.metadata.annotations == {"apim-token-rotator/test": "first"}
        with pytest.raises(Conflict):  # the key is there now
            c.write_secret_key_if(EMPTY_NS, SECRET, KEY, token_value("second"), None, timeout=5)
    finally:
        core.delete_namespaced_secret(SECRET, EMPTY_NS)


@pytest.mark.parametrize("auth", AUTHS)
def test_the_role_allows_the_json_patch_on_its_secret_only(kube_stack: KubeStack, clusters: KubernetesClusters,
                                                          auth: str) -> None:
    """RBAC authorizes every PATCH, whatever its content type, as verb `patch`
    (staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go maps the PATCH method to
    `patch`): infra/k8s/role.yaml's `patch` on the one Secret is enough, and no more."""
    c = app(kube_stack, clusters, auth)
    with pytest.raises(AccessDenied, match=f"forbidden to patch secrets {NS}/{OTHER_SECRET}"):
        c.write_secret_key_if(NS, OTHER_SECRET, KEY, token_value(f"other-{auth}"), "not-yours", timeout=5)


@pytest.mark.parametrize("auth", AUTHS)
@pytest.mark.parametrize(("kind", "name"), [(WorkloadKind.DEPLOYMENT, "gw"),
                                            (WorkloadKind.STATEFULSET, "gw-sts"),
                                            (WorkloadKind.DAEMONSET, "gw-ds")])
def test_one_patch_restarts_and_records_the_token_fingerprint(kube_stack: KubeStack, clusters: KubernetesClusters,
                                                              auth: str, kind: WorkloadKind, name: str) -> None:
    """Both pod-template annotations in one strategic-merge PATCH; any pod-template change rolls the
    pods (as `kubectl rollout restart`'s restartedAt does), and `rollout` reads the fingerprint back."""
    c = app(kube_stack, clusters, auth)
    token = token_value(f"restart-{auth}-{name}")
    mark = fingerprint(token)
    workload = Workload(kind, name)
    before = c.rollout(NS, workload, timeout=5)
    c.restart(NS, workload, datetime(2032, 3, 4, 5, 6, 7, tzinfo=UTC), timeout=5, fingerprint=mark)
    state = c.rollout(NS, workload, timeout=5)
    assert state.token_fingerprint == mark != before.token_fingerprint
    assert state.restarted_at == datetime(2032, 3, 4, 5, 6, 7, tzinfo=UTC)

    from kubernetes import client as k8s

    apps = k8s.AppsV1Api(kube.api_client(kube_stack.west if auth == "aks" else kube_stack.east))
    read: Any = {WorkloadKind.DEPLOYMENT: apps.read_namespaced_deployment,
                 WorkloadKind.STATEFULSET: apps.read_namespaced_stateful_set,
                 WorkloadKind.DAEMONSET: apps.read_namespaced_daemon_set}[kind]
    annotations = read(name, NS).spec.template.metadata.annotations
    assert annotations[TOKEN_FINGERPRINT_ANNOTATION] == mark
    assert annotations[RESTARTED_AT] == "2032-03-04T05:06:07Z"
    assert token not in str(annotations)


def test_a_restart_never_writes_anything_but_a_fingerprint(kube_stack: KubeStack,
                                                           clusters: KubernetesClusters) -> None:
    """The pod template is readable by anyone who can read the workload: a token (or anything that is
    not 12 hex digits) is refused before any request."""
    c = app(kube_stack, clusters, "aks")
    token = token_value("not-for-a-pod-template")
    with pytest.raises(PermanentError, match="not a 12-hex-digit token fingerprint") as e:
        c.restart(NS, Workload(WorkloadKind.DEPLOYMENT, "gw"), datetime.now(UTC), timeout=5, fingerprint=token)
    assert token not in str(e.value)
    assert c.rollout(NS, Workload(WorkloadKind.DEPLOYMENT, "gw"), timeout=5).token_fingerprint != token

"""devstack/kube.py itself: the RBAC it renders, the kubeconfigs it writes, the processes it records."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import kube
from tests.kube.conftest import NS, KubeStack

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_adapter_does_not_import_kubernetes() -> None:
    code = ("import sys, rotation.adapters.kubernetes as a; "
            "assert 'kubernetes' not in sys.modules, 'kubernetes imported eagerly'; "
            "assert 'azure.core' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_render_rbac_is_what_envsubst_renders() -> None:
    envsubst = shutil.which("envsubst")
    if envsubst is None:
        pytest.skip("envsubst (gettext-base) is not installed")
    workloads = ["deployment/gw", "deployment/gw-2", "daemonset/agent"]
    variables = kube.rbac_variables("apim", "gw-token", workloads, "0b7c4a52-0000-0000-0000-000000000000")
    for auth in ("aks", "kubeconfig"):
        text = "".join(
            subprocess.run([envsubst], input=(kube.K8S_MANIFESTS / f).read_text(), text=True, check=True,
                           capture_output=True, env={**os.environ, **variables}).stdout + "\n---\n"
            for f in ("role.yaml", f"rolebinding-{auth}.yaml"))
        from_shell = [d for d in yaml.safe_load_all(text) if d]
        assert from_shell == kube.render_rbac("apim", "gw-token", workloads,
                                              "0b7c4a52-0000-0000-0000-000000000000", auth)


def test_rendered_role_grants_only_get_and_patch_on_named_objects() -> None:
    role, binding = kube.render_rbac("apim", "gw-token", ["statefulset/gw"], "apim-token-rotator", "kubeconfig")
    assert role["kind"] == "Role"
    assert role["metadata"]["namespace"] == "apim"
    for rule in role["rules"]:
        assert rule["verbs"] == ["get", "patch"]
        assert rule["resourceNames"], "an empty resourceNames list would grant every object"
    names = {r["resources"][0]: r["resourceNames"] for r in role["rules"]}
    assert names == {"secrets": ["gw-token"], "deployments": [""], "statefulsets": ["", "gw"],
                     "daemonsets": [""]}
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                    "name": "apim-token-rotator"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    with pytest.raises(ValueError, match="workload must be"):
        kube.render_rbac("apim", "gw-token", ["cronjob/x"], "p", "aks")


@pytest.mark.devstack
def test_written_kubeconfig_has_an_admin_context_per_cluster(kube_stack: KubeStack, tmp_path: Path) -> None:
    from kubernetes import client, config

    path = kube.write_kubeconfig(tmp_path / "kubeconfig", [kube_stack.west, kube_stack.east])
    assert path.stat().st_mode & 0o077 == 0
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    assert [c["name"] for c in doc["contexts"]] == ["west", "east"]
    for name in ("west", "east"):
        new_client: Any = config.new_client_from_config
        api = new_client(str(path), context=name)
        try:
            names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items if n.metadata]
            assert NS in names
        finally:
            api.close()


@pytest.mark.devstack
def test_clusters_are_isolated(kube_stack: KubeStack) -> None:
    from kubernetes import client

    kube.apply(kube_stack.west, [{"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": "only-west", "namespace": NS}, "data": {"a": "1"}}])
    west = kube.api_client(kube_stack.west)
    east = kube.api_client(kube_stack.east)
    crossed = kube.api_client(kube_stack.east, token=kube_stack.west.admin_token)
    try:
        assert client.CoreV1Api(west).read_namespaced_config_map("only-west", NS).data == {"a": "1"}
        with pytest.raises(client.ApiException) as e:
            client.CoreV1Api(east).read_namespaced_config_map("only-west", NS)
        assert e.value.status == 404
        # each cluster has its own admin token
        with pytest.raises(client.ApiException) as e:
            client.CoreV1Api(crossed).list_namespace()
        assert e.value.status == 401
    finally:
        for api in (west, east, crossed):
            api.close()


def test_stop_without_processes_is_a_no_op(tmp_path: Path) -> None:
    assert kube.stop(tmp_path) == []
    (tmp_path / "pids").mkdir()
    (tmp_path / "pids" / "etcd.pid").write_text("999999999\n")  # not a live etcd
    assert kube.stop(tmp_path) == []
    assert not (tmp_path / "pids" / "etcd.pid").exists()


@pytest.mark.devstack
def test_processes_are_recorded_and_a_second_start_is_refused(kube_stack: KubeStack) -> None:
    assert kube.running_processes(kube_stack.dir) == ["apiserver-east", "apiserver-west", "etcd"]
    tls = kube.ServingTLS(kube_stack.west.ca_pem, kube_stack.west.ca_pem, kube_stack.west.ca_pem)
    with pytest.raises(kube.KubeStackError, match="already runs"):
        kube.start_clusters(kube_stack.dir, ["west"], tls, {})
    pids = sorted(p.stem for p in (kube_stack.dir / "pids").glob("*.pid"))
    assert pids == ["apiserver-east", "apiserver-west", "etcd"]
    for name, binary in (("etcd", "etcd"), ("apiserver-west", "kube-apiserver")):
        pid = int((kube_stack.dir / "pids" / f"{name}.pid").read_text())
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        assert Path(argv0.decode()).name == binary

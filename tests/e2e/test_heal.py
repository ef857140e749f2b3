"""Events heal running gateways, end to end: an event for a gateway whose Key Vault token and Secrets are
current restarts the workloads whose pods started before the token was stored (kube-apiserver's
restartedAt against Key Vault's `created`), once, however many instances send events."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.e2e.conftest import World
from tests.e2e.test_event_flow import near_expiry
from tests.functions.conftest import deliver

OLD = "2026-01-01T00:00:00Z"


def set_restarted_at(world: World, cluster: str, namespace: str, name: str, value: str) -> None:
    body: dict[str, Any] = {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": value}}}}}
    client.AppsV1Api(world.stack.admin(cluster)).patch_namespaced_deployment(name, namespace, body)


def test_an_event_for_a_current_gateway_restarts_only_stale_workloads_once(world: World) -> None:
    deliver(near_expiry("gw-east", instance="gw-east-pod-1"))  # rotates and restarts
    first = world.restarted_at("east", "apim", "deployment/gw-east")
    assert first is not None and first != OLD
    deliver(near_expiry("gw-east", instance="gw-east-pod-2"))  # duplicate: restarted after the token
    assert world.restarted_at("east", "apim", "deployment/gw-east") == first

    set_restarted_at(world, "east", "apim", "gw-east", OLD)  # pods that predate the token
    versions = world.vault()["apim-apim-devstack-gw-east-token"]["versions"]
    deliver(near_expiry("gw-east", instance="gw-east-pod-3"))
    healed = world.restarted_at("east", "apim", "deployment/gw-east")
    assert healed is not None and healed != OLD
    assert world.vault()["apim-apim-devstack-gw-east-token"]["versions"] == versions  # nothing rewritten
    assert len(world.calls("arm", "generateToken")) == 1
    deliver(near_expiry("gw-east", instance="gw-east-pod-4"))  # the next instance: no second restart
    assert world.restarted_at("east", "apim", "deployment/gw-east") == healed

"""Events heal running gateways, end to end: an event for a gateway whose Key Vault token and Secrets are
current restarts the workloads whose pods started before the token was stored (kube-apiserver's
restartedAt against Key Vault's `created`), once, however many instances send events."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.conftest import World
from tests.e2e.test_event_flow import near_expiry
from tests.e2e.test_keyroll_race import Race, leases, race  # noqa: F401 - fixtures: Azurite leases for every process
from tests.functions.conftest import deliver

REPO = Path(__file__).resolve().parents[2]
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


# Several function instances: separate processes with their own Rotator, sharing the kube-apiservers,
# Key Vault and the Azurite lease container.
INSTANCE = (
    "import sys\n"
    "from tests.e2e.test_event_flow import near_expiry\n"
    "from tests.functions.conftest import deliver\n"
    "for i in range(3):\n"
    "    deliver(near_expiry('gw-east', instance=f'gw-east-pod-{sys.argv[1]}-{i}'))\n"
)


def test_events_on_several_instances_restart_a_stale_workload_once(race: Race) -> None:  # noqa: F811
    """12 per-instance events over 4 processes at once: the heal's rate limit is the workload's own
    restartedAt (read under the gateway's blob lease), not process memory, so the Deployment's pod
    template changes once (metadata.generation +1), and nothing else is written."""
    world = race.world
    deliver(near_expiry("gw-east", instance="gw-east-pod-0"))  # current everywhere
    set_restarted_at(world, "east", "apim", "gw-east", OLD)  # its pods predate the token
    before = world.workload("east", "apim", "deployment/gw-east").metadata.generation
    versions = world.vault()["apim-apim-devstack-gw-east-token"]["versions"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", INSTANCE, str(n)], env=env, cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
    after = world.workload("east", "apim", "deployment/gw-east")
    assert after.metadata.generation == before + 1
    assert world.restarted_at("east", "apim", "deployment/gw-east") != OLD
    assert world.vault()["apim-apim-devstack-gw-east-token"]["versions"] == versions

"""Events heal running gateways, end to end: an event for a gateway whose Key Vault token and Secrets are
current restarts the workloads not restarted for that token (the token fingerprint the rotator records
on the pod template with each restart, compared with the Secret's token: no clock), once, however
many instances send events. Changing the pod template is what rolls the pods ("A Deployment's rollout
is triggered if and only if the Deployment's Pod template (.spec.template) is changed",
kubernetes.io/docs/concepts/workloads/controllers/deployment/), as `kubectl rollout restart` does
with its restartedAt annotation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kubernetes import client

from rotation.core.model import TOKEN_FINGERPRINT_ANNOTATION
from rotation.core.token import fingerprint as fingerprint_of
from tests.e2e.conftest import World
from tests.e2e.test_event_flow import near_expiry
from tests.e2e.test_keyroll_race import Race, leases, race  # noqa: F401 - fixtures: Azurite leases for every process
from tests.functions.conftest import deliver

REPO = Path(__file__).resolve().parents[2]
OLD = "0123456789ab"  # the fingerprint of some earlier token


def set_token_fingerprint(world: World, cluster: str, namespace: str, name: str, value: str | None) -> None:
    """What the pod template says its pods were restarted for (None: never restarted by the rotator)."""
    body: dict[str, Any] = {"spec": {"template": {"metadata": {"annotations": {
        TOKEN_FINGERPRINT_ANNOTATION: value}}}}}
    client.AppsV1Api(world.stack.admin(cluster)).patch_namespaced_deployment(name, namespace, body)
    world.wait_rolled_out(cluster, namespace, f"deployment/{name}")


def test_an_event_for_a_current_gateway_restarts_only_stale_workloads_once(world: World) -> None:
    deliver(near_expiry("gw-east", instance="gw-east-pod-1"))  # rotates and restarts
    token = world.vault()["apim-apim-devstack-gw-east-token"]
    stored = world.value("east", "apim", "gw-east-token")
    first = world.restarted_at("east", "apim", "deployment/gw-east")
    fingerprint = world.token_fingerprint("east", "apim", "deployment/gw-east")
    assert first is not None and fingerprint is not None and fingerprint != OLD
    assert stored.endswith(token["value"]) and fingerprint == fingerprint_of(token["value"])
    world.wait_rolled_out("east", "apim", "deployment/gw-east")
    deliver(near_expiry("gw-east", instance="gw-east-pod-2"))  # duplicate: restarted for the token
    assert world.restarted_at("east", "apim", "deployment/gw-east") == first

    for stale in (OLD, None):  # restarted for an earlier token; never restarted by the rotator
        set_token_fingerprint(world, "east", "apim", "gw-east", stale)
        versions = world.vault()["apim-apim-devstack-gw-east-token"]["versions"]
        before = world.restarted_at("east", "apim", "deployment/gw-east")
        deliver(near_expiry("gw-east", instance="gw-east-pod-3"))
        healed = world.restarted_at("east", "apim", "deployment/gw-east")
        assert healed is not None and healed != before
        assert world.token_fingerprint("east", "apim", "deployment/gw-east") == fingerprint
        assert world.vault()["apim-apim-devstack-gw-east-token"]["versions"] == versions  # nothing rewritten
        assert len(world.calls("arm", "generateToken")) == 1
        world.wait_rolled_out("east", "apim", "deployment/gw-east")
        deliver(near_expiry("gw-east", instance="gw-east-pod-4"))  # the next instance: no second restart
        assert world.restarted_at("east", "apim", "deployment/gw-east") == healed


# Several function instances: separate processes with their own Rotator, sharing the kube-apiservers,
# Key Vault and the Azurite lease container.
# An event failing while the restarted pods roll out is redelivered, as Event Grid does.
INSTANCE = (
    "import sys, time\n"
    "from rotation.core.errors import TransientError\n"
    "from tests.e2e.test_event_flow import near_expiry\n"
    "from tests.functions.conftest import deliver\n"
    "for i in range(3):\n"
    "    for attempt in range(40):\n"
    "        try:\n"
    "            deliver(near_expiry('gw-east', instance=f'gw-east-pod-{sys.argv[1]}-{i}'))\n"
    "            break\n"
    "        except TransientError:\n"
    "            time.sleep(0.25)\n"
    "    else:\n"
    "        sys.exit('never acknowledged')\n"
)


def test_events_on_several_instances_restart_a_stale_workload_once(race: Race) -> None:  # noqa: F811
    """12 per-instance events over 4 processes at once: what stops a second restart is the workload's own
    token fingerprint (read under the gateway's blob lease), not process memory, so the Deployment's
    pod template changes once (metadata.generation +1), and nothing else is written."""
    world = race.world
    deliver(near_expiry("gw-east", instance="gw-east-pod-0"))  # current everywhere
    set_token_fingerprint(world, "east", "apim", "gw-east", OLD)  # its pods run an earlier token
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
    assert world.token_fingerprint("east", "apim", "deployment/gw-east") == fingerprint_of(
        world.vault()["apim-apim-devstack-gw-east-token"]["value"])
    assert world.vault()["apim-apim-devstack-gw-east-token"]["versions"] == versions

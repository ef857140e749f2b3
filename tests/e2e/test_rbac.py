"""The app's Kubernetes identities (AKS-style bearer from the identity endpoint; kubeconfig user from
Key Vault) can do exactly what rotation needs, as bound by the Role and RoleBindings in infra/k8s/."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rotation import bootstrap
from rotation.core.errors import AccessDenied
from rotation.core.model import Workload, WorkloadKind
from tests.e2e.conftest import World


def clients() -> tuple[object, object]:
    rotator = bootstrap.container().rotator
    return (rotator.clusters.client(rotator.registry.clusters["east"]),
            rotator.clusters.client(rotator.registry.clusters["west"]))


def test_app_reads_and_patches_its_own_targets(world: World) -> None:
    east, west = clients()
    state = east.read_secret("apim", "gw-east-token", "config.service.auth.key")  # type: ignore[attr-defined]
    assert state.value == f"GatewayKey {world.seeded['gw-east']}"
    west.restart("gateways", Workload(WorkloadKind.DAEMONSET, "gw-west"), datetime.now(UTC))  # type: ignore[attr-defined]
    assert world.restarted_at("west", "gateways", "daemonset/gw-west") is not None


@pytest.mark.parametrize(
    ("cluster", "namespace", "secret"),
    [
        ("east", "apim", "unrelated-secret"),        # same namespace, not listed in resourceNames
        ("east", "gateways", "gw-shared-token"),     # a target name in a namespace the Role does not cover
        ("west", "apim", "gw-east-token"),           # right name, wrong cluster
        ("east", "kube-system", "anything"),
    ],
)
def test_app_is_denied_everything_else(world: World, cluster: str, namespace: str, secret: str) -> None:
    east, west = clients()
    client = east if cluster == "east" else west
    with pytest.raises(AccessDenied, match=rf"cluster {cluster}: forbidden"):
        client.read_secret(namespace, secret, "x")  # type: ignore[attr-defined]


def test_app_cannot_restart_unlisted_workloads(world: World) -> None:
    east, _ = clients()
    with pytest.raises(AccessDenied):
        east.restart("apim", Workload(WorkloadKind.DEPLOYMENT, "gw-west"), datetime.now(UTC))  # type: ignore[attr-defined]

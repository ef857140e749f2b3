"""Phase 2 of a key roll regenerates key k only when no registered workload can still be running on k.

Regenerating a key invalidates every token it signed ("Regenerates specified gateway key invalidating
any tokens created with it": "Gateway - Regenerate Key", learn.microsoft.com/rest/api/apimanagement/
current-ga/gateway/regenerate-key). A registered workload
whose pod template reads another key of the Secret, or another Secret (Kubernetes: `env[].valueFrom.
secretKeyRef`, `envFrom`, `secret` volumes — kubernetes.io/docs/concepts/configuration/secret/#using-
secrets), keeps the old token however well the registered key is rotated: `status` already calls that
`mismatch`. So phase 2 never regenerates k while such a workload reads a value signed by k, and while
the consumption check is `mismatch` or `unchecked` it regenerates only on the operator's
`confirm_restarted`. Review case 5 (the roll ignores consumption).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from rotation.core.consumption import SecretUse, UseKind
from rotation.core.model import GatewayConfig, KeyType, RolloutState, Workload
from rotation.core.status import KeyRollPhase, KeyRollReport
from rotation.core.token import GatewayToken
from tests.service.conftest import World
from tests.service.product import assert_no_token, signed_by

DAY = timedelta(days=1)
REGISTERED_KEY = "config.service.auth.key"


def east_only(world: World) -> GatewayConfig:
    """gw-1 with just its east target (a `restart` list: nothing else keeps the roll pending)."""
    return replace(world.gw1, targets=world.gw1.targets[:1])


def reads(world: World, *uses: SecretUse) -> None:
    """The registered workload's pod template reads exactly `uses` (what `rollout` reports)."""
    real = world.east.rollout

    def rollout(namespace: str, workload: Workload, timeout: float | None = None) -> RolloutState:
        return replace(real(namespace, workload, timeout), uses=uses)

    world.east.rollout = rollout  # type: ignore[method-assign]


def assert_not_regenerated(world: World, config: GatewayConfig, report: KeyRollReport, leaked: GatewayToken) -> None:
    assert report.phase is KeyRollPhase.PENDING and not report.regenerated
    assert "regenerateKey" not in [op for op, _ in world.issuer.calls] and world.issuer.regenerated == []
    assert signed_by(world, config, leaked) is KeyType.PRIMARY  # the pods' token still works
    assert any("deployment/gw1" in p for p in report.pending), report.pending


@pytest.mark.parametrize("confirm_restarted", [False, True])
def test_no_regeneration_while_the_workload_reads_another_key_holding_a_token_of_that_key(
        world: World, confirm_restarted: bool) -> None:
    """Case 5: the Deployment reads key `legacy` of the same Secret, which holds the primary token; the
    roll writes the registered key only. Even the operator's confirmation cannot make that safe: the
    rotator itself can see the value signed by the key it would regenerate."""
    config = east_only(world)
    leaked = world.seed_token(config, 20 * DAY, key=KeyType.PRIMARY)
    world.east.secrets[("apim", "gw1-token")].data["legacy"] = leaked.formatted()
    reads(world, SecretUse("gateway", UseKind.ENV, "gw1-token", "legacy"))
    report = world.rotator.roll_keys(config, from_key=KeyType.PRIMARY, confirm_restarted=confirm_restarted,
                                     deadline_seconds=5, rollout_wait_seconds=0)
    assert_not_regenerated(world, config, report, leaked)
    assert_no_token(report, leaked.value)


def test_no_regeneration_while_the_workload_reads_another_secret(world: World) -> None:
    """Case 5, another Secret: the Deployment mounts `gw1-legacy` (holding the primary token), not the
    registered Secret; the consumption check says `mismatch`."""
    config = east_only(world)
    leaked = world.seed_token(config, 20 * DAY, key=KeyType.PRIMARY)
    world.east.seed("apim", "gw1-legacy", {"token": leaked.formatted()})
    reads(world, SecretUse("gateway", UseKind.VOLUME, "gw1-legacy", None))
    report = world.rotator.roll_keys(config, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=0)
    assert_not_regenerated(world, config, report, leaked)


def test_an_unchecked_consumption_needs_the_operators_confirmation(world: World) -> None:
    """Case 5, `unchecked`: the workload's spec could not be read (here: `rollout` reports no uses). Phase
    2 waits for `confirm_restarted`, then completes."""
    config = east_only(world)
    leaked = world.seed_token(config, 20 * DAY, key=KeyType.PRIMARY)
    # Nobody told the in-memory cluster what the workload reads: `rollout` reports `uses` None, as when
    # the workload's spec could not be read.
    world.east.reads.clear()
    report = world.rotator.roll_keys(config, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=0)
    assert_not_regenerated(world, config, report, leaked)
    assert any("confirm" in p for p in report.pending), report.pending

    confirmed = world.rotator.roll_keys(config, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                        deadline_seconds=5, rollout_wait_seconds=0)
    assert confirmed.phase is KeyRollPhase.COMPLETED and world.issuer.regenerated == [KeyType.PRIMARY]

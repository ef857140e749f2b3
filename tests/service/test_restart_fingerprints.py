"""Restart decisions compare token fingerprints, never two machines' clocks; `newer` is no excuse.

`kubectl rollout restart` sets the pod template annotation `kubectl.kubernetes.io/restartedAt` to the
restarting client's wall clock (kubernetes/kubernetes staging/src/k8s.io/kubectl/pkg/polymorphichelpers/
objectrestarter.go, defaultObjectRestarter: `time.Now().Format(time.RFC3339)`), while Key Vault's `created` is Key Vault's
clock (learn.microsoft.com/rest/api/keyvault/secrets/get-secret: SecretAttributes.created). Comparing
the two fails whenever the writer's clock is off. Recording on the pod template the fingerprint of the
token a workload was restarted for (the annotation change rolls the pods, as restartedAt does) makes
"restarted for this token" a comparison of two values the product wrote itself.

Review cases 8 (a `newer` target skips restart and heal; a roll whose own later token sits in a
target stays pending), 9 (two clocks; an Expired event whose instance is not current) and 10
(promotion writes and restarts a workload twice in one reconcile).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from rotation import bootstrap
from rotation.core.errors import RotationError
from rotation.core.model import GatewayConfig, KeyType, Outcome, RolloutState, TokenRecord, Workload
from rotation.core.registry import load_registry
from rotation.core.status import KeyRollPhase
from rotation.core.token import GatewayToken, parse_stored
from rotation.settings import Settings
from tests.functions.conftest import deliver
from tests.functions.test_event_handler import expired_cloudevent
from tests.samples import gateway, registry, target
from tests.service.conftest import World
from tests.service.product import Heal, fingerprints, instance, signed_by

DAY = timedelta(days=1)
EAST = ("apim", "deployment/gw1")


def east_only(world: World) -> GatewayConfig:
    """gw-1 with just its east target, whose `restart` list names deployment/gw1."""
    return replace(world.gw1, targets=world.gw1.targets[:1])


def restarts(world: World) -> int:
    return len(world.east.restarts.get(EAST, []))


def version(world: World, config: GatewayConfig, expires_in: timedelta, key: KeyType = KeyType.PRIMARY,
            roll_from: KeyType | None = None) -> GatewayToken:
    """One more Key Vault version of the gateway's token, written by the product (a racing writer)."""
    token = GatewayToken.parse(world.issuer.generate_token(config.ref, key, (world.now + expires_in).replace(second=0)))
    world.store.put(config.key_vault_secret, TokenRecord(token, key, config.ref.id, roll_from=roll_from))
    return token


# --- case 8: `newer` targets ------------------------------------------------------------------------


def test_an_event_restarts_the_workload_of_a_target_holding_a_later_verified_token(world: World) -> None:
    """Case 8: racing writers left a 25-day version (one of Key Vault's) in the target and a 20-day one
    as the latest; the workload last restarted a day before either. An event from an instance running
    an old token must restart it, once."""
    config = east_only(world)
    world.east.restarts[EAST] = [world.now - DAY]
    later = world.seed_token(config, 25 * DAY)
    world.seed_token(config, 20 * DAY, everywhere=False)
    world.now += timedelta(hours=1)
    report = world.rotator.reconcile(config, reason="event", deadline_seconds=5,
                                     heal=Heal(instance="gw1-old", instance_expires_at=world.now))
    assert report.ok and restarts(world) == 2, report.targets
    assert fingerprints(world.held(config)) == [later.fingerprint]


def test_a_rolls_own_later_token_in_a_target_is_promoted_and_the_roll_completes(world: World) -> None:
    """Case 8: two writers of the same roll (primary -> secondary) stored a 29.5-day and then a 29-day
    secondary token; a target holds the later one. It is this roll's token (signed by the surviving key,
    one of Key Vault's versions): promoting it lets the roll finish instead of waiting for ever."""
    leaked = world.seed_token(world.gw1, 20 * DAY, key=KeyType.PRIMARY)
    later = version(world, world.gw1, timedelta(days=29, hours=12), KeyType.SECONDARY, roll_from=KeyType.PRIMARY)
    latest = version(world, world.gw1, 29 * DAY, KeyType.SECONDARY, roll_from=KeyType.PRIMARY)
    east, west = world.gw1.targets
    world.east.secrets[(east.namespace, east.secret)].data[east.key] = later.formatted(east.format)
    world.west.secrets[(west.namespace, west.secret)].data[west.key] = latest.formatted(west.format)
    report = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, rollout_wait_seconds=0)
    assert report.phase is KeyRollPhase.COMPLETED and report.regenerated, report.pending
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and stored.roll_from is None and signed_by(world, world.gw1, stored.token) is KeyType.SECONDARY
    assert [parse_stored(v) for v in world.held(world.gw1)] == [stored.token, stored.token]
    assert signed_by(world, world.gw1, leaked) is None


# --- case 9: one clock ----------------------------------------------------------------------------


def test_an_event_after_a_rotation_by_a_writer_three_minutes_behind_succeeds_without_restarting(
        world: World) -> None:
    """Case 9: instance B (clock 3 minutes behind) renewed the token and restarted the workload for it;
    two minutes later an event from a pod of the old rollout arrives at A. The workload was restarted
    for the current token: nothing to do, the event succeeds."""
    config = east_only(world)
    world.seed_token(config, 3 * DAY)
    behind = instance(world, clock=lambda: world.now - timedelta(minutes=3))
    renewed = behind.reconcile(config, reason="sweep", deadline_seconds=5)
    assert renewed.rotated and restarts(world) == 1
    world.now += timedelta(minutes=2)
    report = world.rotator.reconcile(config, reason="event", deadline_seconds=5,
                                     heal=Heal(instance="gw1-old", instance_expires_at=world.now + 3 * DAY))
    assert report.ok, report.targets
    assert restarts(world) == 1


def test_a_roll_by_a_writer_three_minutes_behind_completes_with_one_restart(world: World) -> None:
    """Case 9: the roll restarts each workload once for its token and then regenerates; it does not
    stay pending (and restart again on every run) because its clock disagrees with Key Vault's."""
    config = east_only(world)
    leaked = world.seed_token(config, 20 * DAY, key=KeyType.PRIMARY)
    behind = instance(world, clock=lambda: world.now - timedelta(minutes=3))
    report = behind.roll_keys(config, from_key=KeyType.PRIMARY, confirm_restarted=True, deadline_seconds=5,
                              rollout_wait_seconds=0)
    assert report.phase is KeyRollPhase.COMPLETED, report.pending
    assert restarts(world) == 1 and signed_by(world, config, leaked) is None


@pytest.fixture
def east_app() -> Iterator[tuple[World, GatewayConfig]]:
    """The indexed functions over a registry whose one gw-1 target has workloads to restart."""
    world = World()
    only = load_registry(registry(gateway("gw-1", target("east", "gw1-token", restart=["deployment/gw1"]))))
    rotator = instance(world, registry=only)
    with bootstrap.using(rotator, Settings(registry=only, key_vault_url="https://kv.example", deadline_seconds=5)):
        yield world, only.gateways[0]


def test_an_expired_event_whose_instance_is_not_current_is_redelivered(east_app: tuple[World, GatewayConfig]) -> None:
    """Case 9: the event's instance runs a token that has expired; the workload was restarted for the
    current one but its rollout has not finished, so that instance is still serving and cut off. The
    handler must fail (Event Grid redelivers, then dead-letters: learn.microsoft.com/azure/event-grid/
    delivery-and-retry) instead of acknowledging."""
    world, config = east_app
    world.seed_token(config, 3 * DAY)
    first = bootstrap.container().rotator.reconcile(config, reason="sweep", deadline_seconds=5)
    assert first.rotated and restarts(world) == 1
    real = world.east.rollout

    def rolling(namespace: str, workload: Workload, timeout: float | None = None) -> RolloutState:
        return replace(real(namespace, workload, timeout), ready=False, detail="0/1 updated")

    world.east.rollout = rolling  # type: ignore[method-assign]
    world.now += timedelta(minutes=1)
    with pytest.raises(RotationError):
        deliver(expired_cloudevent())


# --- case 10: promotion once per reconcile ------------------------------------------------------


def test_promotion_writes_and_restarts_each_workload_once_per_reconcile(world: World) -> None:
    """Case 10: east holds an old token, west a later-expiring Key Vault version than the latest. The
    reconcile promotes that version and east goes to it directly: one write, one restart."""
    world.seed_token(world.gw1, 3 * DAY)
    later = version(world, world.gw1, 25 * DAY)
    version(world, world.gw1, 20 * DAY)
    west = world.gw1.targets[1]
    world.west.secrets[(west.namespace, west.secret)].data[west.key] = later.formatted(west.format)
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert report.ok and report.targets[0].outcome is Outcome.UPDATED
    assert fingerprints(world.held(world.gw1)) == [later.fingerprint, later.fingerprint]
    east_writes = world.east.writes
    assert east_writes == 1 and restarts(world) == 1


def test_a_later_token_only_arm_vouches_for_is_promoted(world: World) -> None:
    """A target holds a later-expiring token of the gateway that is no Key Vault version (generated in
    the portal, or by a racer whose version is off the fenced chain): ARM reproduces it (generateToken
    with its own expiry minute), so it is `newer` — and the proof paid for that decision must also let
    the promotion store it as Key Vault's latest, or the targets never converge."""
    world.seed_token(world.gw1, 20 * DAY)
    later = world.issuer.generate_token(world.gw1.ref, KeyType.PRIMARY, (world.now + 29 * DAY).replace(second=0))
    east = world.gw1.targets[0]
    world.east.secrets[(east.namespace, east.secret)].data[east.key] = f"GatewayKey {later}"
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert report.ok and report.fingerprint == fingerprints([later])[0]
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and [stored.token.fingerprint] == fingerprints([later])
    assert fingerprints(world.held(world.gw1)) == fingerprints([later, later])

"""The three key-roll sequences, with the in-memory ports: a key roll must never regenerate the wrong key.

Each test ends with the invariant that matters after any interleaving (`assert_roll_invariant`): every
target holds a token that verifies against the issuer, Key Vault's latest does too, the key the roll
started from is the (only) key regenerated, and `status` calls the gateway healthy only when all that
holds.
"""

from __future__ import annotations

from datetime import timedelta

from rotation.core.errors import UpstreamError
from rotation.core.model import GatewayConfig, KeyType, RolloutState, Workload
from rotation.core.status import KeyRollPhase
from rotation.core.token import parse_stored
from tests.service.conftest import World

DAY = timedelta(days=1)


def assert_roll_invariant(world: World, config: GatewayConfig, rolled_from: KeyType) -> None:
    stored = world.store.get(config.key_vault_secret)
    assert stored is not None
    assert world.issuer.verify(config.ref, stored.token.value) is rolled_from.other
    for value in world.held(config):
        token = parse_stored(value)
        assert token is not None and world.issuer.verify(config.ref, token.value) is rolled_from.other
    assert world.issuer.regenerated == [rolled_from]
    (status,) = world.rotator.status([config], timeout=5)
    assert status.healthy


def test_sequence_1_a_forced_rotate_while_a_roll_is_pending_does_not_reverse_the_roll(world: World) -> None:
    """roll primary->secondary pending (west unreachable); a forced rotate; roll-keys again."""
    leaked = world.seed_token(world.gw1, 20 * DAY, key=KeyType.PRIMARY)
    world.west.faults.queue["read"] = [UpstreamError("cluster west unreachable")]
    first = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, rollout_wait_seconds=0)
    assert first.phase is KeyRollPhase.PENDING and world.issuer.regenerated == []

    world.rotator.reconcile(world.gw1, reason="suspected leak", force=True, deadline_seconds=5)
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and stored.roll_from is KeyType.PRIMARY  # the roll is carried forward
    assert world.issuer.verify(world.gw1.ref, stored.token.value) is KeyType.SECONDARY

    world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, rollout_wait_seconds=0)
    assert world.issuer.verify(world.gw1.ref, leaked.value) is None  # the leaked key is dead
    assert_roll_invariant(world, world.gw1, KeyType.PRIMARY)


def test_sequence_2_a_pinned_forced_rotate_during_the_rollout_wait_cannot_doom_the_targets(world: World) -> None:
    """keyType pinned to primary; a forced rotate lands while phase 1 waits for rollouts."""
    world.registry = world.rotator.registry = type(world.registry)(
        world.registry.clusters,
        (type(world.gw1)(world.gw1.ref, world.gw1.key_vault_secret, KeyType.PRIMARY, world.gw1.targets),
         world.gw2))
    world.seed_token(world.gw1, 20 * DAY, key=KeyType.PRIMARY)
    raced: list[str] = []
    real_rollout = world.east.rollout

    def rollout(namespace: str, workload: Workload, timeout: float | None = None) -> RolloutState:
        if not raced:
            try:
                world.rotator.reconcile(world.gw1, reason="forced during the wait", force=True,
                                        deadline_seconds=0.3)
                raced.append("rotated")
            except UpstreamError:
                raced.append("refused")
        return real_rollout(namespace, workload, timeout)

    world.east.rollout = rollout  # type: ignore[method-assign]
    world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, rollout_wait_seconds=1, poll_seconds=0.01)
    assert raced
    assert_roll_invariant(world, world.gw1, KeyType.PRIMARY)


def test_sequence_3_a_target_without_restart_list_keeps_the_roll_pending(world: World) -> None:
    """gw-2's target has no `restart` list: its pods still run the old token from their environment."""
    old = world.seed_token(world.gw2, 20 * DAY, key=KeyType.PRIMARY)
    report = world.rotator.roll_keys(world.gw2, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=0)
    assert report.phase is KeyRollPhase.PENDING and not report.regenerated
    assert world.issuer.regenerated == []
    assert world.issuer.verify(world.gw2.ref, old.value) is KeyType.PRIMARY
    assert any("restart" in p for p in report.pending)
    (status,) = world.rotator.status([world.gw2], timeout=5)
    assert not status.healthy  # a pending roll leaves the leaked key valid

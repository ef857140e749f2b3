"""The key roll's states and transitions (rotation.app.keyroll), with in-memory ports."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest

from rotation.adapters.lease import LocalLease
from rotation.app.rotator import Rotator
from rotation.core.errors import UpstreamError
from rotation.core.keyroll import KeyRollRefused
from rotation.core.model import KeyType, Outcome
from rotation.core.status import KeyRollPhase
from tests.service.conftest import World
from tests.service.test_roll_sequences import assert_roll_invariant

DAY = timedelta(days=1)


def pending_roll(world: World) -> None:
    """gw-1 with a roll from primary pending (west has no restart list and is not confirmed)."""
    world.seed_token(world.gw1, 20 * DAY, key=KeyType.PRIMARY)
    report = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=0)
    assert report.phase is KeyRollPhase.PENDING


def test_a_direction_contradicting_the_pending_roll_is_refused_and_writes_nothing(world: World) -> None:
    pending_roll(world)
    calls = (list(world.issuer.calls), world.store.writes, world.east.writes, world.west.writes)
    with pytest.raises(KeyRollRefused, match=r"a key roll from primary to secondary is pending.*--from primary"):
        world.rotator.roll_keys(world.gw1, from_key=KeyType.SECONDARY, deadline_seconds=5, rollout_wait_seconds=0)
    assert (world.issuer.calls, world.store.writes, world.east.writes, world.west.writes) == calls


def test_a_target_without_restart_list_says_what_to_do_then_completes_when_confirmed(world: World) -> None:
    pending_roll(world)
    report = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=0)
    assert report.phase is KeyRollPhase.PENDING and report.resumed
    (item,) = report.pending
    assert item.startswith("west/gateways/gw1-token: has no `restart` list") and "--confirm-restarted" in item
    done = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, deadline_seconds=5,
                                   rollout_wait_seconds=0, confirm_restarted=True)
    assert done.phase is KeyRollPhase.COMPLETED and world.issuer.generated == 1
    assert_roll_invariant(world, world.gw1, KeyType.PRIMARY)
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and stored.roll_from is None


@pytest.mark.parametrize("pinned", [None, KeyType.PRIMARY])
def test_a_routine_renewal_during_a_pending_roll_carries_it_and_signs_with_the_target_key(
        world: World, pinned: KeyType | None) -> None:
    pending_roll(world)
    gw1 = replace(world.gw1, key_type=pinned)
    world.now += 25 * DAY  # the roll's token is now due
    report = world.rotator.reconcile(gw1, reason="renewal", deadline_seconds=5)
    assert report.rotated and report.key_type is KeyType.SECONDARY
    stored = world.store.get(gw1.key_vault_secret)
    assert stored is not None and stored.roll_from is KeyType.PRIMARY and stored.key_type is KeyType.SECONDARY
    assert world.issuer.verify(gw1.ref, stored.token.value) is KeyType.SECONDARY


def test_phase_2_refuses_when_a_writer_outside_the_lease_put_a_retiring_key_token_everywhere(world: World) -> None:
    """An old app version (no lease, no roll state) writes a primary token to Key Vault and every
    target while the roll waits: the re-read right before regenerateKey sees it and stops."""
    world.seed_token(world.gw1, 20 * DAY, key=KeyType.PRIMARY)
    real = world.east.rollout
    intruded: list[bool] = []

    def rollout(namespace: str, workload: object, timeout: float | None = None) -> object:
        if not intruded:
            intruded.append(True)
            world.seed_token(world.gw1, 21 * DAY, key=KeyType.PRIMARY)  # untagged, every target
        return real(namespace, workload, timeout)  # type: ignore[arg-type]

    world.east.rollout = rollout  # type: ignore[method-assign,assignment]
    report = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=1,
                                     poll_seconds=0.01, confirm_restarted=True)
    assert intruded and report.phase is KeyRollPhase.PENDING and world.issuer.regenerated == []
    assert "(it may be signed by the primary key)" in report.pending[0]
    for value in world.held(world.gw1):
        assert value is not None and world.issuer.verify(world.gw1.ref, value.removeprefix("GatewayKey ")) is not None
    # The intruder erased the roll state: the same direction starts the roll over, and finishes it.
    again = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=0,
                                    confirm_restarted=True)
    assert again.phase is KeyRollPhase.COMPLETED and not again.resumed
    assert_roll_invariant(world, world.gw1, KeyType.PRIMARY)


def test_a_second_instance_with_its_own_lease_cannot_make_the_roll_regenerate_and_the_roll_stays_correct(
        world: World) -> None:
    """Worst case: two instances NOT sharing a lease (in-process fallback) and a pinned primary key. The
    forced rotate of the other instance signs with secondary (the roll is pending) and writes every
    target; its Key Vault version is not on the roll's fenced chain (a fork, for the roll's lease), so
    phase 2's re-read finds targets off the roll's token and stops before regenerating. The next run
    stores the roll's token again, brings every target and workload to it, and completes."""
    gw1 = replace(world.gw1, key_type=KeyType.PRIMARY)
    world.seed_token(gw1, 20 * DAY, key=KeyType.PRIMARY)
    other = Rotator(registry=world.registry, issuer=world.issuer, store=world.store, clusters=world.rotator.clusters,
                    clock=lambda: world.now, lease=LocalLease())
    real = world.east.rollout
    forced: list[Outcome] = []

    def rollout(namespace: str, workload: object, timeout: float | None = None) -> object:
        if not forced:
            world.now += timedelta(minutes=2)  # a different token than phase 1's
            report = other.reconcile(gw1, reason="forced elsewhere", force=True, deadline_seconds=5)
            forced.extend(t.outcome for t in report.targets)
        return real(namespace, workload, timeout)  # type: ignore[arg-type]

    world.east.rollout = rollout  # type: ignore[method-assign,assignment]
    report = world.rotator.roll_keys(gw1, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=1,
                                     poll_seconds=0.01, confirm_restarted=True)
    assert forced == [Outcome.UPDATED, Outcome.UPDATED]
    assert report.phase is KeyRollPhase.PENDING and not report.regenerated and world.issuer.regenerated == []
    again = world.rotator.roll_keys(gw1, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=1,
                                    poll_seconds=0.01, confirm_restarted=True)
    assert again.phase is KeyRollPhase.COMPLETED and again.resumed
    assert_roll_invariant(world, gw1, KeyType.PRIMARY)


def test_a_reconcile_waiting_for_the_lease_past_its_deadline_is_transient(world: World) -> None:
    world.seed_token(world.gw2, 20 * DAY)
    assert world.rotator.lease is not None
    held = world.rotator.lease.acquire("contoso-apim/gw-2", duration=30, wait=0)
    try:
        with pytest.raises(UpstreamError, match="another reconcile of this gateway holds it"):
            world.rotator.reconcile(world.gw2, reason="event", deadline_seconds=0.2)
        assert world.store.calls == [] and world.east.calls == []
    finally:
        held.release()
    assert world.rotator.reconcile(world.gw2, reason="event", deadline_seconds=5).ok


def test_the_roll_holds_the_lease_until_it_regenerates(world: World) -> None:
    world.seed_token(world.gw1, 20 * DAY)
    real = world.east.rollout
    blocked: list[str] = []

    def rollout(namespace: str, workload: object, timeout: float | None = None) -> object:
        if not blocked:
            box: list[str] = []

            def rotate() -> None:
                try:
                    world.rotator.reconcile(world.gw1, reason="forced", force=True, deadline_seconds=0.2)
                    box.append("ran")
                except UpstreamError as exc:
                    box.append(str(exc))

            t = threading.Thread(target=rotate)
            t.start()
            t.join()
            blocked.extend(box)
        return real(namespace, workload, timeout)  # type: ignore[arg-type]

    world.east.rollout = rollout  # type: ignore[method-assign,assignment]
    report = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=1,
                                     poll_seconds=0.01, confirm_restarted=True)
    assert report.phase is KeyRollPhase.COMPLETED
    assert "another reconcile of this gateway holds it" in blocked[0]
    assert world.issuer.generated == 1

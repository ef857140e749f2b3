from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from rotation.core.errors import UpstreamError
from rotation.core.model import KeyType, Outcome, RolloutState, Workload
from rotation.core.status import KeyRollPhase
from rotation.core.token import GatewayToken
from tests.service.conftest import World

DAY = timedelta(days=1)


def test_roll_moves_to_the_other_key_then_regenerates_the_old(world: World) -> None:
    old = world.seed_token(world.gw1, 20 * DAY, key=KeyType.PRIMARY)
    report = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, rollout_wait_seconds=1, poll_seconds=0.01)
    assert report.phase is KeyRollPhase.COMPLETED and report.regenerated
    assert (report.from_key, report.to_key) == (KeyType.PRIMARY, KeyType.SECONDARY)
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and stored.key_type is KeyType.SECONDARY and stored.roll_from is None
    assert world.issuer.verify(world.gw1.ref, stored.token.value) is KeyType.SECONDARY
    assert world.issuer.verify(world.gw1.ref, old.value) is None  # the old key is gone
    assert world.held(world.gw1) == [stored.token.formatted(), stored.token.value]
    ops = [op for op, _ in world.issuer.calls]
    assert ops == ["generateToken", "regenerateKey"]


def test_roll_stops_before_regenerating_when_a_target_did_not_confirm(world: World) -> None:
    old = world.seed_token(world.gw1, 20 * DAY)
    # Phase 1 writes west without a read (it holds the token Key Vault held): its write fails.
    world.west.faults.queue["write"] = [UpstreamError("cluster west unreachable")]
    report = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, rollout_wait_seconds=0)
    assert report.phase is KeyRollPhase.PENDING and not report.regenerated and not report.ok
    assert report.pending == ("west/gateways/gw1-token: failed (cluster west unreachable)",)
    assert "regenerateKey" not in [op for op, _ in world.issuer.calls]
    assert world.issuer.verify(world.gw1.ref, old.value) is KeyType.PRIMARY  # still valid
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and stored.roll_from is KeyType.PRIMARY

    resumed = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, rollout_wait_seconds=0)
    assert resumed.phase is KeyRollPhase.COMPLETED
    assert (resumed.from_key, resumed.to_key) == (KeyType.PRIMARY, KeyType.SECONDARY)
    assert world.issuer.generated == 1  # resuming reused the token from phase 1
    assert world.issuer.verify(world.gw1.ref, old.value) is None


def test_roll_waits_for_rollouts(world: World) -> None:
    world.seed_token(world.gw1, 20 * DAY)
    real = world.east.rollout

    def rollout(namespace: str, workload: Workload, timeout: float | None = None) -> RolloutState:
        """Restarted for the roll's token (its fingerprint on the pod template), pods not rolled yet."""
        return replace(real(namespace, workload, timeout), ready=False, detail="0/1 updated")

    world.east.rollout = rollout  # type: ignore[method-assign]
    report = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, rollout_wait_seconds=0.05, poll_seconds=0.01)
    assert report.phase is KeyRollPhase.PENDING
    assert report.pending == ("east/apim/deployment/gw1: rollout not finished (0/1 updated)",)
    assert world.issuer.calls[-1][0] == "generateToken"


def test_roll_dry_run_writes_nothing(world: World) -> None:
    world.seed_token(world.gw1, 20 * DAY)
    report = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, dry_run=True)
    assert report.phase is KeyRollPhase.PLANNED
    assert world.issuer.calls == [] and world.store.writes == 0 and world.east.writes == 0


def test_no_target_ever_holds_a_token_of_a_regenerated_key(world: World) -> None:
    world.seed_token(world.gw1, 20 * DAY)
    checks: list[bool] = []
    original = world.issuer.regenerate_key

    def regenerate(gateway: object, key_type: KeyType, timeout: float | None = None) -> None:
        # at the moment of regeneration, every target must hold a token of the *other* key
        for value in world.held(world.gw1):
            assert value is not None
            checks.append(world.issuer.verify(world.gw1.ref, value.removeprefix("GatewayKey ")) is key_type.other)
        original(gateway, key_type)  # type: ignore[arg-type]

    world.issuer.regenerate_key = regenerate  # type: ignore[method-assign]
    assert world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, rollout_wait_seconds=0).regenerated
    assert checks == [True, True]


def test_roll_replaces_a_later_expiring_token_of_the_key_it_regenerates(world: World) -> None:
    """Never-downgrade would keep it, and the roll would wait forever: that token dies with its key."""
    old = world.seed_token(world.gw1, 30 * DAY, key=KeyType.PRIMARY)  # a longer lifetime than the roll's 29
    report = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, rollout_wait_seconds=1, poll_seconds=0.01)
    assert report.phase is KeyRollPhase.COMPLETED and report.regenerated
    assert [t.outcome.value for t in report.rotation.targets] == ["updated", "updated"]
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and stored.token.expires_at < old.expires_at
    assert world.held(world.gw1) == [stored.token.formatted(), stored.token.value]
    assert world.issuer.verify(world.gw1.ref, old.value) is None


def test_a_later_token_of_the_retiring_key_that_arm_reproduces_is_replaced_by_the_roll(world: World) -> None:
    """A target runs a later-expiring primary token Key Vault never held (pasted from the portal; ARM
    reproduces it, so it is the gateway's). Rolling off primary invalidates it: the roll's reconcile
    overwrites it with the roll's token like any token of the retiring key, instead of keeping it as
    `newer`, which left the roll pending until that token expired (up to 30 days)."""
    world.seed_token(world.gw1, 20 * DAY)
    portal = GatewayToken.parse(world.issuer.generate_token(world.gw1.ref, KeyType.PRIMARY,
                                                            (world.now + 30 * DAY).replace(second=0)))
    world.issuer.calls.clear()
    world.east.secrets[("apim", "gw1-token")].data["config.service.auth.key"] = portal.formatted()
    report = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, rollout_wait_seconds=0)
    assert report.rotation is not None and report.rotation.targets[0].outcome is Outcome.UPDATED
    assert report.phase is KeyRollPhase.COMPLETED, report.pending
    assert world.issuer.verify(world.gw1.ref, portal.value) is None
    for value in world.held(world.gw1):
        assert value is not None and world.issuer.verify(world.gw1.ref, value.removeprefix("GatewayKey ")) \
            is KeyType.SECONDARY


def test_a_resumed_roll_waits_for_a_rollout_still_in_progress(world: World) -> None:
    """The first run's rollouts do not finish within its wait: pending. The operator runs it again while
    the pods are still rolling: phase 1 finds the workloads restarted for the roll's token and leaves
    the rollout to phase 2, which waits for it (`rollout_wait_seconds`) and completes."""
    world.seed_token(world.gw1, 20 * DAY)
    real = world.east.rollout
    rolling = [True]
    calls: list[int] = []

    def rollout(namespace: str, workload: Workload, timeout: float | None = None) -> RolloutState:
        calls.append(1)
        state = real(namespace, workload, timeout)
        return replace(state, ready=False, detail="1/2 updated") if rolling[0] else state

    world.east.rollout = rollout  # type: ignore[method-assign]
    first = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                    deadline_seconds=5, rollout_wait_seconds=0)
    assert first.phase is KeyRollPhase.PENDING and any("rollout not finished" in p for p in first.pending)
    calls.clear()

    def finish_after_two_looks(namespace: str, workload: Workload, timeout: float | None = None) -> RolloutState:
        if len(calls) >= 2:
            rolling[0] = False
        return rollout(namespace, workload, timeout)

    world.east.rollout = finish_after_two_looks  # type: ignore[method-assign]
    again = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                    deadline_seconds=5, rollout_wait_seconds=2, poll_seconds=0.01)
    assert again.phase is KeyRollPhase.COMPLETED and again.resumed, again.pending
    assert world.issuer.regenerated == [KeyType.PRIMARY]

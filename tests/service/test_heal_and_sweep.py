"""Events heal running gateways; the sweep keeps to its budget and survives a bug in one gateway."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

import pytest

from rotation.core.model import Outcome, RolloutState, Workload
from rotation.core.restarts import Heal
from tests.service.conftest import World

DAY = timedelta(days=1)


def current_everywhere(world: World) -> None:
    """gw-1's token in Key Vault and both Secrets; east's workload last restarted a day before it, by
    hand (no fingerprint on its pod template: what its pods run is unknown)."""
    world.east.restarts[("apim", "deployment/gw1")] = [world.now - DAY]
    world.seed_token(world.gw1, 20 * DAY)


def test_an_event_for_a_current_gateway_restarts_workloads_not_restarted_for_the_token(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    current_everywhere(world)
    world.now += timedelta(hours=1)
    with caplog.at_level(logging.INFO, logger="rotation"):
        report = world.rotator.reconcile(world.gw1, reason="event", deadline_seconds=5,
                                         heal=Heal(instance="gw1-7c9d-x2k4q", instance_expires_at=world.now))
    east, west = report.targets
    assert (east.outcome, east.restarted) == (Outcome.IN_SYNC, ("deployment/gw1",))
    assert west.outcome is Outcome.FAILED and "gateway instance gw1-7c9d-x2k4q still runs an older token" in (
        west.error or "") and "no `restart` list" in (west.error or "")
    assert report.instance == "gw1-7c9d-x2k4q" and not report.ok
    assert world.store.writes == 0 and world.east.writes == 0 and world.west.writes == 0
    assert 'instance=gw1-7c9d-x2k4q' in caplog.text and 'rotation.heal ' in caplog.text

    # the next instance's event (a duplicate): east's pod template names the token now -> no restart
    again = world.rotator.reconcile(world.gw1, reason="event", deadline_seconds=5,
                                    heal=Heal(instance="gw1-7c9d-zz9", instance_expires_at=world.now))
    assert again.targets[0].restarted == () and len(world.east.restarts[("apim", "deployment/gw1")]) == 2


def test_events_restart_a_workload_once_per_token(world: World) -> None:
    """APIM sends one event per stale instance, and redelivers: the first heal restarts the workload and
    records the token's fingerprint on its pod template; later events find it restarted for that token
    and restart nothing (the pod template's fingerprint, not a cooldown on anyone's clock), failing
    for a retry only while its pods are still rolling out."""
    world.seed_token(world.gw2, 20 * DAY)
    gw1 = world.gw1
    token = world.seed_token(gw1, 20 * DAY)
    stale = Heal(instance="pod-1", instance_expires_at=token.expires_at - DAY)
    first = world.rotator.reconcile(gw1, reason="event", deadline_seconds=5, heal=stale)
    assert first.targets[0].restarted == ("deployment/gw1",)
    assert world.east.fingerprints[("apim", "deployment/gw1")] == token.fingerprint
    real = world.east.rollout

    def rolling(namespace: str, workload: Workload, timeout: float | None = None) -> RolloutState:
        return replace(real(namespace, workload, timeout), ready=False, detail="1/2 updated")

    world.east.rollout = rolling  # type: ignore[method-assign]
    world.now += timedelta(minutes=20)
    during = world.rotator.reconcile(gw1, reason="event", deadline_seconds=5,
                                     heal=Heal(instance="pod-2", instance_expires_at=token.expires_at - DAY))
    east = during.targets[0]
    assert east.outcome is Outcome.FAILED and "still rolling out to the token (1/2 updated)" in (east.error or "")
    assert east.restarted == ()
    world.east.rollout = real  # type: ignore[method-assign]
    after = world.rotator.reconcile(gw1, reason="event", deadline_seconds=5,
                                    heal=Heal(instance="pod-3", instance_expires_at=token.expires_at - DAY))
    assert after.targets[0].outcome is Outcome.IN_SYNC and after.targets[0].restarted == ()
    assert len(world.east.restarts[("apim", "deployment/gw1")]) == 1


def test_an_event_about_the_current_token_heals_nothing(world: World) -> None:
    token = world.seed_token(world.gw1, 20 * DAY)
    world.east.fingerprints[("apim", "deployment/gw1")] = token.fingerprint  # restarted for it already
    report = world.rotator.reconcile(world.gw1, reason="event", deadline_seconds=5,
                                     heal=Heal(instance="pod-1", instance_expires_at=token.expires_at))
    assert report.ok and all(t.outcome is Outcome.IN_SYNC and not t.restarted for t in report.targets)
    assert world.east.restarts == {}


def test_a_heal_dropped_as_current_names_no_instance_in_the_report(world: World) -> None:
    """The report (and so the rotation.reconcile record) names an event's instance only when the
    reconcile healed for it: an instance that already runs Key Vault's token is not reported."""
    token = world.seed_token(world.gw1, 20 * DAY)
    current = world.rotator.reconcile(world.gw1, reason="event", deadline_seconds=5,
                                      heal=Heal(instance="pod-1", instance_expires_at=token.expires_at))
    stale = world.rotator.reconcile(world.gw1, reason="event", deadline_seconds=5,
                                    heal=Heal(instance="pod-2", instance_expires_at=token.expires_at - DAY))
    assert current.instance is None and stale.instance == "pod-2"


def test_the_sweep_leaves_gateways_it_cannot_reach_within_its_budget_for_the_next_run(world: World) -> None:
    world.seed_token(world.gw1, 20 * DAY)
    world.seed_token(world.gw2, 20 * DAY)
    result = world.rotator.sweep(deadline_seconds=5, budget_seconds=3)
    assert not result.ok and [r.error for r in result.reports] == [
        "not reached within the sweep's budget; left for the next run"] * 2
    assert world.east.calls == [] and world.west.calls == []


def test_a_bug_in_one_gateway_does_not_lose_the_other_reports(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.seed_token(world.gw1, 2 * DAY)
    world.seed_token(world.gw2, 2 * DAY)
    real = world.issuer.generate_token

    def generate(gateway, key_type, expiry, timeout=None):  # type: ignore[no-untyped-def]
        if gateway.gateway == "gw-1":
            raise KeyError("a bug")
        return real(gateway, key_type, expiry, timeout)

    world.issuer.generate_token = generate  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        result = world.rotator.sweep(deadline_seconds=5)
    gw1, gw2 = result.reports
    assert gw1.error == "internal error: KeyError" and gw2.ok and gw2.rotated
    assert "unexpected error reconciling contoso-apim/gw-1" in caplog.text


def test_status_says_when_leases_are_in_process_only(world: World) -> None:
    world.seed_token(world.gw2, 20 * DAY)
    (status,) = world.rotator.status([world.gw2], timeout=5)
    assert status.healthy and status.warning is not None and "in-process only" in status.warning
    assert status.to_dict()["warning"] == status.warning

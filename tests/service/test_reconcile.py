from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest

from rotation import telemetry
from rotation.core.errors import AccessDenied, UpstreamError
from rotation.core.model import KeyType, Outcome
from rotation.core.token import GatewayToken
from tests.service.conftest import World

DAY = timedelta(days=1)


def test_first_reconcile_generates_stores_then_updates_every_target(world: World) -> None:
    report = world.rotator.reconcile(world.gw1, reason="test", deadline_seconds=5)
    assert report.ok and report.rotated
    assert [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.UPDATED]
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and stored.key_type is KeyType.PRIMARY
    assert stored.token.expires_at == (world.now + timedelta(days=29)).replace(second=0)
    assert world.held(world.gw1) == [f"GatewayKey {stored.token.value}", stored.token.value]
    assert world.issuer.verify(world.gw1.ref, stored.token.value) is KeyType.PRIMARY
    assert report.fingerprint == stored.token.fingerprint
    assert report.targets[0].restarted == ("deployment/gw1",)
    assert len(world.east.restarts[("apim", "deployment/gw1")]) == 1
    # The restart records, on the pod template, which token the workload was restarted for.
    assert world.east.fingerprints[("apim", "deployment/gw1")] == stored.token.fingerprint
    assert world.east.secrets[("apim", "gw1-token")].annotations == {}  # nothing left on the Secret
    assert world.publisher.published == [report]


def test_key_vault_is_written_before_any_cluster(world: World) -> None:
    order: list[str] = []
    original_put, original_write = world.store.put, world.east.write_secret_key

    def put(*a: object, **k: object) -> str:
        order.append("keyvault")
        return original_put(*a, **k)  # type: ignore[arg-type]

    def write(*a: object, **k: object) -> str:
        order.append("cluster")
        return original_write(*a, **k)  # type: ignore[arg-type]

    world.store.put = put  # type: ignore[method-assign]
    world.east.write_secret_key = write  # type: ignore[method-assign]
    world.rotator.reconcile(world.gw2, reason="t", deadline_seconds=5)
    assert order == ["keyvault", "cluster"]


def test_key_vault_failure_touches_no_cluster(world: World) -> None:
    world.store.faults.queue["put"] = [UpstreamError("Key Vault 503")]
    with pytest.raises(UpstreamError, match="503"):
        world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert world.east.writes == world.west.writes == 0
    assert world.held(world.gw1) == [None, None]


def test_arm_failure_writes_nothing(world: World) -> None:
    world.issuer.faults.queue["generateToken"] = [AccessDenied("ARM generateToken: 403")]
    with pytest.raises(AccessDenied):
        world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert world.store.writes == 0 and world.east.writes == 0


def test_duplicate_delivery_writes_nothing(world: World) -> None:
    world.rotator.reconcile(world.gw1, reason="first", deadline_seconds=5)
    calls = (world.issuer.generated, world.store.writes, world.east.writes, world.west.writes)
    restarts = len(world.east.restarts[("apim", "deployment/gw1")])
    second = world.rotator.reconcile(world.gw1, reason="second", deadline_seconds=5)
    assert second.ok and not second.rotated
    assert [t.outcome for t in second.targets] == [Outcome.IN_SYNC, Outcome.IN_SYNC]
    assert (world.issuer.generated, world.store.writes, world.east.writes, world.west.writes) == calls
    assert len(world.east.restarts[("apim", "deployment/gw1")]) == restarts


def test_concurrent_events_for_one_gateway_generate_one_token(world: World) -> None:
    world.east.faults.delay["read"] = 0.02
    reports = []
    threads = [threading.Thread(target=lambda: reports.append(
        world.rotator.reconcile(world.gw1, reason="pod", deadline_seconds=5))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert world.issuer.generated == 1
    assert sum(r.rotated for r in reports) == 1 and all(r.ok for r in reports)


def test_fresh_token_is_pushed_without_generating(world: World) -> None:
    token = world.seed_token(world.gw1, 20 * DAY, everywhere=False)
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert not report.rotated and world.issuer.generated == 0
    assert world.held(world.gw1) == [token.formatted(), token.value]


def test_stale_token_in_key_vault_is_renewed(world: World) -> None:
    old = world.seed_token(world.gw1, 2 * DAY)
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert report.rotated and report.fingerprint != old.fingerprint
    assert [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.UPDATED]


def test_never_downgrades_a_target_holding_a_later_token(world: World) -> None:
    world.seed_token(world.gw1, 20 * DAY)
    later = GatewayToken.parse(world.issuer.generate_token(world.gw1.ref, KeyType.PRIMARY,
                                                           (world.now + 29 * DAY).replace(second=0)))
    world.west.secrets[("gateways", "gw1-token")].data["value"] = later.value
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    # West keeps its later token (ARM reproduces it: the gateway's), which is then recorded as Key Vault's
    # latest and brought to east (west is then in sync with it): nobody goes back to the earlier one.
    assert [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.IN_SYNC]
    assert world.west.value("gateways", "gw1-token", "value") == later.value
    assert world.east.value("apim", "gw1-token", "config.service.auth.key") == later.formatted()
    assert report.ok


def _race(world: World, later_days: int, earlier_days: int) -> tuple[GatewayToken, GatewayToken]:
    """What two racing rotations with different lifetimes leave: Key Vault's latest version expires
    earlier than the version written just before it, which west kept (never downgrade)."""
    later = world.seed_token(world.gw1, later_days * DAY, everywhere=False)
    earlier = world.seed_token(world.gw1, earlier_days * DAY, everywhere=False)
    world.east.secrets[("apim", "gw1-token")].data["config.service.auth.key"] = earlier.formatted()
    world.west.secrets[("gateways", "gw1-token")].data["value"] = later.value
    return later, earlier


def test_a_later_expiring_version_a_target_holds_becomes_the_latest_and_every_target_converges(
        world: World) -> None:
    later, _ = _race(world, 29, 28)
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.IN_SYNC]
    assert report.ok and report.rotated and report.fingerprint == later.fingerprint
    assert world.store.current(world.gw1.key_vault_secret) == later.value
    assert world.held(world.gw1) == [later.formatted(), later.value]
    assert world.issuer.generated == 0
    again = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert [t.outcome for t in again.targets] == [Outcome.IN_SYNC, Outcome.IN_SYNC]
    assert world.store.writes == 1


def test_no_promotion_across_a_key_change(world: World) -> None:
    later, _ = _race(world, 29, 28)
    # Since then the gateway moved to the secondary key: the later primary version may be signed by a
    # primary key that was regenerated, so it must not come back.
    world.seed_token(world.gw1, 28 * DAY + timedelta(hours=12), key=KeyType.SECONDARY, everywhere=False)
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.NEWER]
    assert world.store.writes == 0
    assert world.west.value("gateways", "gw1-token", "value") == later.value


def test_during_a_key_roll_only_the_rolls_own_tokens_are_promoted(world: World) -> None:
    """A roll back to the primary key is pending: a primary version from before the gateway moved to the
    secondary key is signed by the key the earlier roll regenerated (as far as Key Vault can tell), so
    it is not this roll's token and must not become the latest again, however late it expires."""
    later, _ = _race(world, 29, 28)
    world.seed_token(world.gw1, 28 * DAY + timedelta(hours=12), key=KeyType.SECONDARY, everywhere=False)
    world.seed_token(world.gw1, 28 * DAY, key=KeyType.PRIMARY, everywhere=False)
    latest = world.store.get(world.gw1.key_vault_secret)
    assert latest is not None
    world.store.put(world.gw1.key_vault_secret, replace(latest, roll_from=KeyType.SECONDARY, version=None))
    world.store.calls.clear()
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert report.targets[1].outcome is Outcome.NEWER
    assert world.store.writes == 0 and world.store.current(world.gw1.key_vault_secret) != later.value
    assert world.west.value("gateways", "gw1-token", "value") == later.value


def test_a_failed_promotion_leaves_the_first_pass_as_it_was(world: World) -> None:
    """Storing the later token as Key Vault's latest fails (503): the targets keep what the first pass
    left, Key Vault keeps its latest."""
    _, earlier = _race(world, 29, 28)
    world.store.faults.queue["put"] = [UpstreamError("Key Vault 503")]
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert [t.outcome for t in report.targets] == [Outcome.IN_SYNC, Outcome.NEWER]
    assert report.ok and world.store.current(world.gw1.key_vault_secret) == earlier.value


def test_a_later_token_that_cannot_be_verified_now_is_left_and_reported(world: World) -> None:
    """Listing Key Vault's versions fails (503): whether west's later-expiring token is the gateway's
    cannot be told, so it is neither overwritten (it may be a verified token: never downgrade) nor
    kept as `newer`; the target fails and the retry decides."""
    later, earlier = _race(world, 29, 28)
    world.store.faults.queue["versions"] = [UpstreamError("Key Vault listing failed: 503")]
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert [t.outcome for t in report.targets] == [Outcome.IN_SYNC, Outcome.FAILED]
    assert "503" in (report.targets[1].error or "")
    assert world.west.value("gateways", "gw1-token", "value") == later.value
    assert world.store.current(world.gw1.key_vault_secret) == earlier.value


def test_expired_event_with_fresh_key_vault_repairs_only_the_stale_target(world: World) -> None:
    token = world.seed_token(world.gw1, 20 * DAY)
    world.west.secrets[("gateways", "gw1-token")].data["value"] = "stale"
    report = world.rotator.reconcile(world.gw1, reason="expired", deadline_seconds=5)
    assert [t.outcome for t in report.targets] == [Outcome.IN_SYNC, Outcome.UPDATED]
    assert world.east.writes == 0 and world.issuer.generated == 0
    assert world.held(world.gw1) == [token.formatted(), token.value]


def test_one_failed_target_leaves_the_others_updated(world: World) -> None:
    world.west.faults.queue["write"] = [AccessDenied("cluster west: forbidden to patch secrets")]
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert not report.ok
    east, west = report.targets
    assert east.outcome is Outcome.UPDATED
    assert west.outcome is Outcome.FAILED and west.error == "cluster west: forbidden to patch secrets"
    assert report.failed_targets == (west,)
    # the retry Event Grid makes finishes the job without a new token
    retry = world.rotator.reconcile(world.gw1, reason="retry", deadline_seconds=5)
    assert retry.ok and not retry.rotated and world.issuer.generated == 1
    assert [t.outcome for t in retry.targets] == [Outcome.IN_SYNC, Outcome.UPDATED]


def test_missing_secret_fails_with_a_clear_message(world: World) -> None:
    del world.west.secrets[("gateways", "gw1-token")]
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert report.targets[1].outcome is Outcome.FAILED
    assert report.targets[1].error == "cluster west: Secret gateways/gw1-token not found"


def test_conflict_is_retried_once_after_rereading(world: World) -> None:
    world.east.conflicts = 1
    report = world.rotator.reconcile(world.gw2, reason="t", deadline_seconds=5)
    assert report.targets[0].outcome is Outcome.UPDATED
    assert [op for op, _ in world.east.calls].count("read") == 2


def test_conflict_storm_fails_the_target(world: World) -> None:
    world.east.conflicts = 5
    report = world.rotator.reconcile(world.gw2, reason="t", deadline_seconds=5)
    assert report.targets[0].outcome is Outcome.FAILED and "changed meanwhile" in (report.targets[0].error or "")


def test_slow_target_times_out_and_others_finish(world: World) -> None:
    world.west.faults.delay["read"] = 1.0
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=0.3)
    east, west = report.targets
    assert east.outcome is Outcome.UPDATED
    assert west.outcome is Outcome.TIMEOUT
    assert report.duration_ms < 900
    assert not report.ok


def test_failed_restart_is_redone_by_the_next_reconcile(world: World) -> None:
    """The workload's pod template names the token it was last restarted for: a restart that failed
    leaves it naming the previous token, so the next reconcile owes it one (fingerprints compared, no
    marker on the Secret, no clock)."""
    world.rotator.reconcile(world.gw1, reason="first", deadline_seconds=5)
    previous = world.east.fingerprints[("apim", "deployment/gw1")]
    world.east.faults.queue["restart"] = [UpstreamError("cluster east unreachable")]
    world.now += timedelta(minutes=5)  # a token of another expiry minute
    first = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5, force=True)
    assert first.targets[0].outcome is Outcome.FAILED and first.fingerprint != previous
    assert world.east.fingerprints[("apim", "deployment/gw1")] == previous
    second = world.rotator.reconcile(world.gw1, reason="retry", deadline_seconds=5)
    assert second.targets[0].outcome is Outcome.IN_SYNC
    assert second.targets[0].restarted == ("deployment/gw1",)
    assert world.east.fingerprints[("apim", "deployment/gw1")] == first.fingerprint
    assert world.east.writes == 2
    third = world.rotator.reconcile(world.gw1, reason="again", deadline_seconds=5)
    assert third.targets[0].restarted == ()  # owed once


def test_a_workload_never_restarted_by_the_rotator_is_restarted_once_to_record_its_token(world: World) -> None:
    """No fingerprint on the pod template (restarted by hand, onboarded, or a restart lost between the
    Secret write and its PATCH): nothing says its pods run the Secret's token, so the first reconcile
    restarts it once, recording the fingerprint; the next one finds it current and leaves it."""
    token = world.seed_token(world.gw1, 20 * DAY)
    first = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert first.targets[0].outcome is Outcome.IN_SYNC and first.targets[0].restarted == ("deployment/gw1",)
    assert world.east.fingerprints[("apim", "deployment/gw1")] == token.fingerprint
    again = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert again.targets[0].restarted == ()
    assert len(world.east.restarts[("apim", "deployment/gw1")]) == 1


def test_dry_run_writes_nothing_and_plans(world: World) -> None:
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5, dry_run=True)
    assert report.dry_run and not report.rotated and report.ok
    assert [t.outcome for t in report.targets] == [Outcome.PLANNED, Outcome.PLANNED]
    assert report.targets[0].restarted == ("deployment/gw1",)
    assert world.issuer.calls == [] and world.store.writes == 0
    assert world.east.writes == world.west.writes == 0
    assert world.publisher.published == []


def test_dry_run_with_fresh_token_reports_what_is_in_sync(world: World) -> None:
    world.seed_token(world.gw1, 20 * DAY)
    world.west.secrets[("gateways", "gw1-token")].data["value"] = "stale"
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5, dry_run=True)
    assert [t.outcome for t in report.targets] == [Outcome.IN_SYNC, Outcome.PLANNED]
    assert world.west.writes == 0


def test_force_rotates_a_fresh_token_and_keeps_the_key(world: World) -> None:
    old = world.seed_token(world.gw1, 20 * DAY, key=KeyType.SECONDARY)
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5, force=True)
    assert report.rotated and report.key_type is KeyType.SECONDARY and report.fingerprint != old.fingerprint
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and world.issuer.verify(world.gw1.ref, stored.token.value) is KeyType.SECONDARY


def test_report_and_logs_never_carry_the_token(world: World, caplog: pytest.LogCaptureFixture) -> None:
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None
    assert stored.token.value not in repr(report.to_dict())
    assert stored.token.value not in caplog.text
    records = [f for f in map(telemetry.fields_of, caplog.records) if f]
    assert [r["event"] for r in records].count("rotation.reconcile") == 1
    targets = [r for r in records if r["event"] == "rotation.target"]
    assert len(targets) == 2 and {t["outcome"] for t in targets} == {"updated"}
    assert {"gatewayId", "cluster", "namespace", "secret", "fingerprint", "durationMs"} <= set(targets[0])


def test_kept_token_reports_the_key_that_signed_it(world: World) -> None:
    world.seed_token(world.gw1, 20 * DAY, key=KeyType.SECONDARY)
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert not report.rotated and report.key_type is KeyType.SECONDARY


def test_an_updated_target_costs_two_kubernetes_calls_after_a_renewal(world: World) -> None:
    """A renewal replaces the token Key Vault held before: a target holding exactly that one is written
    with a JSON Patch `test` on it (no read), and its workload restarted with the new token's
    fingerprint on its pod template (no rollout read: it was just written). A first token (nothing to
    test against) costs a read more. The 100-target fan-out benchmark is bound by these calls (README)."""
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert report.ok
    assert world.east.calls == [("read", "apim/gw1-token"), ("write", "apim/gw1-token"),
                                ("restart", "apim/deployment/gw1")]
    world.east.calls.clear()
    world.now += 23 * DAY  # six days left: renewed
    renewed = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert renewed.ok and renewed.rotated
    assert world.east.calls == [("write", "apim/gw1-token"), ("restart", "apim/deployment/gw1")]
    assert world.east.fingerprints[("apim", "deployment/gw1")] == renewed.fingerprint
    assert world.east.secrets[("apim", "gw1-token")].annotations == {}


def test_a_restart_landing_late_for_an_older_token_is_redone(world: World) -> None:
    """Our restart PATCH, for the token we wrote, lands after another writer (sharing the lease, after
    us) wrote a later token and restarted for it: the pod template then names our older token while
    the Secret holds theirs, so the next reconcile restarts the workload again for what the Secret holds."""
    ours = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert ours.fingerprint is not None
    world.now += timedelta(minutes=5)
    theirs = world.rotator.reconcile(world.gw1, reason="forced elsewhere", deadline_seconds=5, force=True)
    assert theirs.fingerprint not in (None, ours.fingerprint)
    assert world.east.fingerprints[("apim", "deployment/gw1")] == theirs.fingerprint
    world.east.restart("apim", world.gw1.targets[0].restart[0], world.now, fingerprint=ours.fingerprint)  # late
    again = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert again.fingerprint == theirs.fingerprint and again.targets[0].restarted == ("deployment/gw1",)
    assert world.east.fingerprints[("apim", "deployment/gw1")] == theirs.fingerprint

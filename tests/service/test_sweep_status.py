from __future__ import annotations

from datetime import timedelta

from rotation.core.errors import UpstreamError
from rotation.core.model import Outcome, SyncState
from tests.service.conftest import World

DAY = timedelta(days=1)


def test_sweep_with_fresh_tokens_lists_once_and_reads_no_value(world: World) -> None:
    world.seed_token(world.gw1, 20 * DAY)
    world.seed_token(world.gw2, 20 * DAY)
    result = world.rotator.sweep(deadline_seconds=5)
    assert result.ok and len(result.reports) == 2
    assert world.store.calls == [("list", "*")]
    assert world.issuer.calls == []
    assert all(t.outcome is Outcome.IN_SYNC for r in result.reports for t in r.targets)


def test_sweep_renews_what_is_due_and_heals_drift(world: World) -> None:
    world.seed_token(world.gw1, 2 * DAY)          # due
    fresh = world.seed_token(world.gw2, 20 * DAY)  # fresh, but its target drifted
    world.east.secrets[("apim", "gw2-token")].data["config.service.auth.key"] = "drifted"
    seen: list[str] = []
    result = world.rotator.sweep(deadline_seconds=5, progress=lambda r: seen.append(r.gateway_id))
    assert result.ok and sorted(seen) == sorted(r.gateway_id for r in result.reports)
    gw1, gw2 = result.reports
    assert gw1.rotated and not gw2.rotated
    assert world.east.value("apim", "gw2-token", "config.service.auth.key") == fresh.formatted()
    assert world.issuer.generated == 1
    assert result.to_dict()["rotated"] == 1


def test_sweep_reports_a_failing_gateway_and_carries_on(world: World) -> None:
    world.seed_token(world.gw2, 2 * DAY)
    world.issuer.faults.queue["generateToken"] = [UpstreamError("ARM generateToken: 503")]
    result = world.rotator.sweep(deadline_seconds=5)
    assert not result.ok
    errors = [r.error for r in result.reports]
    assert errors.count("ARM generateToken: 503") == 1 and errors.count(None) == 1


def test_sweep_dry_run_writes_nothing(world: World) -> None:
    result = world.rotator.sweep(deadline_seconds=5, dry_run=True)
    assert result.ok and world.store.writes == 0 and world.issuer.calls == []
    assert {t.outcome for r in result.reports for t in r.targets} == {Outcome.PLANNED}


def test_status_compares_fingerprints(world: World) -> None:
    token = world.seed_token(world.gw1, 20 * DAY)
    world.west.secrets[("gateways", "gw1-token")].data["value"] = "stale"
    del world.east.secrets[("apim", "gw2-token")]
    gw1, gw2 = world.rotator.status(timeout=5)
    assert gw1.expires_at == token.expires_at and gw1.fingerprint == token.fingerprint
    assert [t.state for t in gw1.targets] == [SyncState.IN_SYNC, SyncState.STALE]
    assert gw1.targets[0].rollouts[0].ready
    assert not gw1.healthy
    assert gw2.error == "no token in Key Vault" and gw2.targets[0].state is SyncState.MISSING
    assert world.store.calls == [("list", "*")]
    assert token.value not in repr([gw1.to_dict(), gw2.to_dict()])


def test_status_unreachable_cluster(world: World) -> None:
    world.seed_token(world.gw1, 20 * DAY)
    world.west.faults.queue["read"] = [UpstreamError("cluster west unreachable: connection refused")]
    (gw1,) = world.rotator.status([world.gw1], timeout=5)
    assert gw1.targets[1].state is SyncState.UNREACHABLE
    assert gw1.targets[1].error == "cluster west unreachable: connection refused"

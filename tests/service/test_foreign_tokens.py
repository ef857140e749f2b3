"""A target whose Secret key holds a verified token of ANOTHER registered gateway is a registry mistake.

Overwriting it would cut off the gateway that really reads that Secret (its pods would start with a
token signed for a different gateway), and the rotation would still be reported `updated`. So the
reconcile writes nothing there and reports the target failed with a message that names both gateways
and the fix; `status` already calls it `mismatch`. "Verified" means one of that gateway's Key Vault
versions: the gateway name inside a token is whatever its writer put there, so a value merely
*named* for another gateway is unverified and overwritten like any other. A value that is no token
at all (empty, placeholder) is still written: that is the onboarding case.
"""

from __future__ import annotations

from datetime import timedelta

from rotation.core.model import Outcome
from tests.memory import sign
from tests.service.conftest import World

DAY = timedelta(days=1)


def _foreign(world: World) -> str:
    """gw-2's current token: one of its Key Vault versions (registered, so the rotator can tell)."""
    return world.seed_token(world.gw2, 20 * DAY, everywhere=False).value


def _named(world: World) -> str:
    """A value that says gw-2 (and expires later than gw-1's token would) but nobody's key signed."""
    return sign("gw-2", (world.now + 29 * DAY + timedelta(hours=1)).replace(second=0, microsecond=0), b"other-key")


def test_a_target_holding_another_gateways_token_is_not_overwritten(world: World) -> None:
    foreign = f"GatewayKey {_foreign(world)}"
    world.east.secrets[("apim", "gw1-token")].data["config.service.auth.key"] = foreign
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    east, west = report.targets
    assert east.outcome is Outcome.FAILED and west.outcome is Outcome.UPDATED
    assert east.error is not None and world.gw2.ref.id in east.error and world.gw1.ref.id in east.error
    assert "registry" in east.error
    assert world.east.value("apim", "gw1-token", "config.service.auth.key") == foreign
    assert world.east.restarts.get(("apim", "deployment/gw1"), []) == []
    assert not report.ok


def test_a_forced_rotation_does_not_overwrite_it_either(world: World) -> None:
    world.seed_token(world.gw1, 20 * DAY)
    foreign = _foreign(world)
    world.west.secrets[("gateways", "gw1-token")].data["value"] = foreign
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5, force=True)
    assert [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.FAILED]
    assert world.west.value("gateways", "gw1-token", "value") == foreign


def test_a_value_merely_named_for_another_gateway_is_overwritten(world: World) -> None:
    """Nothing vouches for it (not a Key Vault version of gw-2, not reproduced by ARM for gw-1): it is
    overwritten with gw-1's token, later expiry or not."""
    named = f"GatewayKey {_named(world)}"
    world.east.secrets[("apim", "gw1-token")].data["config.service.auth.key"] = named
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.UPDATED] and report.ok
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None
    assert world.east.value("apim", "gw1-token", "config.service.auth.key") == stored.token.formatted()


def test_a_placeholder_that_is_no_token_is_still_written(world: World) -> None:
    world.east.secrets[("apim", "gw1-token")].data["config.service.auth.key"] = "GatewayKey <paste token>"
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.UPDATED]


def test_the_sweeps_fast_path_never_pushes_another_gateways_token_from_key_vault(world: World) -> None:
    """The sweep trusts its own listing's tags (one listing for the whole fleet: benchmarks/sweep.py) and
    reads a token's value only for a target that needs it. Tags in agreement with a value of another
    gateway (someone with Secrets Officer on the token vault wrote both) cost a read, never a write."""
    from rotation.core.model import KeyType, TokenRecord
    from rotation.core.token import GatewayToken

    foreign = GatewayToken.parse(_foreign(world))
    world.store.put(world.gw1.key_vault_secret, TokenRecord(foreign, KeyType.PRIMARY, world.gw1.ref.id))
    before = world.held(world.gw1)
    sweep = world.rotator.sweep(deadline_seconds=5)
    gw1 = next(r for r in sweep.reports if r.gateway_id == world.gw1.ref.id)
    assert not gw1.ok and "another gateway" in (gw1.error or "") + "".join(t.error or "" for t in gw1.targets)
    assert world.held(world.gw1) == before

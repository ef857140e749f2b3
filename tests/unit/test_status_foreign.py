"""status flags a registered Secret that holds another gateway's token (not only validate-registry --live).

The name inside a token (`{gateway}&{expiry}&{signature}`) proves nothing (anyone may write it, and
gateways of other APIM services share names), so the token is another registered gateway's only when
it is one of that gateway's Key Vault versions. Such a target is not `stale`: a rotation would
overwrite the other gateway's token, so it is reported as `mismatch` with the reason (the other
gateway by its full ARM id), like `validate-registry --live` does.
"""

from __future__ import annotations

from datetime import timedelta

from rotation.core.model import SyncState
from tests.service.conftest import World


def test_a_target_holding_another_gateways_token_is_a_mismatch_with_the_reason() -> None:
    world = World()
    world.seed_token(world.gw1, timedelta(days=20))
    other = world.seed_token(world.gw2, timedelta(days=25))
    east = world.gw1.targets[0]
    world.east.secrets[(east.namespace, east.secret)].data[east.key] = other.formatted(east.format)
    (status,) = world.rotator.status([world.gw1])
    by_cluster = {t.cluster: t for t in status.targets}
    assert by_cluster["west"].state is SyncState.IN_SYNC
    flagged = by_cluster["east"]
    assert flagged.state is SyncState.MISMATCH and not status.healthy
    assert status.gateway_id == world.gw1.ref.id
    assert flagged.error is not None and world.gw2.ref.id in flagged.error
    assert other.value not in flagged.error and other.value not in str(status.to_dict())


def test_a_value_merely_named_for_another_gateway_is_no_mismatch() -> None:
    """`gw-2&...&<random>` is nobody's token: not another gateway's (a rotation overwrites it), so not a
    mismatch, and not in sync either."""
    from tests.memory import sign

    world = World()
    world.seed_token(world.gw1, timedelta(days=20))
    world.seed_token(world.gw2, timedelta(days=25))
    east = world.gw1.targets[0]
    named = sign("gw-2", (world.now + timedelta(days=25)).replace(second=0), b"not gw-2's key")
    world.east.secrets[(east.namespace, east.secret)].data[east.key] = f"GatewayKey {named}"
    (status,) = world.rotator.status([world.gw1])
    flagged = {t.cluster: t for t in status.targets}["east"]
    assert flagged.state not in (SyncState.MISMATCH, SyncState.IN_SYNC) and not status.healthy
    assert world.gw2.ref.id not in (flagged.error or "")

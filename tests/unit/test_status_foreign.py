"""status flags a registered Secret that holds another gateway's token (not only validate-registry --live).

A gateway token names its gateway in clear (`{gateway}&{expiry}&{signature}`), so a status read that
already fetches the Secret sees it for free. Such a target is not `stale`: a rotation would overwrite
the other gateway's token, so it is reported as `mismatch` with the reason, like `validate-registry
--live` does.
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
    assert flagged.error is not None and "gw-2" in flagged.error and "gw-1" in flagged.error
    assert other.value not in flagged.error and other.value not in str(status.to_dict())

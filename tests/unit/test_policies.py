from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rotation.core.convergence import Desired, TargetAction, doomed_by_roll, promotable, target_action
from rotation.core.model import KeyType, TokenInfo, TokenRecord
from rotation.core.renewal import key_type_for, new_expiry, renewal_reason
from rotation.core.token import GatewayToken

NOW = datetime(2026, 11, 26, 12, 0, 30, 123456, tzinfo=UTC)
WEEK = timedelta(days=7)


def record(expires: datetime, key: KeyType = KeyType.PRIMARY, gateway: str = "gw") -> TokenRecord:
    token = GatewayToken.parse(f"{gateway}&{expires:%Y%m%d%H%M}&c2lnbmF0dXJlc2lnbmF0dXJl")
    return TokenRecord(token=token, key_type=key, gateway_id="/x")


@pytest.mark.parametrize(
    ("left", "renew"),
    [
        (None, True),                                  # nothing stored
        (timedelta(minutes=-1), True),                 # expired
        (timedelta(0), True),                          # expiring now
        (timedelta(days=1), True),
        (WEEK - timedelta(minutes=1), True),           # just inside the window
        (WEEK, True),                                  # on the boundary: renew
        (WEEK + timedelta(minutes=1), False),          # just outside
        (timedelta(days=29), False),
    ],
)
def test_renew_window_boundaries(left: timedelta | None, renew: bool) -> None:
    now = NOW.replace(second=0, microsecond=0)
    current = None if left is None else record(now + left)
    assert (renewal_reason(current, now, WEEK) is not None) is renew


def test_force_always_renews() -> None:
    assert renewal_reason(record(NOW + timedelta(days=29)), NOW, WEEK, force=True) == "forced"


def test_reason_says_why() -> None:
    assert renewal_reason(None, NOW, WEEK) == "no token in Key Vault"
    assert "expired" in (renewal_reason(record(NOW - timedelta(hours=1)), NOW, WEEK) or "")
    assert "3d0h" in (renewal_reason(record(NOW + timedelta(days=3, minutes=1)), NOW, WEEK) or "")


@pytest.mark.parametrize("days", [1, 29, 30, 45])
def test_new_expiry_whole_minutes_and_capped_at_30_days(days: int) -> None:
    expiry = new_expiry(NOW, timedelta(days=days))
    assert expiry.second == 0 and expiry.microsecond == 0
    assert expiry <= NOW + timedelta(days=30)
    assert expiry > NOW + timedelta(days=min(days, 30)) - timedelta(minutes=1)


def test_key_type_precedence() -> None:
    secondary = record(NOW, KeyType.SECONDARY)
    assert key_type_for(KeyType.PRIMARY, secondary) is KeyType.PRIMARY
    assert key_type_for(None, secondary) is KeyType.SECONDARY
    assert key_type_for(None, None) is KeyType.PRIMARY
    assert KeyType.PRIMARY.other is KeyType.SECONDARY and KeyType.SECONDARY.other is KeyType.PRIMARY


def _desired(expires: datetime, gateway: str = "gw") -> tuple[Desired, str]:
    token = record(expires, gateway=gateway).token
    return Desired(gateway, token.fingerprint, token.expires_at), token.value


def test_target_actions() -> None:
    later = NOW + timedelta(days=29)
    desired, value = _desired(later)
    fmt = "GatewayKey {token}"
    assert target_action(f"GatewayKey {value}", desired, fmt) is TargetAction.IN_SYNC
    assert target_action(value, desired, fmt) is TargetAction.WRITE           # right token, wrong format
    assert target_action(value, desired, "{token}") is TargetAction.IN_SYNC
    assert target_action(None, desired, fmt) is TargetAction.WRITE
    assert target_action("garbage", desired, fmt) is TargetAction.WRITE
    _, older = _desired(NOW + timedelta(days=2))
    assert target_action(f"GatewayKey {older}", desired, fmt) is TargetAction.WRITE
    _, newer = _desired(NOW + timedelta(days=30))
    assert target_action(f"GatewayKey {newer}", desired, fmt) is TargetAction.NEWER   # never downgrade
    _, other_gateway = _desired(NOW + timedelta(days=30), gateway="other")
    # Another gateway's token: the registry is wrong, never overwrite (tests/service/test_foreign_tokens.py)
    assert target_action(f"GatewayKey {other_gateway}", desired, fmt) is TargetAction.FOREIGN
    _, other_expired = _desired(NOW - timedelta(days=1), gateway="other")
    assert target_action(other_expired, desired, fmt) is TargetAction.FOREIGN


def test_same_expiry_different_token_converges_to_key_vault() -> None:
    expires = NOW + timedelta(days=29)
    desired, _ = _desired(expires)
    sibling = GatewayToken.parse(f"gw&{expires:%Y%m%d%H%M}&b3RoZXJzaWduYXR1cmVvdGhlcg==")
    assert target_action(sibling.formatted(), desired, "GatewayKey {token}") is TargetAction.WRITE


def _info(r: TokenRecord, roll_from: KeyType | None = None) -> TokenInfo:
    return TokenInfo("s", "/x", r.key_type, r.token.expires_at, r.token.fingerprint, roll_from)


_D = timedelta(days=1)
_EARLY, _LATE, _LATEST = (record(NOW.replace(second=0, microsecond=0) + d * _D) for d in (27, 29, 28))


@pytest.mark.parametrize(
    ("versions", "held", "latest", "promoted"),
    [
        ([_EARLY, _LATE, _LATEST], [_LATE], _LATEST, _LATE),             # the race: promoted
        ([_EARLY, _LATE, _LATEST], [_EARLY], _LATEST, None),            # earlier: never
        ([_EARLY, _LATEST], [_LATE], _LATEST, None),                    # not one of Key Vault's versions
        ([_LATE, record(_LATEST.token.expires_at, KeyType.SECONDARY)],  # a key change since
         [_LATE], record(_LATEST.token.expires_at, KeyType.SECONDARY), None),
        ([_EARLY, _LATE, _LATEST], [_LATE, _EARLY], _LATEST, _LATE),     # the latest-expiring one wins
        ([_LATE, _LATEST], [record(_LATE.token.expires_at, gateway="other")], _LATEST, None),  # other gateway
    ],
)
def test_promotable(versions: list[TokenRecord], held: list[TokenRecord], latest: TokenRecord,
                    promoted: TokenRecord | None) -> None:
    got = promotable(latest, [_info(v) for v in versions], [h.token for h in held], "gw")
    assert got == (promoted.token if promoted else None)


def test_nothing_is_promoted_while_a_key_roll_is_pending() -> None:
    rolling = TokenRecord(_LATEST.token, KeyType.SECONDARY, "/x", roll_from=KeyType.PRIMARY)
    assert promotable(rolling, [_info(_LATE), _info(rolling, KeyType.PRIMARY)], [_LATE.token], "gw") is None
    # a version written during a roll marks a key change: what came before it is not promoted
    done = TokenRecord(_LATEST.token, KeyType.SECONDARY, "/x")
    late_secondary = record(_LATE.token.expires_at, KeyType.SECONDARY)
    assert promotable(done, [_info(late_secondary), _info(rolling, KeyType.PRIMARY), _info(done)],
                      [late_secondary.token], "gw") is None


def test_a_doomed_later_token_is_replaced_during_a_key_roll() -> None:
    later_primary = _LATE
    desired = Desired("gw", _LATEST.token.fingerprint, _LATEST.token.expires_at)
    assert target_action(later_primary.token.value, desired, "{token}") is TargetAction.NEWER
    doomed = doomed_by_roll([_info(later_primary), _info(record(_EARLY.token.expires_at, KeyType.SECONDARY))],
                            KeyType.PRIMARY)
    assert doomed == {later_primary.token.fingerprint}
    assert target_action(later_primary.token.value, desired, "{token}", doomed) is TargetAction.WRITE

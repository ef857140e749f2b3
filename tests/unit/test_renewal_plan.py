"""The renewal plan and the deadline as pure decisions: what a reconcile does with Key Vault's token
before it looks at any target, decided from what was read, the time and the request alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from rotation.core.deadline import Deadline
from rotation.core.errors import UpstreamError
from rotation.core.model import KeyType, TokenInfo, TokenRecord
from rotation.core.renewal import fresh_in_listing, plan_renewal
from rotation.core.restarts import Heal, heal_needed
from rotation.core.token import GatewayToken

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
P, S = KeyType.PRIMARY, KeyType.SECONDARY


def record(days: float, key: KeyType = P, roll_from: KeyType | None = None) -> TokenRecord:
    token = GatewayToken.parse(f"gw&{NOW + timedelta(days=days):%Y%m%d%H%M}&c2lnbmF0dXJlc2lnbmF0dXJl")
    return TokenRecord(token, key, "gw-id", roll_from=roll_from)


def info(days: float, key: KeyType = P, roll_from: KeyType | None = None) -> TokenInfo:
    r = record(days, key, roll_from)
    return TokenInfo("gw-token", "gw-id", key, r.token.expires_at, r.token.fingerprint, roll_from=roll_from)


def test_a_fresh_token_stays_on_its_own_key_even_if_the_registry_pins_the_other() -> None:
    plan = plan_renewal(record(20, S), NOW, WEEK, configured=P)
    assert plan.keeps and plan.key_type is S and plan.roll_from is None and not plan.adopt


def test_a_token_due_for_renewal_is_minted_with_the_registry_key() -> None:
    plan = plan_renewal(record(3, S), NOW, WEEK, configured=P)
    assert not plan.keeps and plan.key_type is P and "expires in 3d0h" in (plan.reason or "")


def test_a_pending_roll_is_carried_forward_and_signs_with_the_surviving_key() -> None:
    """A forced rotate during a roll from primary signs with secondary whatever the registry pins."""
    plan = plan_renewal(record(20, S, roll_from=P), NOW, WEEK, configured=P, force=True)
    assert plan.reason == "forced" and plan.key_type is S and plan.roll_from is P


def test_a_key_roll_replaces_a_fresh_token_of_the_retiring_key() -> None:
    plan = plan_renewal(record(20, P), NOW, WEEK, key_type=S, roll_from=P)
    assert plan.reason == "key roll to secondary" and plan.key_type is S and plan.roll_from is P


def test_a_roll_starting_on_a_token_already_of_the_surviving_key_rewrites_it_with_the_tag() -> None:
    plan = plan_renewal(record(20, S), NOW, WEEK, key_type=S, roll_from=P)
    assert plan.reason == "key roll from primary starts" and plan.roll_from is P


def test_a_resumed_roll_keeps_its_own_token() -> None:
    plan = plan_renewal(record(20, S, roll_from=P), NOW, WEEK, key_type=S, roll_from=P)
    assert plan.keeps and plan.key_type is S and plan.roll_from is P


@pytest.mark.parametrize(("force", "key_type", "adopt"), [(False, None, True), (True, None, False), (False, S, False)])
def test_only_a_routine_reconcile_of_an_empty_key_vault_adopts(force: bool, key_type: KeyType | None,
                                                                 adopt: bool) -> None:
    plan = plan_renewal(None, NOW, WEEK, force=force, key_type=key_type, roll_from=P if key_type else None,
                        adopt_existing=True)
    assert not plan.keeps and plan.adopt is adopt
    assert not plan_renewal(None, NOW, WEEK).adopt  # adoption not enabled


def test_the_sweep_listing_skips_the_read_only_for_a_fresh_untagged_token() -> None:
    fresh = fresh_in_listing(info(20), "gw", NOW, WEEK)
    assert fresh is not None and fresh.expires_at == record(20).token.expires_at
    assert fresh_in_listing(info(3), "gw", NOW, WEEK) is None                  # due for renewal
    assert fresh_in_listing(info(20, S, roll_from=P), "gw", NOW, WEEK) is None  # a roll is pending
    assert fresh_in_listing(info(20), "gw", NOW, WEEK, force=True) is None
    assert fresh_in_listing(info(20), "gw", NOW, WEEK, key_type=S) is None
    assert fresh_in_listing(replace(info(20), fingerprint=None), "gw", NOW, WEEK) is None
    assert fresh_in_listing(None, "gw", NOW, WEEK) is None


def test_a_heal_is_dropped_when_the_instance_already_runs_key_vaults_token() -> None:
    stored = record(20).token.expires_at
    assert heal_needed(Heal(instance_expires_at=stored), stored) is None
    assert heal_needed(Heal(instance_expires_at=stored - timedelta(days=1)), stored) is not None
    assert heal_needed(Heal(), stored) is not None  # an event without an expiry is taken at its word
    assert heal_needed(Heal(), None) is None        # nothing to heal to (a dry run that would mint)


def test_the_deadline_runs_on_the_clock_it_is_given() -> None:
    now = [100.0]
    deadline = Deadline.after(5, lambda: now[0])
    assert deadline.check("a step") == 5
    now[0] = 104.5
    assert deadline.left() == pytest.approx(0.5)
    now[0] = 105.0
    assert deadline.left() == 0
    with pytest.raises(UpstreamError, match="deadline passed before writing Key Vault"):
        deadline.check("writing Key Vault")

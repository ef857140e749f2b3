"""A value is gateway G's token because of where it came from, never because of what it says.

G is the gateway's full ARM id, never its bare name (dev, staging and prod APIM services share gateway
names). A value is G's token only if it is one of G's Key Vault versions this product wrote (tagged with
G's full id), or ARM reproduces it: `generateToken` for G with the value's own expiry minute and one of
G's keys returns exactly it (HMAC is deterministic: "Gateway - Generate Token",
learn.microsoft.com/rest/api/apimanagement/current-ga/gateway/generate-token). That same page caps a
token's expiry at 30 days ("Maximum token expiry time is set to 30 days"), so a value expiring later
than now + 30 days cannot be a token at all. Anything else is unverified: never `newer`, never adopted,
never promoted. A registered target holding an unverified value is overwritten with G's token; a
target holding a verified token of ANOTHER registered gateway is never overwritten (failed, naming
both); one Secret key registered under two gateways is refused when the registry loads.

Each test states the case of the review it reproduces (planted Secret, forged far-future token, same
name in another service, and adoption's proof on a transient ARM error).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from rotation import bootstrap
from rotation.core.errors import RegistryError, RotationError, UpstreamError
from rotation.core.model import GatewayConfig, KeyType, Outcome, Registry, SyncState
from rotation.core.registry import load_registry
from rotation.core.token import parse_stored
from rotation.settings import Settings
from tests.functions.conftest import deliver
from tests.functions.test_event_handler import expired_cloudevent
from tests.samples import SERVICE_ID, gateway, gateway_id, registry, target
from tests.service.conftest import World
from tests.service.product import Rotator, assert_no_token, fingerprints, forged, instance, signed_by

DAY = timedelta(days=1)
STAGING_ID = SERVICE_ID.replace("/service/contoso-apim", "/service/staging-apim")
WEST = ("gateways", "gw1-token")


@pytest.fixture
def app_world() -> Iterator[World]:
    """The World behind the indexed functions (as tests/functions/conftest.py sets it up)."""
    world = World()
    settings = Settings(registry=world.registry, key_vault_url="https://kv.example", deadline_seconds=5)
    with bootstrap.using(world.rotator, settings):
        yield world


def assert_all_hold_key_vaults_verified_token(world: World, config: GatewayConfig) -> None:
    stored = world.store.get(config.key_vault_secret)
    assert stored is not None and signed_by(world, config, stored.token) is not None
    assert [parse_stored(v) for v in world.held(config)] == [stored.token] * len(config.targets)


# --- forged far-future token (case 2) -----------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason="a forged far-future token is trusted by the expiry written in it: "
                                       "the target is `newer` and a forced rotation leaves it")
def test_a_forced_rotation_overwrites_a_forged_far_future_token(world: World) -> None:
    """Case 2: anyone with patch on one Secret writes `gw-1&209912312359&<random>`; `rotate --force`
    (the leak response) must replace it and say so, not report `newer` and succeed."""
    world.seed_token(world.gw1, 20 * DAY)
    fake = forged("gw-1")
    world.west.secrets[WEST].data["value"] = fake
    report = world.rotator.reconcile(world.gw1, reason="suspected leak", deadline_seconds=5, force=True)
    assert [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.UPDATED] and report.ok
    assert_all_hold_key_vaults_verified_token(world, world.gw1)
    assert_no_token(report, fake, world.held(world.gw1)[1] or "")


@pytest.mark.xfail(strict=True, reason="the sweep reports a forged far-future token `newer` and leaves it")
def test_the_sweep_overwrites_a_forged_far_future_token(world: World) -> None:
    """Case 2: the daily sweep must repair a forged value too (Key Vault's token is fresh: the fast path)."""
    world.seed_token(world.gw1, 20 * DAY)
    world.seed_token(world.gw2, 20 * DAY)
    fake = forged("gw-1")
    world.west.secrets[WEST].data["value"] = fake
    sweep = world.rotator.sweep(deadline_seconds=5)
    gw1 = next(r for r in sweep.reports if r.gateway_id == world.gw1.ref.id)
    assert [t.outcome for t in gw1.targets] == [Outcome.IN_SYNC, Outcome.UPDATED]
    assert_all_hold_key_vaults_verified_token(world, world.gw1)
    assert_no_token(sweep, fake)


@pytest.mark.xfail(strict=True, reason="a value expiring beyond now + 30 days is taken as a later token "
                                       "(`newer`), though generateToken never issues one")
def test_a_value_expiring_beyond_thirty_days_is_no_token_even_if_signed_with_the_gateways_key(world: World) -> None:
    """Case 2, the 30-day rule: even a value ARM's key really signed (ARM refuses such an expiry, so it
    was never issued) cannot be a token when it expires after now + 30 days: it is overwritten."""
    world.seed_token(world.gw1, 20 * DAY)
    impossible = world.issuer.generate_token(world.gw1.ref, KeyType.PRIMARY, (world.now + 400 * DAY).replace(second=0))
    world.west.secrets[WEST].data["value"] = impossible
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert [t.outcome for t in report.targets] == [Outcome.IN_SYNC, Outcome.UPDATED]
    assert_all_hold_key_vaults_verified_token(world, world.gw1)


@pytest.mark.xfail(strict=True, reason="a forged far-future token in a target keeps the key roll pending "
                                       "(`newer`) for ever")
def test_a_forged_token_does_not_hold_a_key_roll_pending(world: World) -> None:
    """Case 2: the compromise response must not be blockable by whoever can patch one Secret."""
    leaked = world.seed_token(world.gw1, 20 * DAY, key=KeyType.PRIMARY)
    world.west.secrets[WEST].data["value"] = forged("gw-1")
    report = world.rotator.roll_keys(world.gw1, from_key=KeyType.PRIMARY, confirm_restarted=True,
                                     deadline_seconds=5, rollout_wait_seconds=0)
    assert report.phase.value == "completed" and report.regenerated, report.pending
    assert_all_hold_key_vaults_verified_token(world, world.gw1)
    assert signed_by(world, world.gw1, leaked) is None


@pytest.mark.xfail(strict=True, reason="an Expired event is acknowledged while a target holds a forged "
                                       "far-future token (reported `newer`)")
def test_an_expired_event_is_not_acknowledged_while_a_target_holds_a_forged_token(app_world: World) -> None:
    """Case 2 through the Event Grid handler (azure-functions' EventGridEventInConverter): acknowledging
    means Event Grid never redelivers, so it may only happen once every target holds G's token."""
    world = app_world
    world.seed_token(world.gw1, 20 * DAY)
    world.west.secrets[WEST].data["value"] = forged("gw-1")
    try:
        deliver(expired_cloudevent())
        acknowledged = True
    except RotationError:
        acknowledged = False
    verified = [signed_by(world, world.gw1, v) is not None for v in world.held(world.gw1)]
    assert all(verified) or not acknowledged, verified
    if not acknowledged:  # Event Grid redelivers it
        deliver(expired_cloudevent())
    assert_all_hold_key_vaults_verified_token(world, world.gw1)


# --- planted value at onboarding (cases 1 and 2: never adopted) ------------------------------------


def test_onboarding_never_adopts_a_planted_token_it_cannot_prove(world: World) -> None:
    """Case 1's planted value in a registered target at onboarding (Key Vault empty): ARM does not
    reproduce it, so a token is minted and written over it. (Holds today; kept as the rule's guard.)"""
    rotator = instance(world, adopt_existing=True)
    planted = forged("gw-1", (world.now + 25 * DAY).strftime("%Y%m%d%H%M"))
    world.east.secrets[("apim", "gw1-token")].data["config.service.auth.key"] = f"GatewayKey {planted}"
    report = rotator.reconcile(world.gw1, reason="onboarding", deadline_seconds=5)
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and stored.token.fingerprint not in fingerprints([planted]) and stored.origin is None
    assert [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.UPDATED]
    assert_all_hold_key_vaults_verified_token(world, world.gw1)


@pytest.mark.xfail(strict=True, reason="at onboarding a planted token expiring after the minted one stays "
                                       "in its target (`newer`), never verified")
def test_onboarding_overwrites_a_planted_token_expiring_after_the_minted_one(world: World) -> None:
    """Cases 1-2: an unproven value that claims a later expiry than the new token is still no token."""
    rotator = instance(world, adopt_existing=True)
    planted = forged("gw-1", (world.now + timedelta(days=29, hours=20)).strftime("%Y%m%d%H%M"))
    world.east.secrets[("apim", "gw1-token")].data["config.service.auth.key"] = f"GatewayKey {planted}"
    report = rotator.reconcile(world.gw1, reason="onboarding", deadline_seconds=5)
    assert [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.UPDATED]
    assert_all_hold_key_vaults_verified_token(world, world.gw1)
    assert_no_token(report, planted)


# --- same gateway name in another APIM service (case 3) --------------------------------------------


def two_services(world: World) -> tuple[Rotator, GatewayConfig, GatewayConfig]:
    """prod's gw-1 (contoso-apim) and staging's gw-1 (staging-apim), both registered, other Secrets."""
    both: Registry = load_registry(registry(
        gateway("gw-1", target("east", "gw1-token", restart=["deployment/gw1"])),
        gateway("gw-1", target("east", "gw1-token", namespace="staging"), id=gateway_id("gw-1", STAGING_ID)),
    ))
    world.east.seed("staging", "gw1-token", {})
    prod, staging = both.gateways
    assert prod.ref.id != staging.ref.id and prod.ref.gateway == staging.ref.gateway
    return instance(world, registry=both), prod, staging


@pytest.mark.xfail(strict=True, reason="a token is matched to a gateway by its bare name: prod overwrites a "
                                       "Secret holding staging's token of the same-named gateway")
def test_a_target_holding_the_same_named_gateways_token_of_another_service_is_never_overwritten(
        world: World) -> None:
    """Case 3: prod's registry entry names the Secret staging's gw-1 really reads (its token, verified:
    one of staging's Key Vault versions). Overwriting it cuts staging off; the target fails instead,
    naming both gateways."""
    rotator, prod, staging = two_services(world)
    theirs = world.seed_token(staging, 10 * DAY)
    world.seed_token(prod, 20 * DAY, everywhere=False)
    world.east.secrets[("apim", "gw1-token")].data["config.service.auth.key"] = theirs.formatted()
    report = rotator.reconcile(prod, reason="t", deadline_seconds=5)
    (only,) = report.targets
    assert only.outcome is Outcome.FAILED and not report.ok
    assert "staging-apim" in (only.error or "") and "contoso-apim" in (only.error or "")
    assert fingerprints([world.east.value("apim", "gw1-token", "config.service.auth.key")]) == [theirs.fingerprint]
    assert world.east.restarts.get(("apim", "deployment/gw1"), []) == []
    assert_no_token(report, theirs.value)


@pytest.mark.xfail(strict=True, reason="status compares bare gateway names: the other service's token "
                                       "shows as plain `stale`, not a registry mismatch naming it")
def test_status_calls_the_other_services_token_a_mismatch_naming_it(world: World) -> None:
    """Case 3, `status`: the registry, not the token, is wrong; say which gateway's token it is."""
    rotator, prod, staging = two_services(world)
    theirs = world.seed_token(staging, 10 * DAY)
    world.seed_token(prod, 20 * DAY, everywhere=False)
    world.east.secrets[("apim", "gw1-token")].data["config.service.auth.key"] = theirs.formatted()
    (status,) = rotator.status([prod], timeout=5)
    (only,) = status.targets
    assert only.state is SyncState.MISMATCH and not status.healthy
    assert "staging-apim" in (only.error or "")
    assert_no_token(status, theirs.value)


def test_a_target_holding_another_registered_gateways_verified_token_is_never_overwritten(world: World) -> None:
    """Case 3's other half, within one service: gw-2's own token (its Key Vault version) in a gw-1 target
    is a registry mistake, not drift: failed, naming both, nothing written. (Holds today; kept as the
    rule's guard while matching moves from names to full ids.)"""
    theirs = world.seed_token(world.gw2, 10 * DAY)
    world.seed_token(world.gw1, 20 * DAY, everywhere=False)
    world.west.secrets[WEST].data["value"] = theirs.value
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    east, west = report.targets
    assert east.outcome is Outcome.UPDATED and west.outcome is Outcome.FAILED and not report.ok
    assert "gw-2" in (west.error or "") and "gw-1" in (west.error or "")
    assert fingerprints([world.west.value(*WEST, "value")]) == [theirs.fingerprint]
    assert_no_token(report, theirs.value)


@pytest.mark.xfail(strict=True, reason="the registry accepts one Secret key registered under two gateways")
def test_one_secret_key_under_two_gateways_is_refused_when_the_registry_loads() -> None:
    """Case 3: two gateways writing one key would overwrite each other for ever."""
    with pytest.raises(RegistryError, match="gw1-token"):
        load_registry(registry(
            gateway("gw-1", target("east", "gw1-token")),
            gateway("gw-1", target("east", "gw1-token"), id=gateway_id("gw-1", STAGING_ID)),
        ))


# --- adoption's proof on a transient ARM error (case 10) -------------------------------------------


@pytest.mark.parametrize("signed_by", [KeyType.PRIMARY, KeyType.SECONDARY])
@pytest.mark.xfail(strict=True, reason="adoption turns one transient ARM error into a mint (it neither "
                                       "retries nor tries the other key)")
def test_adoption_retries_a_transient_arm_error_and_tries_the_other_key(world: World, signed_by: KeyType) -> None:
    """Case 10: onboarding over a valid token the targets run; ARM answers the first generateToken with
    a transient error. Proving the token must go on (retry, other key) within the deadline: minting
    instead rewrites every target and restarts every pod for nothing."""
    rotator = instance(world, adopt_existing=True)
    held = world.issuer.generate_token(world.gw1.ref, signed_by, (world.now + 20 * DAY).replace(second=0))
    world.east.secrets[("apim", "gw1-token")].data["config.service.auth.key"] = f"GatewayKey {held}"
    world.west.secrets[WEST].data["value"] = held
    world.issuer.calls.clear()
    world.issuer.faults.queue["generateToken"] = [UpstreamError("ARM answered 503 (ServiceUnavailable)")]
    report = rotator.reconcile(world.gw1, reason="onboarding", deadline_seconds=5)
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and [stored.token.fingerprint] == fingerprints([held])
    assert stored.key_type is signed_by
    assert world.east.writes == 0 and world.west.writes == 0 and report.ok
    assert world.east.restarts.get(("apim", "deployment/gw1"), []) == []

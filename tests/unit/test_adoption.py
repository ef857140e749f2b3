"""Adoption through the reconcile, over in-memory ports: Key Vault is empty and the targets already
run a token (a 30-day one from the portal). The first reconcile stores that token instead of
minting a 29-day one its targets would call older, and only when ARM reproduces it from one of the
gateway's keys (same gateway and expiry, same key → same HMAC signature)."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from rotation.app.adoption import adopt, choose
from rotation.app.context import Scope, deadline
from rotation.core.model import KeyType, Outcome
from rotation.core.status import TargetStatus
from rotation.core.token import GatewayToken
from tests.memory import sign
from tests.service.conftest import World


@pytest.fixture
def world() -> World:
    w = World()
    w.rotator.adopt_existing = True
    return w


def portal_token(world: World, days: float, key: KeyType = KeyType.PRIMARY, gateway: str = "gw-1") -> GatewayToken:
    config = world.gw1
    expiry = (world.now + timedelta(days=days)).replace(second=0, microsecond=0)
    return GatewayToken.parse(sign(gateway, expiry, world.issuer.key(config.ref, key)))


def put(world: World, index: int, value: str) -> None:
    t = world.gw1.targets[index]
    world.cluster(t.cluster).secrets[(t.namespace, t.secret)].data[t.key] = value


def test_first_reconcile_adopts_the_newest_verified_token_the_targets_run(world: World) -> None:
    newest, older = portal_token(world, 30, KeyType.SECONDARY), portal_token(world, 20)
    put(world, 0, f"GatewayKey {older.value}")
    put(world, 1, newest.value)  # raw format target

    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)

    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and stored.token.value == newest.value
    assert stored.key_type is KeyType.SECONDARY  # proven: the primary key did not reproduce it
    assert stored.origin == "adopted from west/gateways/gw1-token (secondary key, verified by ARM)"
    assert not report.rotated and report.fingerprint == newest.fingerprint
    assert [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.IN_SYNC]
    assert world.held(world.gw1) == [f"GatewayKey {newest.value}", newest.value]
    # The reproduction calls only: no token was minted for the targets.
    assert world.issuer.generated == 2
    statuses = world.rotator.status([world.gw1])
    assert statuses[0].healthy, [TargetStatus.to_dict(t) for t in statuses[0].targets]


def test_a_token_no_key_reproduces_is_not_adopted(world: World) -> None:
    """Signed with a key since regenerated (or another gateway's): minting is the safe answer."""
    foreign = GatewayToken.parse(sign("gw-1", (world.now + timedelta(days=30)).replace(second=0), b"old-key"))
    put(world, 0, f"GatewayKey {foreign.value}")
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    stored = world.store.get(world.gw1.key_vault_secret)
    assert report.rotated and stored is not None and stored.origin is None
    assert stored.token.value != foreign.value
    # Nothing vouches for it (no Key Vault version, ARM does not reproduce it): it is overwritten, never
    # kept as `newer` (a value anyone can write would otherwise hold renewals off until its expiry).
    assert report.targets[0].outcome is Outcome.UPDATED
    assert world.held(world.gw1)[0] == stored.token.formatted()


def test_tokens_due_for_renewal_are_not_adopted_and_nothing_is_reproduced(world: World) -> None:
    put(world, 0, f"GatewayKey {portal_token(world, 5).value}")
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    assert report.rotated and world.issuer.generated == 1  # the new token only
    assert all(t.outcome is Outcome.UPDATED for t in report.targets)


def test_choose_writes_nothing_and_lists_what_it_considered(world: World) -> None:
    foreign = GatewayToken.parse(sign("gw-1", (world.now + timedelta(days=25)).replace(second=0), b"unknown"))
    put(world, 1, foreign.value)
    adopted, considered = choose(world.rotator.deps, world.gw1, world.now, lambda what: 5.0)
    assert adopted is None and [c.token.fingerprint for c in considered] == [foreign.fingerprint]
    assert adopt(world.rotator.deps, Scope(world.gw1, deadline(5)), world.now) is None
    assert world.store.get(world.gw1.key_vault_secret) is None and world.store.calls == [("get", world.gw1.key_vault_secret)]


def test_dry_run_and_forced_rotations_do_not_adopt(world: World) -> None:
    put(world, 0, f"GatewayKey {portal_token(world, 30).value}")
    world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5, dry_run=True)
    assert world.store.get(world.gw1.key_vault_secret) is None and world.issuer.generated == 0
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5, force=True)
    stored = world.store.get(world.gw1.key_vault_secret)
    assert report.rotated and stored is not None and stored.origin is None


def test_a_non_deterministic_generate_token_proves_nothing_and_the_reconcile_mints(world: World) -> None:
    """Adoption rests on ARM returning the same token for the same gateway, key and expiry (an HMAC,
    as Microsoft documents APIM's SAS tokens; not documented for gateway tokens). If generateToken
    were not deterministic (a nonce, a timestamp inside the signature), no candidate would ever be
    reproduced: nothing is adopted, the reconcile mints exactly as without adoption, and the targets'
    later-expiring token, which nothing can verify then, is overwritten with the minted one (never
    `newer`): safe, the pods restart onto a token ARM just issued."""
    import secrets as random

    real = world.issuer.generate_token

    def salted(gateway: object, key_type: KeyType, expiry: object, timeout: float | None = None) -> str:
        name, stamp, _ = real(gateway, key_type, expiry, timeout).split("&")  # type: ignore[arg-type]
        return f"{name}&{stamp}&{base64.b64encode(random.token_bytes(64)).decode()}"

    world.issuer.generate_token = salted  # type: ignore[method-assign]
    held = portal_token(world, 30)
    put(world, 0, f"GatewayKey {held.value}")
    report = world.rotator.reconcile(world.gw1, reason="t", deadline_seconds=5)
    stored = world.store.get(world.gw1.key_vault_secret)
    assert report.rotated and stored is not None and stored.origin is None and stored.token.value != held.value
    # Adoption's two reproduction attempts (primary, secondary), the mint, then the reconcile's own
    # provenance check of the held later-expiring value tries both keys again (adoption's failed
    # attempts are not shared with it).
    assert world.issuer.generated == 5
    assert report.targets[0].outcome is Outcome.UPDATED and world.held(world.gw1)[0] == stored.token.formatted()


def test_no_adoption_while_a_key_roll_is_pending(world: World) -> None:
    """A key roll lives in Key Vault's tags (keyRollFrom): with no Key Vault token there is no roll,
    and the roll's own reconcile (key_type / roll_from given) never adopts, even if Key Vault is empty."""
    from rotation.app.reconcile import Reconcile, Request

    put(world, 0, f"GatewayKey {portal_token(world, 30).value}")
    request = Request("key roll", key_type=KeyType.SECONDARY, roll_from=KeyType.PRIMARY)
    report = Reconcile(world.rotator.deps, world.gw1, request, deadline(5), 0.0).run()
    stored = world.store.get(world.gw1.key_vault_secret)
    assert report.rotated and stored is not None and stored.origin is None
    assert stored.key_type is KeyType.SECONDARY and stored.roll_from is KeyType.PRIMARY
    # Minted with the key rolled to; the one reproduction is the reconcile's provenance check of the
    # held value (ARM reproduces it with the retiring primary key), not an adoption: it is overwritten.
    assert world.issuer.generated == 2
    assert report.targets[0].outcome is Outcome.UPDATED and world.held(world.gw1)[0] == stored.token.formatted()

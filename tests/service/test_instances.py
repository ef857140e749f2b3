"""Thinking in instances: several Rotators (Flex Consumption instances and the
operator's CLI) over the same Key Vault, clusters and lease store, and holders that pause or die.

A "pause" is what a stop-the-world GC, a frozen VM or a slow rollout wait does to a lease holder: its
lease runs out while it is not looking, another instance takes it, and the paused one resumes in the
middle of a reconcile. Blob Storage lets the old holder renew only "as long as the blob has not been
leased again since the expiration" (Blob REST "Lease Blob", learn.microsoft.com/rest/api/storageservices/
lease-blob; azure-storage-blob `_lease.py` BlobLeaseClient.renew), which `LocalLease` reproduces with
a clock the test moves.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from rotation import bootstrap, replay
from rotation.adapters.deadletter import DeadLetter, DeadLetteredEvent
from rotation.adapters.lease import LocalLease
from rotation.app.rotator import Rotator
from rotation.core.errors import UpstreamError
from rotation.core.fencing import FenceHead
from rotation.core.model import GatewayRef, KeyType, Outcome, SyncState
from rotation.core.restarts import Heal
from rotation.core.status import KeyRollPhase
from rotation.settings import Settings
from tests.samples import SERVICE_ID, gateway_id
from tests.service.conftest import World
from tests.service.test_roll_sequences import assert_roll_invariant

DAY = timedelta(days=1)


@dataclass
class Monotonic:
    """The lease holders' monotonic clock; `pause` is time the process did not see pass."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


def instance(world: World, lease: LocalLease) -> Rotator:
    """Another function instance (or the CLI): its own Rotator over the same Key Vault and clusters."""
    return Rotator(registry=world.registry, issuer=world.issuer, store=world.store, clusters=world.rotator.clusters,
                   clock=lambda: world.now, lease=lease)


def test_a_reconcile_paused_past_its_lease_does_not_write_after_another_holder_took_it(world: World) -> None:
    """Instance A forces a rotate (registry pins primary) and pauses after ARM answered, past its lease;
    the operator's roll --from primary takes the expired lease, completes and regenerates primary. A
    must not then store its primary token (now dead) in Key Vault or any target."""
    clock = Monotonic()
    leases = LocalLease(clock=clock)
    a, b = instance(world, leases), instance(world, leases)
    gw1 = replace(world.gw1, key_type=KeyType.PRIMARY)
    world.seed_token(gw1, 20 * DAY, key=KeyType.PRIMARY)
    real = world.issuer.generate_token
    rolled: list[KeyRollPhase] = []

    def generate(ref: GatewayRef, key: KeyType, expiry: Any, timeout: float | None = None) -> str:
        value = real(ref, key, expiry, timeout)
        if not rolled:
            rolled.append(KeyRollPhase.PLANNED)
            clock.pause(45)  # A stops here, longer than its 30 s lease
            report = b.roll_keys(gw1, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=0,
                                 confirm_restarted=True)
            rolled.append(report.phase)
        return value

    world.issuer.generate_token = generate  # type: ignore[method-assign,assignment]
    with pytest.raises(UpstreamError, match=r"lease .* was lost"):
        a.reconcile(gw1, reason="forced on A", force=True, deadline_seconds=5)
    assert rolled[-1] is KeyRollPhase.COMPLETED
    latest = world.store.get(gw1.key_vault_secret)
    assert latest is not None and world.issuer.verify(gw1.ref, latest.token.value) is KeyType.SECONDARY
    assert_roll_invariant(world, gw1, KeyType.PRIMARY)


def test_phase_2_does_not_regenerate_once_the_lease_was_lost_and_says_the_roll_is_pending(world: World) -> None:
    """The roll pauses during its rollout wait past its lease; another instance takes the lease (and
    holds it). The roll must not call regenerateKey, and reports pending rather than crashing."""
    clock = Monotonic()
    leases = LocalLease(clock=clock)
    roller = instance(world, leases)
    world.seed_token(world.gw1, 20 * DAY)
    real = world.east.rollout
    taken: list[object] = []

    def rollout(namespace: str, workload: object, timeout: float | None = None) -> object:
        if not taken:
            clock.pause(45)
            taken.append(leases.acquire("contoso-apim/gw-1", duration=30, wait=0))  # another instance
        return real(namespace, workload, timeout)  # type: ignore[arg-type]

    world.east.rollout = rollout  # type: ignore[method-assign,assignment]
    report = roller.roll_keys(world.gw1, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=0,
                              confirm_restarted=True)
    assert taken and ("regenerateKey", world.gw1.ref.id) not in world.issuer.calls
    assert report.phase is KeyRollPhase.PENDING and not report.regenerated
    assert any("lease" in p and "lost" in p and "roll-keys" in p for p in report.pending), report.pending
    stored = world.store.get(world.gw1.key_vault_secret)
    assert stored is not None and stored.roll_from is KeyType.PRIMARY  # still pending for the next run


def test_fifty_events_on_ten_instances_restart_each_stale_workload_once(world: World) -> None:
    """APIM sends one event per gateway instance and Event Grid spreads them over function instances:
    the rate limit must hold across instances (it reads the workload's own restartedAt)."""
    world.east.restarts[("apim", "deployment/gw1")] = [world.now - DAY]
    world.seed_token(world.gw1, 20 * DAY)
    world.now += timedelta(hours=1)
    leases = LocalLease()  # stands for the shared blob container
    instances = [instance(world, leases) for _ in range(10)]
    errors: list[BaseException] = []

    def deliver(rotator: Rotator, n: int) -> None:
        for i in range(5):
            try:
                rotator.reconcile(world.gw1, reason="event", deadline_seconds=10,
                                  heal=Heal(instance=f"gw1-pod-{n}-{i}", instance_expires_at=world.now))
            except BaseException as exc:  # collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(r, n)) for n, r in enumerate(instances)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(world.east.restarts[("apim", "deployment/gw1")]) == 2  # the seeded one, plus one heal
    assert world.store.writes == 0 and world.east.writes == 0


def dead(world: World, gateway: str, pod: str, expires: str) -> DeadLetteredEvent:
    return DeadLetteredEvent({
        "id": f"ev-{pod}", "topic": SERVICE_ID, "subject": f"/gateways/{gateway}/{pod}",
        "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry", "eventTime": "2026-11-26T08:56:12Z",
        "dataVersion": "1", "data": {"gatewayInfo": {"gatewayId": gateway_id(gateway), "instanceId": pod},
                                     "tokenInfo": {"expiresAtUtc": expires}}},
        reason="MaxDeliveryAttemptsExceeded", delivery_attempts=30)


def test_a_replayed_event_for_a_current_gateway_heals_like_a_live_one_and_names_the_instance(world: World) -> None:
    """Dead-lettered NearExpiry events whose gateway Key Vault and the Secrets hold current: the pods
    named still run an old token, so replay restarts the stale workloads (once per gateway, however
    many events) and, for a target with no restart list, keeps the blob with what to do."""
    world.east.restarts[("apim", "deployment/gw1")] = [world.now - DAY]
    world.seed_token(world.gw1, 20 * DAY)
    world.now += timedelta(hours=1)
    letter = DeadLetter("2026/11/26/a.json", None, events=(
        dead(world, "gw-1", "gw1-pod-a", "2026-11-27T08:56:00Z"), dead(world, "gw-1", "gw1-pod-b", "2026-11-27T08:56:00Z")))
    settings = Settings(registry=world.registry, key_vault_url="https://kv.example", deadline_seconds=5)
    with bootstrap.using(world.rotator, settings) as box:
        blobs, groups = replay._collect([letter], box)
        reports = replay._reconcile(groups, box, dry_run=False)
    (report,) = reports.values()
    east, west = report.targets
    assert east.restarted == ("deployment/gw1",)
    assert len(world.east.restarts[("apim", "deployment/gw1")]) == 2
    assert west.outcome is Outcome.FAILED and "no `restart` list" in (west.error or "")
    assert report.instance is not None and "gw1-pod-a" in report.instance
    assert [e.outcome for e in blobs[0].events] == ["failed", "failed"]  # kept for the operator
    assert world.store.writes == 0 and world.east.writes == 0 and world.west.writes == 0


def test_status_is_not_healthy_when_key_vaults_token_has_expired(world: World) -> None:
    """Every target holds Key Vault's token, but it expired: nothing verifies, so not healthy."""
    world.seed_token(world.gw2, 2 * DAY)
    assert world.rotator.status([world.gw2])[0].healthy
    world.now += 3 * DAY
    (status,) = world.rotator.status([world.gw2])
    assert not status.healthy and "expired" in (status.error or "")


def test_status_is_not_healthy_while_a_restart_is_pending(world: World) -> None:
    """The Secret holds the token but its workloads' restart onto it never happened (the writer died
    between its Secret write and its restart): the pod template still names the token it was restarted
    for before, so the pods run that one."""
    world.rotator.reconcile(world.gw1, reason="first", deadline_seconds=5)
    restarted_for = world.east.fingerprints[("apim", "deployment/gw1")]
    world.now += timedelta(minutes=5)
    world.east.faults.queue["restart"] = [UpstreamError("the writer died before restarting")]
    forced = world.rotator.reconcile(world.gw1, reason="forced", deadline_seconds=5, force=True)
    assert forced.targets[0].outcome is Outcome.FAILED and forced.fingerprint not in (None, restarted_for)
    token = world.store.get(world.gw1.key_vault_secret)
    assert token is not None and token.token.fingerprint == forced.fingerprint
    (status,) = world.rotator.status([world.gw1])
    east = status.targets[0]
    assert east.state is SyncState.IN_SYNC and east.restart_pending == forced.fingerprint
    assert not status.healthy and status.to_dict()["healthy"] is False
    world.rotator.reconcile(world.gw1, reason="retry", deadline_seconds=5)  # owes the restart: does it
    assert world.rotator.status([world.gw1])[0].healthy


def test_the_sweep_reports_a_gateway_whose_lease_another_instance_holds_and_carries_on(world: World) -> None:
    """A key roll on the CLI holds gw-1's lease through its rollout wait: the sweep waits for it no longer
    than one reconcile's deadline, reports gw-1 as a (transient) failure and still reconciles gw-2."""
    world.seed_token(world.gw1, 2 * DAY)
    world.seed_token(world.gw2, 2 * DAY)
    assert world.rotator.lease is not None
    held = world.rotator.lease.acquire("contoso-apim/gw-1", duration=30, wait=0)  # the CLI's roll
    try:
        result = world.rotator.sweep(deadline_seconds=0.5)
    finally:
        held.release()
    gw1, gw2 = result.reports
    assert "another reconcile of this gateway holds it" in (gw1.error or "") and not gw1.rotated
    assert gw2.ok and gw2.rotated
    assert world.west.writes == 0  # gw-1's targets untouched


def test_the_sweep_stops_starting_gateways_when_its_budget_cannot_fit_another(world: World) -> None:
    """One gateway at a time: gw-1 (slow cluster) uses most of the budget, so gw-2 is reported not
    reached and left untouched for the next run, and gw-1's own report is kept."""
    world.seed_token(world.gw1, 20 * DAY)
    world.seed_token(world.gw2, 20 * DAY)
    world.rotator.sweep_concurrency = 1
    world.west.faults.delay["read"] = 1.0
    result = world.rotator.sweep(deadline_seconds=1.5, budget_seconds=2.2)
    gw1, gw2 = result.reports
    assert gw1.ok and gw1.error is None
    assert gw2.error == "not reached within the sweep's budget; left for the next run"
    assert ("read", "apim/gw2-token") not in world.east.calls


def test_a_sweep_listing_overtaken_by_a_roll_leaves_only_verifying_tokens(world: World) -> None:
    """The sweep lists Key Vault once, then reaches gw-1 later; meanwhile the operator's CLI (configured
    with a 7-day lifetime, so its token expires BEFORE the listed one) rolled off primary and completed.
    The sweep's stale listing (a fresh primary token, now dead) must not put a dead token anywhere."""
    world.seed_token(world.gw1, 20 * DAY, key=KeyType.PRIMARY)
    cli = instance(world, world.rotator.lease)  # type: ignore[arg-type]
    cli.token_lifetime = 7 * DAY
    real = world.store.list

    def listing(timeout: float | None = None) -> Any:
        infos = real(timeout)
        report = cli.roll_keys(world.gw1, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=0,
                               confirm_restarted=True)
        assert report.phase is KeyRollPhase.COMPLETED
        return infos

    world.store.list = listing  # type: ignore[method-assign]
    world.rotator.sweep(deadline_seconds=5)
    assert_roll_invariant(world, world.gw1, KeyType.PRIMARY)


def test_adoption_paused_past_its_lease_does_not_store_a_token_a_roll_killed_meanwhile(world: World) -> None:
    """Instance A's first reconcile adopts the portal token the targets run (Key Vault empty) and pauses
    in ARM's reproduction check, past its lease; the operator's roll takes the lease, completes and
    regenerates primary. A must not then store the (now dead) portal token as Key Vault's latest."""
    clock = Monotonic()
    leases = LocalLease(clock=clock)
    a, b = instance(world, leases), instance(world, leases)
    a.adopt_existing = True
    config = world.gw1
    expiry = (world.now + 25 * DAY).replace(second=0, microsecond=0)
    portal = world.issuer.generate_token(config.ref, KeyType.PRIMARY, expiry)
    for t in config.targets:
        world.cluster(t.cluster).secrets[(t.namespace, t.secret)].data[t.key] = t.format.replace("{token}", portal)
    real = world.issuer.generate_token
    rolled: list[KeyRollPhase] = []

    def generate(ref: GatewayRef, key: KeyType, expiry: Any, timeout: float | None = None) -> str:
        value = real(ref, key, expiry, timeout)
        if not rolled:
            rolled.append(KeyRollPhase.PLANNED)
            clock.pause(45)
            rolled.append(b.roll_keys(config, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=0,
                                      confirm_restarted=True).phase)
        return value

    world.issuer.generate_token = generate  # type: ignore[method-assign,assignment]
    with pytest.raises(UpstreamError, match=r"lease .* was lost"):
        a.reconcile(config, reason="first event", deadline_seconds=5)
    assert rolled[-1] is KeyRollPhase.COMPLETED
    assert_roll_invariant(world, config, KeyType.PRIMARY)


def test_every_spelling_of_a_gateway_takes_the_same_lease_blob() -> None:
    """ARM ids are case-insensitive: the event's topic, the CLI's SERVICE/GATEWAY and the HTTP route may
    spell a gateway differently; all resolve to the registry's entry and so to one blob. The registry
    refuses a second spelling of a registered gateway (in another resource group too: APIM service
    names are global DNS names) and an id with a trailing slash."""
    from rotation.app.holding import lease_name
    from rotation.core.errors import RegistryError
    from rotation.core.registry import load_registry
    from tests.samples import gateway as sample_gateway
    from tests.samples import registry, target

    upper = SERVICE_ID.replace("rg-apim", "RG-Apim").replace("contoso-apim", "Contoso-APIM")
    doc = registry(sample_gateway("GW-1", target("east", "gw1-token")))
    doc["gateways"][0]["id"] = gateway_id("GW-1", upper)
    reg = load_registry(doc)
    by_cli = reg.find("CONTOSO-apim", "gw-1")
    by_event = reg.find_by_gateway(SERVICE_ID, "Gw-1")
    assert by_cli is not None and by_cli is by_event
    assert lease_name(by_cli) == "contoso-apim/gw-1"
    twice = registry(sample_gateway("gw-1", target("east", "a")), sample_gateway("gw-1", target("east", "b")))
    twice["gateways"][1]["id"] = gateway_id("GW-1", upper.replace("RG-Apim", "rg-other"))
    with pytest.raises(RegistryError, match="registered twice"):
        load_registry(twice)
    slash = registry(sample_gateway("gw-1", target("east", "a")))
    slash["gateways"][0]["id"] += "/"
    with pytest.raises(RegistryError, match="gateway id must look like"):
        load_registry(slash)


@dataclass
class RenewalsFail:
    """A lease store that grants leases but answers every renewal with an error (Blob Storage 503s)."""

    inner: LocalLease

    @property
    def shared(self) -> bool:
        return True

    def heads(self, names: Sequence[str], timeout: float | None = None) -> Mapping[str, FenceHead]:
        return self.inner.heads(names, timeout)

    def acquire(self, name: str, *, duration: float, wait: float) -> Any:
        held = self.inner.acquire(name, duration=duration, wait=wait)

        class Held:
            generation = held.generation
            head = held.head

            def renew(self) -> None:
                raise UpstreamError(f"lease {name} was lost or could not be renewed: 503 ServerBusy")

            def check(self) -> None:
                held.check()

            def commit(self, head: FenceHead, timeout: float | None = None) -> None:
                held.commit(head, timeout)
                self.head = head

            def remaining(self) -> float:
                return held.remaining()

            def release(self, timeout: float | None = None) -> None:
                held.release(timeout)

        return Held()


def test_a_roll_whose_lease_cannot_be_renewed_does_not_regenerate(world: World) -> None:
    world.seed_token(world.gw1, 20 * DAY)
    roller = instance(world, RenewalsFail(LocalLease()))  # type: ignore[arg-type]
    report = roller.roll_keys(world.gw1, from_key=KeyType.PRIMARY, deadline_seconds=5, rollout_wait_seconds=0,
                              confirm_restarted=True)
    assert report.phase is KeyRollPhase.PENDING and world.issuer.regenerated == []
    assert "503 ServerBusy" in report.pending[0]


def test_the_write_guard_costs_no_lease_call_when_nothing_paused(world: World) -> None:
    """The event path's cost of the guard: a reconcile that writes Key Vault, two Secrets and a restart
    renews nothing (its lease is seconds old); only acquire and release reach the lease store."""
    calls: list[str] = []

    class Counting:
        def __init__(self, inner: LocalLease) -> None:
            self.inner = inner

        @property
        def shared(self) -> bool:
            return True

        def heads(self, names: Sequence[str], timeout: float | None = None) -> Mapping[str, FenceHead]:
            return self.inner.heads(names, timeout)

        def acquire(self, name: str, *, duration: float, wait: float) -> Any:
            calls.append("acquire")
            held = self.inner.acquire(name, duration=duration, wait=wait)
            real_renew, real_release = held.renew, held.release

            def renew() -> None:
                calls.append("renew")
                real_renew()

            def release(timeout: float | None = None) -> None:
                calls.append("release")
                real_release(timeout)

            held.renew, held.release = renew, release  # type: ignore[method-assign]
            return held

    rotator = instance(world, Counting(LocalLease()))  # type: ignore[arg-type]
    world.seed_token(world.gw1, 20 * DAY)
    report = rotator.reconcile(world.gw1, reason="forced", force=True, deadline_seconds=5)
    assert report.rotated and [t.outcome for t in report.targets] == [Outcome.UPDATED, Outcome.UPDATED]
    assert calls == ["acquire", "release"]

"""A randomized interleaving model: several instances and a CLI over shared ports, invariants after every step.

Hand-written sequences only cover the races someone thought of. Here Hypothesis's rule-based state
machine (hypothesis.readthedocs.io, "Stateful testing") picks the steps: events with heal, forced
rotations, sweeps, key rolls, adoption of a fresh gateway, planted and forged Secret values, a
workload switching keys, days passing, and the two concurrency hazards the product has to fence:

- a *late write*: Key Vault's Set Secret takes no precondition (learn.microsoft.com/rest/api/keyvault/
  secrets/set-secret/set-secret) and may be applied after the client gave up; modelled by a store
  that answers the writer with a timeout and applies the version later, at a step of its own;
- a *pause beyond the lease*: a writer frozen after its Key Vault write while its 30 s blob lease
  expires (Lease Blob: learn.microsoft.com/rest/api/storageservices/lease-blob; an expired lease may be
  acquired by another client), during which another instance runs a whole operation.

After every step the invariants the README's concurrency model states are checked:

I1 Key Vault's latest for G verifies with ARM, or `status` says G is unhealthy;
I2 no target ever receives a token that does not verify for G now (a regenerated key's, a forged one,
   another gateway's), or one expiring earlier than the verified token it held (unless that token's
   key is being retired by a pending roll);
I3 regenerateKey(k) never runs while a registered workload reads or runs a token signed by k;
I4 `status` healthy ⇒ every target holds Key Vault's verified token, its workloads read it and were
   restarted for it (their fingerprint annotation) and run it;
I5 nothing the product stores in Key Vault is unverified when it is stored (adoption, promotion);
I6 every operation returns within its deadline + 1 s, and nothing writes after it returned.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from rotation.adapters.lease import LocalLease
from rotation.app.rotator import Rotator
from rotation.core.errors import RotationError, UpstreamError
from rotation.core.model import GatewayConfig, KeyType, RolloutState, TokenRecord, Workload
from rotation.core.podspec import SecretUse, UseKind
from rotation.core.registry import load_registry
from rotation.core.restarts import Heal
from rotation.core.token import GatewayToken, parse_stored
from tests.memory import MemoryCluster, MemoryClusters, MemoryIssuer, MemoryStore, sign
from tests.samples import gateway, registry, target

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DEADLINE = 5.0
INSTANCES = ("fn-1", "fn-2", "fn-3", "cli")
STAGING = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-apim/providers/" \
          "Microsoft.ApiManagement/service/staging-apim"


class Violation(AssertionError):
    pass


@dataclass
class Activity:
    """Which operations are running: a write with none running is a write after a handler returned."""

    running: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    late: list[str] = field(default_factory=list)

    @contextmanager
    def operation(self) -> Iterator[None]:
        with self.lock:
            self.running += 1
        try:
            yield
        finally:
            with self.lock:
                self.running -= 1

    def writing(self, what: str) -> None:
        if self.running <= 0:
            self.late.append(what)


@dataclass
class ModelStore(MemoryStore):
    """Key Vault whose next write can be held: the writer gets a timeout, the version lands later."""

    activity: Activity | None = None
    hold_next: bool = False
    held: list[tuple[str, TokenRecord]] = field(default_factory=list)
    on_put: Callable[[str, TokenRecord], None] | None = None
    after_put: Callable[[], None] | None = None

    def put(self, secret_name: str, record: TokenRecord, timeout: float | None = None) -> str:
        if self.activity is not None:
            self.activity.writing(f"Key Vault {secret_name}")
        if self.on_put is not None:
            self.on_put(secret_name, record)
        if self.hold_next:
            self.hold_next = False
            self.held.append((secret_name, record))
            raise UpstreamError(f"Key Vault set of secret {secret_name!r}: timed out (the write may still land)")
        version = super().put(secret_name, record, timeout)
        hook, self.after_put = self.after_put, None
        if hook is not None:
            hook()
        return version

    def land(self) -> None:
        for name, record in self.held:
            MemoryStore.put(self, name, record)
        self.held.clear()


@dataclass
class Pod:
    """A registered workload: which Secret key its pods read, what they run, what it was restarted for."""

    secret: str
    key: str
    running: str | None = None
    fingerprint: str | None = None


@dataclass
class ModelCluster(MemoryCluster):
    activity: Activity | None = None
    pods: dict[tuple[str, str], Pod] = field(default_factory=dict)
    on_write: Callable[[str, str, str, str | None, str], None] | None = None

    def write_secret_key(self, namespace: str, name: str, key: str, value: str, resource_version: str,
                         timeout: float | None = None,
                         annotations: Mapping[str, str | None] | None = None) -> str:
        if self.activity is not None:
            self.activity.writing(f"Secret {self.name}/{namespace}/{name}")
        old = self.value(namespace, name, key)
        version = super().write_secret_key(namespace, name, key, value, resource_version, timeout, annotations)
        if self.on_write is not None:
            self.on_write(self.name, f"{namespace}/{name}", key, old, value)
        return version

    def write_secret_key_if(self, namespace: str, name: str, key: str, value: str, expected: str | None,
                            timeout: float | None = None,
                            annotations: Mapping[str, str | None] | None = None) -> str:
        if self.activity is not None:
            self.activity.writing(f"Secret {self.name}/{namespace}/{name}")
        old = self.value(namespace, name, key)
        version = super().write_secret_key_if(namespace, name, key, value, expected, timeout, annotations)
        if self.on_write is not None:
            self.on_write(self.name, f"{namespace}/{name}", key, old, value)
        return version

    def restart(self, namespace: str, workload: Workload, at: datetime, timeout: float | None = None,
                fingerprint: str | None = None) -> None:
        if self.activity is not None:
            self.activity.writing(f"restart {self.name}/{namespace}/{workload}")
        super().restart(namespace, workload, at, timeout, fingerprint=fingerprint)
        pod = self.pods.get((namespace, str(workload)))
        if pod is not None:  # the new pods read the key at start (the model's rollout is instant)
            pod.running = self.value(namespace, pod.secret, pod.key)
            pod.fingerprint = fingerprint

    def rollout(self, namespace: str, workload: Workload, timeout: float | None = None) -> RolloutState:
        state = super().rollout(namespace, workload, timeout)
        pod = self.pods.get((namespace, str(workload)))
        uses = (SecretUse("gateway", UseKind.ENV, pod.secret, pod.key),) if pod is not None else None
        return RolloutState(state.workload, state.ready, state.detail, state.restarted_at, uses=uses,
                            token_fingerprint=pod.fingerprint if pod else None)


class Interleavings(RuleBasedStateMachine):
    """Two gateways of one service and a same-named gateway of another, over two clusters."""

    @initialize()
    def setup(self) -> None:
        self.now = START
        self.activity = Activity()
        self.violations: list[str] = []
        self.trace: list[str] = []
        self.registry = load_registry(registry(
            gateway("gw-1", target("east", "gw1-token", restart=["deployment/gw1"]),
                    target("west", "gw1-token", namespace="gateways", key="value", format="{token}",
                           restart=["deployment/gw1"])),
            gateway("gw-2", target("east", "gw2-token", restart=["deployment/gw2"])),
            {"id": f"{STAGING}/gateways/gw-1", "keyVaultSecret": "apim-staging-gw-1-token",
             "targets": [target("west", "stg-gw1-token", namespace="staging", restart=["deployment/gw1"])]},
        ))
        self.issuer = MemoryIssuer()
        self.store = ModelStore(clock=lambda: self.now, on_put=self._stored)
        self.clusters = {n: ModelCluster(n, activity=self.activity, on_write=self._written) for n in ("east", "west")}
        self.lease_clock = [0.0]
        self.lease = LocalLease(clock=lambda: time.monotonic() + self.lease_clock[0])
        for config in self.registry.gateways:
            seeded = self._mint(config, timedelta(days=3))
            self.store.put(config.key_vault_secret, TokenRecord(seeded, KeyType.PRIMARY, config.ref.id))
            for t in config.targets:
                cluster = self.clusters[t.cluster]
                cluster.seed(t.namespace, t.secret, {t.key: seeded.formatted(t.format)})
                for w in t.restart:
                    cluster.pods[(t.namespace, str(w))] = Pod(t.secret, t.key, seeded.formatted(t.format))
        self.store.activity = self.activity  # from here on, every write belongs to an operation
        self.rotators = {name: Rotator(registry=self.registry, issuer=self.issuer, store=self.store,
                                       clusters=MemoryClusters(dict(self.clusters)), clock=lambda: self.now,
                                       lease=self.lease, adopt_existing=True)
                         for name in INSTANCES}

    # --- helpers ----------------------------------------------------------------------------------

    def _mint(self, config: GatewayConfig, lifetime: timedelta, key: KeyType = KeyType.PRIMARY) -> GatewayToken:
        value = self.issuer.generate_token(config.ref, key, (self.now + lifetime).replace(second=0, microsecond=0))
        return GatewayToken.parse(value)

    def _owner(self, cluster: str, where: str, key: str) -> GatewayConfig | None:
        ns, secret = where.split("/")
        for config in self.registry.gateways:
            for t in config.targets:
                if (t.cluster, t.namespace, t.secret, t.key) == (cluster, ns, secret, key):
                    return config
        return None

    def _verifies(self, config: GatewayConfig, value: str | None) -> KeyType | None:
        token = parse_stored(value)
        if token is None or token.expires_at <= self.now:
            return None
        return self.issuer.verify(config.ref, token.value)

    def _retiring(self, config: GatewayConfig) -> KeyType | None:
        latest = self.store.get(config.key_vault_secret)
        return latest.roll_from if latest is not None else None

    def _stored(self, name: str, record: TokenRecord) -> None:
        config = next((c for c in self.registry.gateways if c.key_vault_secret.lower() == name.lower()), None)
        # Provenance, not freshness: a repair may store the committed token again after it expired
        # (the renewal that follows mints a new one).
        if config is not None and self.issuer.verify(config.ref, record.token.value) is None:
            self.violations.append(f"I5: stored an unverified token {record.token.fingerprint} for {config.ref}")

    def _written(self, cluster: str, where: str, key: str, old: str | None, new: str | None) -> None:
        config = self._owner(cluster, where, key)
        if config is None:
            self.violations.append(f"I2: wrote {cluster}/{where}/{key}, which no gateway registers")
            return
        new_key = self._verifies(config, new)
        if new_key is None:
            self.violations.append(f"I2: {cluster}/{where} received a token that does not verify for {config.ref}")
            return
        old_key = self._verifies(config, old)
        old_token, new_token = parse_stored(old), parse_stored(new)
        if (old_key is not None and old_token is not None and new_token is not None
                and new_token.expires_at < old_token.expires_at and old_key is not self._retiring(config)):
            self.violations.append(f"I2: {cluster}/{where} downgraded from {old_token} to {new_token}")

    def _check_regenerate(self, key_type: KeyType, config: GatewayConfig) -> None:
        for t in config.targets:
            for w in t.restart:
                pod = self.clusters[t.cluster].pods.get((t.namespace, str(w)))
                if pod is None:
                    continue
                reads = self.clusters[t.cluster].value(t.namespace, pod.secret, pod.key)
                for what, value in (("reads", reads), ("runs", pod.running)):
                    token = parse_stored(value)
                    if token is not None and self.issuer.verify(config.ref, token.value) is key_type:
                        self.violations.append(f"I3: regenerated {key_type.value} of {config.ref} while "
                                               f"{t.cluster}/{t.namespace}/{w} {what} a token it signed")

    def _run(self, what: str, call: Callable[[], object]) -> None:
        started = time.monotonic()
        with self.activity.operation(), contextlib.suppress(RotationError):
            call()
        took = time.monotonic() - started
        if took > DEADLINE + 1:
            self.violations.append(f"I6: {what} took {took:.1f}s against a {DEADLINE}s deadline")

    def _config(self, index: int) -> GatewayConfig:
        return self.registry.gateways[index % len(self.registry.gateways)]

    # --- steps ------------------------------------------------------------------------------------

    @rule(instance=st.sampled_from(INSTANCES), index=st.integers(0, 2), stale=st.booleans())
    def event(self, instance: str, index: int, stale: bool) -> None:
        self.trace.append('event')
        config = self._config(index)
        latest = self.store.get(config.key_vault_secret)
        # A stale instance runs an older token than Key Vault's (None: the event said no expiry).
        heal = Heal(instance=f"{config.ref.gateway}-pod",
                    instance_expires_at=None if stale or latest is None else latest.token.expires_at)
        self._run("event", lambda: self.rotators[instance].reconcile(
            config, reason="event", deadline_seconds=DEADLINE, heal=heal))

    @rule(instance=st.sampled_from(INSTANCES), index=st.integers(0, 2))
    def forced_rotation(self, instance: str, index: int) -> None:
        self.trace.append('forced_rotation')
        config = self._config(index)
        self._run("rotate", lambda: self.rotators[instance].reconcile(
            config, reason="forced", deadline_seconds=DEADLINE, force=True))

    @rule(instance=st.sampled_from(INSTANCES))
    def sweep(self, instance: str) -> None:
        self.trace.append('sweep')
        self._run("sweep", lambda: self.rotators[instance].sweep(deadline_seconds=DEADLINE, budget_seconds=30))

    @rule(instance=st.sampled_from(INSTANCES), index=st.integers(0, 2), from_key=st.sampled_from(list(KeyType)),
          confirm=st.booleans())
    def roll_keys(self, instance: str, index: int, from_key: KeyType, confirm: bool) -> None:
        self.trace.append('roll_keys')
        config = self._config(index)
        original = self.issuer.regenerate_key

        def guarded(gateway: object, key_type: KeyType, timeout: float | None = None) -> None:
            self._check_regenerate(key_type, config)
            original(config.ref, key_type, timeout)

        self.issuer.regenerate_key = guarded  # type: ignore[method-assign]
        try:
            self._run("roll-keys", lambda: self.rotators[instance].roll_keys(
                config, from_key=from_key, deadline_seconds=DEADLINE, rollout_wait_seconds=0.0,
                poll_seconds=0.01, confirm_restarted=confirm))
        finally:
            self.issuer.regenerate_key = original  # type: ignore[method-assign]

    @rule(days=st.integers(1, 12))
    def days_pass(self, days: int) -> None:
        self.trace.append('days_pass')
        self.now += timedelta(days=days)

    @rule(index=st.integers(0, 2), which=st.integers(0, 1),
          kind=st.sampled_from(["forged-far-future", "planted", "other-gateway", "placeholder"]))
    def plant(self, index: int, which: int, kind: str) -> None:
        """Someone with patch on one Secret writes a value of their choosing (not the product)."""
        self.trace.append('plant')
        config = self._config(index)
        t = config.targets[which % len(config.targets)]
        stamp = (self.now + timedelta(days=20)).replace(second=0, microsecond=0)
        value = {
            "forged-far-future": sign(config.ref.gateway, datetime(2099, 12, 31, 23, 59, tzinfo=UTC), b"attacker"),
            "planted": sign(config.ref.gateway, stamp, b"attacker"),
            "other-gateway": self.store.current(self._config(index + 1).key_vault_secret) or "",
            "placeholder": "GatewayKey <paste token>",
        }[kind]
        cluster = self.clusters[t.cluster]
        cluster.secrets[(t.namespace, t.secret)].data[t.key] = t.format.replace("{token}", value) \
            if parse_stored(value) else value
        cluster.secrets[(t.namespace, t.secret)].resource_version += 1

    @rule(index=st.integers(0, 1))
    def workload_switches_key(self, index: int) -> None:
        """The registered workload starts reading another key of its Secret, holding the token it runs."""
        self.trace.append('workload_switches_key')
        config = self._config(index)
        t = config.targets[0]
        if not t.restart:
            return
        cluster = self.clusters[t.cluster]
        pod = cluster.pods[(t.namespace, str(t.restart[0]))]
        secret = cluster.secrets[(t.namespace, t.secret)]
        secret.data["old-key"] = pod.running or ""
        secret.resource_version += 1
        pod.key = "old-key"

    @rule(index=st.integers(0, 2))
    def hold_next_key_vault_write(self, index: int) -> None:
        self.trace.append('hold_next_key_vault_write')
        self.store.hold_next = True

    @precondition(lambda self: bool(self.store.held))
    @rule()
    def late_write_lands(self) -> None:
        self.trace.append('late_write_lands')
        self.store.land()

    @rule(instance=st.sampled_from(INSTANCES), other=st.sampled_from(INSTANCES), index=st.integers(0, 2),
          from_key=st.sampled_from(list(KeyType)))
    def pause_beyond_the_lease(self, instance: str, other: str, index: int, from_key: KeyType) -> None:
        """`instance` freezes right after its Key Vault write until its lease expired; meanwhile `other`
        rolls the gateway's keys (or rotates it); then `instance` carries on."""
        self.trace.append('pause_beyond_the_lease')
        config = self._config(index)

        def frozen() -> None:
            self.lease_clock[0] += 61  # past any lease duration
            if instance == other:
                return
            self._run("roll-keys (while another is frozen)", lambda: self.rotators[other].roll_keys(
                config, from_key=from_key, deadline_seconds=DEADLINE, rollout_wait_seconds=0.0, poll_seconds=0.01,
                confirm_restarted=True))

        self.store.after_put = frozen
        self._run("rotate (frozen after its write)", lambda: self.rotators[instance].reconcile(
            config, reason="forced", deadline_seconds=DEADLINE, force=True))
        self.store.after_put = None

    @rule(writer=st.sampled_from(INSTANCES), roller=st.sampled_from(INSTANCES), index=st.integers(0, 2),
          from_key=st.sampled_from(list(KeyType)))
    def a_write_lands_after_a_roll(self, writer: str, roller: str, index: int, from_key: KeyType) -> None:
        """Writer's Key Vault PUT is held (it gives up), its lease expires, another instance completes a
        roll that regenerates a key, and the held PUT lands: possibly a dead key's token as the latest."""
        self.trace.append("a_write_lands_after_a_roll")
        config = self._config(index)
        self.store.hold_next = True
        self._run("rotate (its write held)", lambda: self.rotators[writer].reconcile(
            config, reason="forced", deadline_seconds=DEADLINE, force=True))
        self.store.hold_next = False
        self.lease_clock[0] += 61
        self.roll_keys(roller, index, from_key, True)
        self.trace.pop()  # roll_keys recorded itself
        self.store.land()

    @rule()
    def lease_expiry(self) -> None:
        self.trace.append('lease_expiry')
        self.lease_clock[0] += 61

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def no_violation_recorded(self) -> None:
        if getattr(self, "violations", None):
            raise Violation("; ".join(self.violations))
        if getattr(self, "activity", None) is not None and self.activity.late:
            raise Violation(f"I6: wrote after the operation returned: {self.activity.late}")

    @invariant()
    def key_vault_verifies_or_status_says_so(self) -> None:
        if not hasattr(self, "rotators"):
            return
        statuses = {s.gateway_id: s for s in self.rotators["cli"].status(timeout=DEADLINE)}
        for config in self.registry.gateways:
            latest = self.store.get(config.key_vault_secret)
            status = statuses[config.ref.id]
            good = latest is not None and self._verifies(config, latest.token.value) is not None
            if not good and status.healthy:
                raise Violation(f"I1: Key Vault's latest for {config.ref} does not verify, yet status is healthy")
            if status.healthy:
                self._healthy_means_it(config, latest)

    def _healthy_means_it(self, config: GatewayConfig, latest: TokenRecord | None) -> None:
        assert latest is not None
        for t in config.targets:
            cluster = self.clusters[t.cluster]
            held = cluster.value(t.namespace, t.secret, t.key)
            if held != latest.token.formatted(t.format) or self._verifies(config, held) is None:
                raise Violation(f"I4: status healthy but {t} does not hold Key Vault's verified token")
            for w in t.restart:
                pod = cluster.pods[(t.namespace, str(w))]
                reads = cluster.value(t.namespace, pod.secret, pod.key)
                if reads != held or pod.running != held or pod.fingerprint != latest.token.fingerprint:
                    raise Violation(f"I4: status healthy but {t.cluster}/{t.namespace}/{w} does not read, run "
                                    "and was not restarted for the token")

    def teardown(self) -> None:
        if hasattr(self, "trace"):
            STATS["runs"] += 1
            STATS["steps"] += len(self.trace)
            SEEN.add(tuple(self.trace))


STATS = {"runs": 0, "steps": 0}
SEEN: set[tuple[str, ...]] = set()


Interleavings.TestCase.settings = settings(
    max_examples=120, stateful_step_count=30, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_interleavings = Interleavings.TestCase


def test_the_model_reached_the_hazards(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs after the state machine (file order): it must have interleaved the hazards with the rest,
    and says how much of the space it covered (steps run, distinct interleavings)."""
    if STATS["runs"] == 0:  # e.g. pytest-xdist put the state machine in another worker process
        pytest.skip("the state machine did not run in this process")
    steps = {step for trace in SEEN for step in trace}
    assert {"late_write_lands", "a_write_lands_after_a_roll", "pause_beyond_the_lease", "roll_keys", "plant",
            "workload_switches_key"} <= steps
    with capsys.disabled():
        print(f"\ninterleaving model: {STATS['runs']} runs, {STATS['steps']} steps, "
              f"{len(SEEN)} distinct interleavings")

"""The two-phase key roll (compromise response) as an explicit state machine.

States, kept in Key Vault's latest version (the `keyRollFrom` tag) so every instance and the CLI see
the same one:

    idle ──roll --from K──▶ pending(K) ──phase 2 confirmed──▶ regenerated(K) ──tag cleared──▶ idle
                              │   ▲
                              └───┘ anything unconfirmed: stays pending, says what to do

- The direction is stated by the operator (`--from`, HTTP `fromKey`) and refused when it contradicts
  a pending roll: re-running a roll can never turn it around and regenerate the key in use.
- pending(K): every write on any path (renewal, forced rotate, promotion) carries `keyRollFrom=K`
  and signs with K's other key, whatever the registry pins (`policies.key_type_for`).
- Phase 2 runs under the gateway's lease (held, and renewed, from phase 1 on) and re-reads Key Vault
  and every target immediately before `regenerateKey`; the lease is renewed once more after that
  read, and a renewal that fails (the lease was lost, e.g. this process stalled past it while another
  instance took it) leaves the roll pending: what was read may no longer be all that was written.
  It regenerates K only when Key Vault's latest is this roll's token, every target holds exactly it
  with no restart pending, and every registered workload restarted after the token was stored and
  finished rolling out. A target with no `restart`
  list cannot be confirmed: it keeps the roll pending until the operator restarts its pods and says
  so (`--confirm-restarted`).
- A crash between regenerating and clearing the tag leaves pending(K); the next run with the same
  `--from` finds everything confirmed, regenerates K again (harmless: nothing uses it) and clears it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from rotation.core.errors import InvalidInput, RotationError, UpstreamError
from rotation.core.model import (
    GatewayConfig,
    KeyType,
    Outcome,
    RolloutState,
    SecretState,
    Target,
    TokenInfo,
    TokenRecord,
)
from rotation.core.policies import CLOCK_SKEW, token_stored_at
from rotation.core.status import KeyRollPhase, KeyRollReport, sync_state
from rotation.core.token import parse_stored
from rotation.service import RESTART_PENDING, Deadline, Heal, Rotator, emit


class KeyRollRefused(InvalidInput):
    """The requested direction contradicts the roll Key Vault says is pending. Nothing was written."""


# --- pure decisions --------------------------------------------------------------------------------


def check_direction(stored: KeyType | None, requested: KeyType) -> bool:
    """Whether this run resumes a pending roll; raises KeyRollRefused when it would reverse one."""
    if stored is None:
        return False
    if stored is requested:
        return True
    raise KeyRollRefused(
        f"a key roll from {stored.value} to {stored.other.value} is pending (Key Vault's latest version is "
        f"tagged keyRollFrom={stored.value}); rolling from {requested.value} would regenerate the key now in "
        f"use. Finish the pending roll with --from {stored.value} (HTTP fromKey={stored.value!r})")


@dataclass(frozen=True, slots=True)
class Blocker:
    """Why phase 2 may not regenerate yet. `waits`: it may clear by itself (a rollout in progress)."""

    where: str
    why: str
    waits: bool = False

    def __str__(self) -> str:
        return f"{self.where}: {self.why}"


@dataclass(frozen=True, slots=True)
class TargetSeen:
    target: Target
    secret: SecretState | None
    rollouts: tuple[RolloutState, ...] = ()
    error: str | None = None


def blockers(latest: TokenRecord | None, from_key: KeyType, versions: Sequence[TokenInfo],
             seen: Sequence[TargetSeen], confirm_restarted: bool) -> list[Blocker]:
    """Everything that forbids regenerating `from_key` now (empty: regenerate). `versions`: Key Vault's
    versions, oldest first, listed after the targets were read."""
    if latest is None:
        return [Blocker("Key Vault", "holds no token for this gateway")]
    if latest.roll_from is not from_key or latest.key_type is not from_key.other:
        tag = f"tagged keyRollFrom={latest.roll_from.value}" if latest.roll_from else "with no roll tag"
        return [Blocker("Key Vault", f"its latest version is a {latest.key_type.value} token {tag}, not this "
                                     f"roll's {from_key.other.value} token: run roll-keys --from {from_key.value} "
                                     "again")]
    stored_at = token_stored_at(versions, latest.token.fingerprint)
    # Tokens of this roll (signed by the surviving key): a target holding one converges by itself
    # when another writer just stored a later one, so the next look decides.
    this_roll = {v.fingerprint for v in versions if v.key_type is from_key.other and v.roll_from is from_key}
    out: list[Blocker] = []
    for s in seen:
        t = s.target
        if s.secret is None:
            out.append(Blocker(str(t), f"not confirmed ({s.error or 'unreadable'}): fix it and run roll-keys again"))
            continue
        if sync_state(s.secret.value, latest.token.fingerprint, t.format).value != "in_sync":
            held = parse_stored(s.secret.value)
            what = f"token {held.fingerprint}" if held else "no token"
            if held is not None and held.fingerprint in this_roll:
                out.append(Blocker(str(t), f"holds {what}, an earlier token of this roll, not Key Vault's "
                                           f"{latest.token.fingerprint}: run roll-keys again", waits=True))
            else:
                out.append(Blocker(str(t), f"holds {what}, not Key Vault's {latest.token.fingerprint} (it may be "
                                           f"signed by the {from_key.value} key): run roll-keys again"))
            continue
        if s.secret.annotations.get(RESTART_PENDING):
            out.append(Blocker(str(t), "its workloads' restart onto the new token is not done (restart-pending "
                                       "marker): run roll-keys again"))
            continue
        if not t.restart and not confirm_restarted:
            out.append(Blocker(str(t), "has no `restart` list, so nothing confirms its pods run the new token "
                                       f"(they read it at start): restart them (kubectl rollout restart -n "
                                       f"{t.namespace} ...), then run roll-keys again with --confirm-restarted "
                                       "(HTTP confirmRestarted=true); or add `restart` to the registry"))
        for r in s.rollouts:
            where = f"{t.cluster}/{t.namespace}/{r.workload}"
            if r.restarted_at is None or (stored_at is not None and r.restarted_at < stored_at - CLOCK_SKEW):
                out.append(Blocker(where, "last restarted before the new token was stored: run roll-keys again "
                                          "(it restarts it)"))
            elif not r.ready:
                out.append(Blocker(where, f"rollout not finished ({r.detail})", waits=True))
    return out


# --- the machine -----------------------------------------------------------------------------------


@dataclass
class KeyRoll:
    rotator: Rotator

    def run(self, config: GatewayConfig, *, from_key: KeyType, deadline_seconds: float,
            rollout_wait_seconds: float = 60.0, dry_run: bool = False, poll_seconds: float = 1.0,
            confirm_restarted: bool = False) -> KeyRollReport:
        """Move the gateway off `from_key`, then regenerate `from_key` once everything is confirmed.

        Holds the gateway's lease throughout (renewed in the background during the rollout wait), so
        no other instance writes while phase 2 decides. Raises KeyRollRefused (nothing written) when
        `from_key` contradicts a pending roll, UpstreamError when the lease is not free in time.
        """
        r = self.rotator
        started = time.monotonic()
        deadline = Deadline(deadline_seconds)
        to_key = from_key.other
        with r.exclusive(config, deadline) as holding:
            current = r.store.get(config.key_vault_secret, timeout=deadline.check("reading Key Vault"))
            resumed = check_direction(current.roll_from if current else None, from_key)
            reason = f"key roll {from_key.value} -> {to_key.value}" + (" (resumed)" if resumed else "")
            # Phase 1: a token of the other key everywhere, and the pods of in-sync targets restarted if
            # they started before it was stored (a renewal during the roll may not have restarted them).
            rotation = r.reconcile_held(config, reason=reason, deadline=deadline, started=started, dry_run=dry_run,
                                        key_type=to_key, roll_from=from_key, guard=holding.check,
                                        heal=Heal(cooldown=timedelta(0), unrestartable_fails=False))

            def result(phase: KeyRollPhase, pending: Sequence[object] = (), regenerated: bool = False,
                       ) -> KeyRollReport:
                report = KeyRollReport(config.ref.id, from_key, to_key, phase, rotation,
                                       tuple(str(p) for p in pending), regenerated, resumed)
                emit("rotation.keyroll", {"gatewayId": config.ref.id, "from": from_key.value, "to": to_key.value,
                                          "phase": phase.value, "resumed": resumed,
                                          "pending": list(report.pending)})
                return report

            if dry_run:
                return result(KeyRollPhase.PLANNED)
            failed = [f"{t.cluster}/{t.namespace}/{t.secret}: {t.outcome.value}" + (f" ({t.error})" if t.error else "")
                      for t in rotation.targets if t.outcome not in (Outcome.UPDATED, Outcome.IN_SYNC)]
            if failed:
                return result(KeyRollPhase.PENDING, failed)
            # Phase 2: re-read everything under the lease; wait only for what can clear by itself.
            wait = Deadline(rollout_wait_seconds)
            while True:
                found = self.inspect(config, from_key, confirm_restarted, deadline_seconds)
                if not found:
                    break
                if not all(b.waits for b in found) or wait.left() <= 0:
                    return result(KeyRollPhase.PENDING, found)
                time.sleep(min(poll_seconds, wait.left()))
            try:
                # Still ours, right before the one irreversible step: Blob Storage renews only if nobody
                # leased the blob since, so what `inspect` read is still all that was written.
                holding.renew()
            except UpstreamError as exc:
                return result(KeyRollPhase.PENDING, [Blocker(
                    "lease", f"the gateway's lease was lost before regenerating ({exc}), so another writer may "
                             f"have acted since the check; nothing was regenerated: run roll-keys --from "
                             f"{from_key.value} again")])
            r.issuer.regenerate_key(config.ref, from_key, timeout=deadline_seconds)
            latest = r.store.get(config.key_vault_secret, timeout=deadline_seconds)
            if latest is not None and latest.roll_from is from_key:
                holding.check()  # lost now: the tag stays; the next run regenerates again (harmless) and clears it
                r.store.put(config.key_vault_secret, replace(latest, roll_from=None, version=None, created_at=None),
                            timeout=deadline_seconds)
            return result(KeyRollPhase.COMPLETED, regenerated=True)

    def inspect(self, config: GatewayConfig, from_key: KeyType, confirm_restarted: bool,
                timeout: float) -> list[Blocker]:
        """Re-reads Key Vault and every target (Secret, workloads) and says what blocks phase 2."""
        r = self.rotator
        latest = r.store.get(config.key_vault_secret, timeout=timeout)
        seen: list[TargetSeen] = []
        for target in config.targets:
            try:
                client = r.clusters.client(r.registry.clusters[target.cluster])
                secret = client.read_secret(target.namespace, target.secret, target.key, timeout=timeout)
                rollouts = tuple(client.rollout(target.namespace, w, timeout=timeout) for w in target.restart)
                seen.append(TargetSeen(target, secret, rollouts))
            except RotationError as exc:
                seen.append(TargetSeen(target, None, error=str(exc)))
        # Listed after the targets were read, so it names every token a target could hold by now.
        versions = r.store.versions(config.key_vault_secret, timeout=timeout) if latest is not None else ()
        return blockers(latest, from_key, versions, seen, confirm_restarted)

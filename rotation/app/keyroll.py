"""The two-phase key roll (compromise response) as an explicit state machine.

States, kept in Key Vault's latest version (the `keyRollFrom` tag) so every instance and the CLI see
the same one:

    idle ──roll --from K──▶ pending(K) ──phase 2 confirmed──▶ regenerated(K) ──tag cleared──▶ idle
                              │   ▲
                              └───┘ anything unconfirmed: stays pending, says what to do

- The direction is stated by the operator (`--from`, HTTP `fromKey`) and refused when it contradicts
  a pending roll: re-running a roll can never turn it around and regenerate the key in use.
- pending(K): every write on any path (renewal, forced rotate, promotion) carries `keyRollFrom=K`
  and signs with K's other key, whatever the registry pins (`rotation.core.renewal.key_type_for`).
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

from rotation.app.consumed import Signer, other_reads
from rotation.app.context import Deps, Scope, deadline
from rotation.app.holding import Holding, exclusive
from rotation.app.reconcile import Reconcile, Request
from rotation.app.vault import fenced_put
from rotation.core.consumption import check as check_consumption
from rotation.core.deadline import Deadline
from rotation.core.errors import RotationError, UpstreamError
from rotation.core.keyroll import Blocker, TargetSeen, blockers, check_direction
from rotation.core.model import GatewayConfig, KeyType, Outcome, RotationReport
from rotation.core.ports import Lease
from rotation.core.restarts import Heal
from rotation.core.status import KeyRollPhase, KeyRollReport
from rotation.telemetry import emit


@dataclass(frozen=True, slots=True)
class KeyRoll:
    """The roll over the ports and the gateway's lease (what `Rotator.roll_keys` runs)."""

    deps: Deps
    lease: Lease

    def run(self, config: GatewayConfig, *, from_key: KeyType, deadline_seconds: float,
            rollout_wait_seconds: float = 60.0, dry_run: bool = False, poll_seconds: float = 1.0,
            confirm_restarted: bool = False) -> KeyRollReport:
        """Move the gateway off `from_key`, then regenerate `from_key` once everything is confirmed.

        Holds the gateway's lease throughout (renewed in the background during the rollout wait), so
        no other instance writes while phase 2 decides. Raises KeyRollRefused (nothing written) when
        `from_key` contradicts a pending roll, UpstreamError when the lease is not free in time.
        """
        started = time.monotonic()
        budget = deadline(deadline_seconds)
        to_key = from_key.other
        with exclusive(self.lease, config, budget) as holding:
            current = self.deps.store.get(config.key_vault_secret, timeout=budget.check("reading Key Vault"))
            resumed = check_direction(current.roll_from if current else None, from_key)
            reason = f"key roll {from_key.value} -> {to_key.value}" + (" (resumed)" if resumed else "")
            # Phase 1: a token of the other key everywhere, and the pods of in-sync targets restarted if
            # they started before it was stored (a renewal during the roll may not have restarted them).
            request = Request(reason, dry_run=dry_run, key_type=to_key, roll_from=from_key,
                              heal=Heal(unrestartable_fails=False))
            rotation = Reconcile(self.deps, config, request, budget, started, guard=holding.check,
                                 fence=holding).run()

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
            failed = _unfinished(rotation)
            if failed:
                return result(KeyRollPhase.PENDING, failed)
            found = self.confirm(config, from_key, confirm_restarted, deadline_seconds,
                                 deadline(rollout_wait_seconds), poll_seconds, holding)
            if found:
                return result(KeyRollPhase.PENDING, found)
            self.regenerate(config, from_key, budget, holding)
            return result(KeyRollPhase.COMPLETED, regenerated=True)

    def confirm(self, config: GatewayConfig, from_key: KeyType, confirm_restarted: bool, timeout: float,
                wait: Deadline, poll_seconds: float, holding: Holding) -> list[Blocker]:
        """Phase 2's check: re-read everything under the lease, waiting only for what can clear by
        itself; then prove the lease is still ours. Empty: regenerate now."""
        while True:
            found = self.inspect(config, from_key, confirm_restarted, timeout)
            if not found:
                break
            if not all(b.waits for b in found) or wait.left() <= 0:
                return found
            time.sleep(min(poll_seconds, wait.left()))
        try:
            # Still ours, right before the one irreversible step: Blob Storage renews only if nobody
            # leased the blob since, so what `inspect` read is still all that was written.
            holding.renew()
        except UpstreamError as exc:
            return [Blocker(
                "lease", f"the gateway's lease was lost before regenerating ({exc}), so another writer may "
                         f"have acted since the check; nothing was regenerated: run roll-keys --from "
                         f"{from_key.value} again")]
        return []

    def regenerate(self, config: GatewayConfig, from_key: KeyType, budget: Deadline, holding: Holding) -> None:
        """Regenerates the retired key, then clears the roll's tag (a new version of the same token,
        fenced like every Key Vault write)."""
        scope = Scope(config, budget, holding.check, holding)
        self.deps.issuer.regenerate_key(config.ref, from_key, timeout=scope.writing("regenerating the key"))
        latest = self.deps.store.get(config.key_vault_secret, timeout=budget.check("reading Key Vault"))
        if latest is not None and latest.roll_from is from_key:
            # Lost now: the tag stays; the next run regenerates again (harmless) and clears it.
            fenced_put(self.deps, scope, replace(latest, roll_from=None), based_on=latest.version)

    def inspect(self, config: GatewayConfig, from_key: KeyType, confirm_restarted: bool,
                timeout: float) -> list[Blocker]:
        """Re-reads Key Vault and every target (Secret, workloads) and says what blocks phase 2."""
        deps = self.deps
        latest = deps.store.get(config.key_vault_secret, timeout=timeout)
        seen: list[TargetSeen] = []
        for target in config.targets:
            try:
                client = deps.clusters.client(deps.registry.clusters[target.cluster])
                secret = client.read_secret(target.namespace, target.secret, target.key, timeout=timeout)
                rollouts = tuple(client.rollout(target.namespace, w, timeout=timeout) for w in target.restart)
                consumption = check_consumption(target, {r.workload: r.uses for r in rollouts}, secret.labels)
                seen.append(TargetSeen(target, secret, rollouts, consumption=consumption))
            except RotationError as exc:
                seen.append(TargetSeen(target, None, error=str(exc)))
        # Listed after the targets were read, so it names every token a target could hold by now.
        versions = deps.store.versions(config.key_vault_secret, timeout=timeout) if latest is not None else ()
        signer = Signer(deps, config, versions, from_key, timeout)
        seen = [replace(s, reads=other_reads(deps, s, signer, timeout)) if s.secret is not None else s for s in seen]
        return blockers(latest, from_key, versions, seen, confirm_restarted)


def _unfinished(rotation: RotationReport) -> list[str]:
    return [f"{t.cluster}/{t.namespace}/{t.secret}: {t.outcome.value}" + (f" ({t.error})" if t.error else "")
            for t in rotation.targets if t.outcome not in (Outcome.UPDATED, Outcome.IN_SYNC)]

"""The key roll's pure decisions: whether a run resumes or would reverse a pending roll, and what
still forbids regenerating the retiring key (phase 2). The state machine that acts on them is
`rotation.app.keyroll`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rotation.core.consumption import Consumption, ConsumptionState
from rotation.core.errors import InvalidInput
from rotation.core.model import KeyType, RolloutState, SecretState, Target, TokenInfo, TokenRecord
from rotation.core.status import sync_state
from rotation.core.token import parse_stored


class KeyRollRefused(InvalidInput):
    """The requested direction contradicts the roll Key Vault says is pending. Nothing was written."""


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
class Read:
    """Another Secret key a registered workload reads (besides the registered one), as inspected:
    `signed_by` the key that signed the token it holds (None: no token of that key), or `error` when
    it could not be checked (not readable with the app's rights, every key of a Secret...)."""

    where: str
    signed_by: KeyType | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TargetSeen:
    target: Target
    secret: SecretState | None
    rollouts: tuple[RolloutState, ...] = ()
    error: str | None = None
    reads: tuple[Read, ...] = ()
    consumption: Consumption | None = None


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
    # Tokens of this roll (signed by the surviving key): a target holding one converges by itself
    # when another writer just stored a later one, so the next look decides.
    this_roll = {v.fingerprint for v in versions if v.key_type is from_key.other and v.roll_from is from_key}
    out: list[Blocker] = []
    for s in seen:
        found = _secret_blocker(s, latest, from_key, this_roll)
        if found is not None:
            out.append(found)
            continue
        if not s.target.restart and not confirm_restarted:
            out.append(_unconfirmable(s.target))
        out.extend(_consumption_blockers(s, from_key, confirm_restarted))
        out.extend(_rollout_blockers(s, latest.token.fingerprint))
    return out


def _consumption_blockers(s: TargetSeen, from_key: KeyType, confirm_restarted: bool) -> list[Blocker]:
    """A workload that reads a token of the retiring key elsewhere (another key of the Secret, another
    Secret) dies when it is regenerated, whatever the registered key holds: that blocks, always. What
    could not be checked (the pod template unread, a workload reading another key, a Secret the app may
    not read) blocks unless the operator confirmed the pods run the new token."""
    out = [Blocker(r.where, f"a registered workload reads a token signed by the {from_key.value} key there: "
                            "regenerating it would cut that workload off; point it at the registered key "
                            "(or register that key), then run roll-keys again")
           for r in s.reads if r.signed_by is from_key]
    if confirm_restarted:
        return out
    out.extend(Blocker(r.where, f"not checked ({r.error}): make sure it holds no {from_key.value}-key token, "
                                "then run roll-keys again with --confirm-restarted")
               for r in s.reads if r.error is not None)
    c = s.consumption
    if c is not None and c.state in (ConsumptionState.MISMATCH, ConsumptionState.UNCHECKED) and s.target.restart:
        out.append(Blocker(str(s.target), f"consumption {c.state.value} ({c.fix}): the pods may run a "
                                          f"{from_key.value}-key token from elsewhere; fix the registry or run "
                                          "roll-keys again with --confirm-restarted"))
    return out


def _secret_blocker(s: TargetSeen, latest: TokenRecord, from_key: KeyType,
                    this_roll: set[str | None]) -> Blocker | None:
    """Why this target's Secret does not confirm the roll's token (None: it does)."""
    t = s.target
    if s.secret is None:
        return Blocker(str(t), f"not confirmed ({s.error or 'unreadable'}): fix it and run roll-keys again")
    if sync_state(s.secret.value, latest.token.fingerprint, t.format).value != "in_sync":
        held = parse_stored(s.secret.value)
        what = f"token {held.fingerprint}" if held else "no token"
        if held is not None and held.fingerprint in this_roll:
            return Blocker(str(t), f"holds {what}, an earlier token of this roll, not Key Vault's "
                                   f"{latest.token.fingerprint}: run roll-keys again", waits=True)
        return Blocker(str(t), f"holds {what}, not Key Vault's {latest.token.fingerprint} (it may be "
                               f"signed by the {from_key.value} key): run roll-keys again")
    return None


def _unconfirmable(t: Target) -> Blocker:
    return Blocker(str(t), "has no `restart` list, so nothing confirms its pods run the new token "
                           f"(they read it at start): restart them (kubectl rollout restart -n "
                           f"{t.namespace} ...), then run roll-keys again with --confirm-restarted "
                           "(HTTP confirmRestarted=true); or add `restart` to the registry")


def _rollout_blockers(s: TargetSeen, fingerprint: str) -> list[Blocker]:
    """Each workload restarted for the roll's token (its fingerprint annotation, not a clock) and rolled out."""
    out: list[Blocker] = []
    for r in s.rollouts:
        where = f"{s.target.cluster}/{s.target.namespace}/{r.workload}"
        if r.token_fingerprint != fingerprint:
            out.append(Blocker(where, f"not restarted for the new token {fingerprint} (its pod template names "
                                      f"{r.token_fingerprint or 'none'}): run roll-keys again (it restarts it)"))
        elif not r.ready:
            out.append(Blocker(where, f"rollout not finished ({r.detail})", waits=True))
    return out

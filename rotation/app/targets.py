"""One target's sync, in two phases a reconcile runs over all targets in parallel.

Phase 1 (`sync_secret`) brings the Secret's key to the token: on the happy path one conditional write
of the token over the one Key Vault held before (a JSON Patch `test`, no read); otherwise a read, a
decision by provenance (`rotation.core.provenance`: whose token the value is, never what it says
about itself) and a write conditioned on the resourceVersion read. Phase 2 (`restart_workloads`)
restarts the target's workloads for the token the Secret ends with, recording its fingerprint on the
pod template: after a write without a look, otherwise only those restarted for another token. The
phases are separate so a promotion between them restarts a workload once, for the final token.
A target failing never raises, so one cluster down cannot take the other targets with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from rotation.app.context import Deps, Scope
from rotation.app.evidence import EvidenceLoader
from rotation.app.source import TokenSource
from rotation.core.convergence import TargetAction
from rotation.core.errors import Conflict, RotationError
from rotation.core.model import KeyType, Outcome, Target, TargetReport
from rotation.core.ports import ClusterClient
from rotation.core.provenance import Provenance, Verdict, target_action
from rotation.core.restarts import Heal, RestartAction, restart_action
from rotation.core.token import GatewayToken
from rotation.telemetry import emit

log = logging.getLogger("rotation")


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """What every target of one pass does. `plan_only`: read and say, write nothing (a dry run, or
    no token to write); `doomed`: fingerprints a key roll is about to invalidate (overwritten even
    if they expire later); `expected`: the token Key Vault held before this reconcile minted (a target
    holding it is written without a read); `evidence`: whose tokens are whose, loaded on need."""

    source: TokenSource | None
    plan_only: bool
    evidence: EvidenceLoader | None = None
    doomed: frozenset[str] = frozenset()
    heal: Heal | None = None
    expected: GatewayToken | None = None
    now: datetime | None = None
    look_only: bool = False  # decide, but leave a read target's write for later (a promotion may change it)
    retiring: KeyType | None = None  # a key roll's key: its tokens ARM reproduced are doomed too


@dataclass(frozen=True, slots=True)
class Synced:
    """A target's result. `holds`: the fingerprint its key holds now (its workloads' token);
    `written`: this reconcile wrote it (its workloads restart without a look); `newer`: the
    later-expiring verified token it kept (a candidate for promotion)."""

    report: TargetReport
    holds: str | None = None
    written: bool = False
    newer: GatewayToken | None = None
    owed: str | None = None  # a look-only pass decided to write: the resourceVersion it read


class _Done:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.started = time.monotonic()

    def __call__(self, outcome: Outcome, restarted: Sequence[str] = (), error: str | None = None, *,
                 holds: str | None = None, written: bool = False, newer: GatewayToken | None = None,
                 owed: str | None = None) -> Synced:
        t = self.target
        return Synced(TargetReport(t.cluster, t.namespace, t.secret, outcome, tuple(restarted), error,
                                   int((time.monotonic() - self.started) * 1000)), holds, written, newer, owed)


def _client(deps: Deps, target: Target) -> ClusterClient:
    return deps.clusters.client(deps.registry.clusters[target.cluster])


def sync_secret(deps: Deps, scope: Scope, target: Target, plan: TargetPlan) -> Synced:
    done = _Done(target)
    try:
        client = _client(deps, target)
        source = plan.source
        if source is None:
            return done(Outcome.PLANNED, [str(w) for w in target.restart])
        fast = _write_over_expected(scope, client, target, plan, source, done)
        if fast is not None:
            return fast
        for attempt in (1, 2):
            state = client.read_secret(target.namespace, target.secret, target.key,
                                       timeout=scope.check("reading the Secret"))
            verdict = _verdict(plan, state.value, source)
            action = target_action(verdict, state.value, source.desired.fingerprint, source.desired.expires_at,
                                   target.format, _doomed(plan, verdict))
            if action is not TargetAction.WRITE or plan.plan_only:
                return _without_writing(scope, target, plan, source, verdict, action, done)
            if plan.look_only:
                return done(Outcome.PLANNED, owed=state.resource_version)
            try:
                client.write_secret_key(target.namespace, target.secret, target.key,
                                        source.token().formatted(target.format), state.resource_version,
                                        timeout=scope.writing("writing the Secret"))
            except Conflict:
                if attempt == 2:
                    raise
                continue  # someone else wrote meanwhile: re-read and decide again
            return done(Outcome.UPDATED, holds=source.desired.fingerprint, written=True)
        raise Conflict("unreachable")  # pragma: no cover - the loop always returns or raises
    except RotationError as exc:
        return done(Outcome.TIMEOUT if scope.deadline.left() <= 0 else Outcome.FAILED, error=str(exc))
    except Exception as exc:  # a bug must not take the other targets down with it
        log.exception("unexpected error syncing %s", target)
        return done(Outcome.FAILED, error=f"internal error: {type(exc).__name__}")


def write_owed(deps: Deps, scope: Scope, target: Target, plan: TargetPlan, looked: Synced) -> Synced:
    """The write a look-only pass decided on, against the resourceVersion it read; if the Secret changed
    since, it is read and decided again."""
    if looked.owed is None:
        return looked
    source = plan.source
    assert source is not None
    done = _Done(target)
    try:
        _client(deps, target).write_secret_key(target.namespace, target.secret, target.key,
                                               source.token().formatted(target.format), looked.owed,
                                               timeout=scope.writing("writing the Secret"))
    except Conflict:
        return sync_secret(deps, scope, target, replace(plan, look_only=False, expected=None))
    except RotationError as exc:
        return done(Outcome.TIMEOUT if scope.deadline.left() <= 0 else Outcome.FAILED, error=str(exc))
    return done(Outcome.UPDATED, holds=source.desired.fingerprint, written=True)


def _verdict(plan: TargetPlan, value: str | None, source: TokenSource) -> Verdict:
    assert plan.evidence is not None
    assert plan.now is not None
    return plan.evidence.verdict(value, source.desired.expires_at, plan.now)


def _doomed(plan: TargetPlan, verdict: Verdict) -> frozenset[str]:
    """The roll's doomed Key Vault versions, and the held token if ARM reproduced it with the retiring
    key (Key Vault never held it, but regenerating the key kills it all the same)."""
    token = verdict.token
    if plan.retiring is None or token is None or plan.evidence is None:
        return plan.doomed
    if plan.evidence.proven_key(token.fingerprint) is plan.retiring:
        return plan.doomed | {token.fingerprint}
    return plan.doomed


def _write_over_expected(scope: Scope, client: ClusterClient, target: Target, plan: TargetPlan,
                         source: TokenSource, done: _Done) -> Synced | None:
    """The happy path: the target holds exactly the token Key Vault held before, which the new one
    replaces anyway; one conditional write, no read. None: it did not (read and decide instead)."""
    expected = plan.expected
    if expected is None or plan.plan_only or expected.fingerprint == source.desired.fingerprint:
        return None
    if expected.expires_at > source.desired.expires_at and expected.fingerprint not in plan.doomed:
        return None  # it would be kept as `newer`: decide with a read
    try:
        client.write_secret_key_if(target.namespace, target.secret, target.key,
                                   source.token().formatted(target.format), expected.formatted(target.format),
                                   timeout=scope.writing("writing the Secret"))
    except Conflict:
        return None
    return done(Outcome.UPDATED, holds=source.desired.fingerprint, written=True)


def _without_writing(scope: Scope, target: Target, plan: TargetPlan, source: TokenSource, verdict: Verdict,
                     action: TargetAction, done: _Done) -> Synced:
    if action is TargetAction.FOREIGN:
        return done(Outcome.FAILED, error=(
            f"key {target.key!r} holds a token of gateway {verdict.owner}, verified by its Key Vault versions, "
            f"not of {scope.config.ref.id}: the registry names the wrong Secret or key (nothing written; fix the "
            "registry)"))
    if action is TargetAction.NEWER:
        newer = verdict.token
        return done(Outcome.NEWER, holds=newer.fingerprint if newer else None, newer=newer)
    if action is TargetAction.IN_SYNC:
        return done(Outcome.IN_SYNC, holds=source.desired.fingerprint)
    # A dry run that would write.
    return done(Outcome.PLANNED, [str(w) for w in target.restart],
                error=None if verdict.provenance is not Provenance.UNVERIFIED else
                f"holds an unverified value ({verdict.why}): it would be overwritten")


def _who(heal: Heal | None) -> str:
    return f"gateway instance {heal.instance}" if heal is not None and heal.instance else "a gateway instance"


def restart_workloads(deps: Deps, scope: Scope, target: Target, synced: Synced, heal: Heal | None) -> Synced:
    """Phase 2 for one target: its workloads restarted for the token its Secret holds (see module)."""
    report = synced.report
    if synced.holds is None or report.outcome not in (Outcome.UPDATED, Outcome.IN_SYNC, Outcome.NEWER):
        return synced
    started = time.monotonic()

    def finish(restarted: Sequence[str], error: str | None = None, outcome: Outcome | None = None) -> Synced:
        took = report.duration_ms + int((time.monotonic() - started) * 1000)
        return replace(synced, report=replace(report, restarted=tuple(restarted), error=error or report.error,
                                              outcome=outcome or report.outcome, duration_ms=took))

    if not target.restart:
        if heal is not None and heal.unrestartable_fails and not synced.written:
            return finish((), f"{_who(heal)} still runs an older token than this Secret's, and the target has no "
                              f"`restart` list: restart the gateway's pods in namespace {target.namespace} (kubectl "
                              "rollout restart), or add its workloads to the target's `restart` list in the registry",
                          Outcome.FAILED)
        return synced
    restarted: list[str] = []
    rolling: list[str] = []
    try:
        _restart_each(deps, scope, target, synced, heal, restarted, rolling)
    except RotationError as exc:
        outcome = Outcome.TIMEOUT if scope.deadline.left() <= 0 else Outcome.FAILED
        return finish(restarted, f"restart: {exc}", outcome)
    if restarted and not synced.written:
        emit("rotation.heal", {"gatewayId": scope.config.ref.id, "instance": heal.instance if heal else None,
                               "target": str(target), "restarted": restarted, "fingerprint": synced.holds})
    if rolling and not restarted:
        return finish(restarted, f"{_who(heal)} runs an older token: " + "; ".join(rolling) + " (retry later)",
                      Outcome.FAILED)
    return finish(restarted)


def _restart_each(deps: Deps, scope: Scope, target: Target, synced: Synced, heal: Heal | None,
                  restarted: list[str], rolling: list[str]) -> None:
    """Restarts each workload not restarted for the Secret's token (all of them after a write, without a
    look); `rolling` gets, for a heal, those restarted for it whose rollout has not finished."""
    assert synced.holds is not None
    client = _client(deps, target)
    for workload in target.restart:
        if not synced.written:
            state = client.rollout(target.namespace, workload, timeout=scope.check(f"reading {workload}"))
            if restart_action(state.token_fingerprint, synced.holds) is RestartAction.CURRENT:
                # An event's instance may be an old pod until the rollout ends: the event fails for a
                # retry. A key roll (unrestartable_fails off) waits for rollouts in its phase 2.
                if heal is not None and heal.unrestartable_fails and not state.ready:
                    rolling.append(f"{workload} is still rolling out to the token ({state.detail})")
                continue
        client.restart(target.namespace, workload, deps.clock(), timeout=scope.writing(f"restarting {workload}"),
                       fingerprint=synced.holds)
        restarted.append(str(workload))

"""One target's sync: read its Secret, decide (`rotation.core.convergence`), write, restart its
workloads, clear the restart-pending marker. Returns its result; a target failing never raises, so
one cluster down cannot take the other targets with it."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rotation.app.context import Deps, Scope
from rotation.app.source import TokenSource
from rotation.core.convergence import TargetAction, target_action
from rotation.core.errors import Conflict, RotationError
from rotation.core.model import Outcome, SecretState, Target, TargetReport
from rotation.core.ports import ClusterClient
from rotation.core.restarts import RESTART_PENDING, Heal, HealAction, heal_action
from rotation.core.token import GatewayToken, parse_stored
from rotation.telemetry import emit

log = logging.getLogger("rotation")


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """What every target of one pass does. `plan_only`: read and say, write nothing (a dry run, or
    no token to write); `doomed`: fingerprints a key roll is about to invalidate (overwritten even
    if they expire later); `heal`: restart in-sync targets' workloads whose pods predate the token."""

    source: TokenSource | None
    plan_only: bool
    doomed: frozenset[str] = frozenset()
    heal: Heal | None = None


@dataclass(frozen=True, slots=True)
class Synced:
    """A target's result; `newer`: the later-expiring token it kept (a candidate for promotion)."""

    report: TargetReport
    newer: GatewayToken | None = None


class _Done:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.started = time.monotonic()

    def __call__(self, outcome: Outcome, restarted: Sequence[str] = (), error: str | None = None,
                 newer: GatewayToken | None = None) -> Synced:
        t = self.target
        return Synced(TargetReport(t.cluster, t.namespace, t.secret, outcome, tuple(restarted), error,
                                   int((time.monotonic() - self.started) * 1000)), newer)


def sync_target(deps: Deps, scope: Scope, target: Target, plan: TargetPlan) -> Synced:
    done = _Done(target)
    try:
        client = deps.clusters.client(deps.registry.clusters[target.cluster])
        for attempt in (1, 2):
            state = client.read_secret(target.namespace, target.secret, target.key,
                                       timeout=scope.check("reading the Secret"))
            source = plan.source
            if source is None:
                return done(Outcome.PLANNED, [str(w) for w in target.restart])
            action = target_action(state.value, source.desired, target.format, plan.doomed)
            early = _without_writing(deps, scope, client, target, plan, source, state, action, done)
            if early is not None:
                return early
            marker, version = state.annotations.get(RESTART_PENDING), state.resource_version
            if action is TargetAction.WRITE:
                value = source.token().formatted(target.format)
                marker = source.desired.fingerprint if target.restart else None
                try:
                    version = client.write_secret_key(
                        target.namespace, target.secret, target.key, value, state.resource_version,
                        timeout=scope.writing("writing the Secret"),
                        annotations={RESTART_PENDING: marker} if marker else None)
                except Conflict:
                    if attempt == 2:
                        raise
                    continue  # someone else wrote meanwhile: re-read and decide again
            # else: restarting for a marker found as read
            restarted = restart(deps, scope, client, target, marker, version)
            return done(Outcome.UPDATED if action is TargetAction.WRITE else Outcome.IN_SYNC, restarted)
        raise Conflict("unreachable")  # pragma: no cover - the loop always returns or raises
    except RotationError as exc:
        return done(Outcome.TIMEOUT if scope.deadline.left() <= 0 else Outcome.FAILED, error=str(exc))
    except Exception as exc:  # a bug must not take the other targets down with it
        log.exception("unexpected error syncing %s", target)
        return done(Outcome.FAILED, error=f"internal error: {type(exc).__name__}")


def _without_writing(deps: Deps, scope: Scope, client: ClusterClient, target: Target, plan: TargetPlan,
                     source: TokenSource, state: SecretState, action: TargetAction, done: _Done) -> Synced | None:
    """The result when this target gets no token write (None: it does, or owes a restart)."""
    if action is TargetAction.FOREIGN:
        other = parse_stored(state.value)
        return done(Outcome.FAILED, error=(
            f"key {target.key!r} holds a token of gateway {other.gateway if other else '?'!r}, not "
            f"{scope.config.ref.gateway!r}: the registry names the wrong Secret or key (nothing written; fix "
            "the registry, or empty the key if this Secret really belongs to this gateway)"))
    if action is TargetAction.NEWER:
        return done(Outcome.NEWER, newer=parse_stored(state.value))
    if action is TargetAction.IN_SYNC and not (state.annotations.get(RESTART_PENDING) and target.restart):
        if plan.heal is not None and not plan.plan_only:
            return heal(deps, scope, client, target, source, plan.heal, done)
        return done(Outcome.IN_SYNC)
    if plan.plan_only:
        return done(Outcome.PLANNED, [str(w) for w in target.restart])
    return None


def heal(deps: Deps, scope: Scope, client: ClusterClient, target: Target, source: TokenSource, heal: Heal,
         done: _Done) -> Synced:
    """The Secret holds the current token but pods may still run an older one from their
    environment: restart the workloads that last restarted before the token was stored."""
    who = f"gateway instance {heal.instance}" if heal.instance else "a gateway instance"
    if not target.restart:
        if not heal.unrestartable_fails:
            return done(Outcome.IN_SYNC)
        return done(Outcome.FAILED, error=(
            f"{who} still runs an older token than this Secret's, and the target has no `restart` list: "
            f"restart the gateway's pods in namespace {target.namespace} (kubectl rollout restart), "
            "or add its workloads to the target's `restart` list in the registry"))
    stored_at = source.stored_at()
    now = deps.clock()
    restarted: list[str] = []
    waiting: list[str] = []
    for workload in target.restart:
        state = client.rollout(target.namespace, workload, timeout=scope.check(f"reading {workload}"))
        action = heal_action(state.restarted_at, stored_at, now, heal.cooldown)
        if action is HealAction.RESTART:
            # The rate limit reads restartedAt: only the gateway's writer may act on it.
            client.restart(target.namespace, workload, now, timeout=scope.writing(f"restarting {workload}"))
            restarted.append(str(workload))
        elif action is HealAction.COOLDOWN:
            waiting.append(f"{workload} was restarted at {state.restarted_at:%H:%M:%S} UTC, before the token "
                           f"was stored; not restarted again within {heal.cooldown} (retry later)")
    if restarted:
        emit("rotation.heal", {"gatewayId": scope.config.ref.id, "instance": heal.instance,
                               "target": str(target), "restarted": restarted})
    if waiting:
        return done(Outcome.FAILED, restarted, f"{who} runs an older token: " + "; ".join(waiting))
    return done(Outcome.IN_SYNC, restarted)


def restart(deps: Deps, scope: Scope, client: ClusterClient, target: Target, marker: str | None,
            version: str | None = None) -> list[str]:
    if not target.restart:
        return []
    at = deps.clock()
    restarted = []
    for workload in target.restart:
        client.restart(target.namespace, workload, at, timeout=scope.writing(f"restarting {workload}"))
        restarted.append(str(workload))
    if marker:
        clear_marker(scope, client, target, marker, version)
    return restarted


def clear_marker(scope: Scope, client: ClusterClient, target: Target, marker: str,
                 version: str | None = None) -> None:
    """Removes the restart-pending marker only if it is still the one this writer set or saw (a
    later writer's marker names its own token, whose restart it owes), with a resourceVersion
    precondition so a write landing in between is never unmarked.

    `version` is the Secret's resourceVersion when this writer set or saw `marker` (the write's
    answer): if the Secret is still at it, the marker is this writer's, so no read is needed."""
    if version:
        try:
            client.annotate_secret(target.namespace, target.secret, {RESTART_PENDING: None},
                                   timeout=scope.check("clearing the restart marker"), resource_version=version)
            return
        except Conflict:
            pass  # written since: read whose marker it is now
    for attempt in (1, 2):
        state = client.read_secret(target.namespace, target.secret, target.key,
                                   timeout=scope.check("reading the Secret"))
        if state.annotations.get(RESTART_PENDING) != marker:
            return
        try:
            client.annotate_secret(target.namespace, target.secret, {RESTART_PENDING: None},
                                   timeout=scope.check("clearing the restart marker"),
                                   resource_version=state.resource_version)
            return
        except Conflict:
            if attempt == 2:
                raise

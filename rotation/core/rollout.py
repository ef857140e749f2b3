"""Whether a workload finished rolling out: `kubectl rollout status` semantics, from the object's spec,
metadata and status (API JSON), per kind (kubectl's `polymorphichelpers/rollout_status.go`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rotation.core.model import WorkloadKind


def _n(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def rollout_status(kind: WorkloadKind, obj: Mapping[str, Any]) -> tuple[bool, str]:
    """(done, what it waits for or how it ended)."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status")
    if not isinstance(status, dict) or _n(status.get("observedGeneration")) < _n(meta.get("generation")):
        return False, "waiting for the new spec to be observed"
    if kind is WorkloadKind.DAEMONSET:
        return _daemonset(status)
    desired = _n(spec.get("replicas")) if spec.get("replicas") is not None else 1
    if kind is WorkloadKind.DEPLOYMENT:
        return _deployment(status, desired)
    return _statefulset(spec, status, desired)


def _daemonset(status: Mapping[str, Any]) -> tuple[bool, str]:
    desired = _n(status.get("desiredNumberScheduled"))
    updated = _n(status.get("updatedNumberScheduled"))
    available = _n(status.get("numberAvailable"))
    if updated < desired:
        return False, f"{updated}/{desired} updated"
    if available < desired:
        return False, f"{available}/{desired} available"
    return True, f"rolled out ({available}/{desired} available)"


def _deployment(status: Mapping[str, Any], desired: int) -> tuple[bool, str]:
    updated = _n(status.get("updatedReplicas"))
    ready = _n(status.get("readyReplicas"))
    total = _n(status.get("replicas"))
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return False, "progress deadline exceeded"
    available = _n(status.get("availableReplicas"))
    if updated < desired:
        return False, f"{updated}/{desired} updated"
    if total > updated:
        old = total - updated
        return False, f"{old} old replica{'s' if old != 1 else ''} pending termination"
    if ready < desired:
        return False, f"{ready}/{desired} ready"
    if available < desired:
        return False, f"{available}/{desired} available"
    return True, f"rolled out ({available}/{desired} available)"


def _statefulset(spec: Mapping[str, Any], status: Mapping[str, Any], desired: int) -> tuple[bool, str]:
    updated = _n(status.get("updatedReplicas"))
    ready = _n(status.get("readyReplicas"))
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") == "OnDelete":
        return False, "updateStrategy OnDelete: pods change only when deleted"
    partition = _n((strategy.get("rollingUpdate") or {}).get("partition"))
    if updated < desired - partition:
        return False, f"{updated}/{desired - partition} updated"
    if ready < desired:
        return False, f"{ready}/{desired} ready"
    update_revision = status.get("updateRevision")
    if partition == 0 and update_revision and status.get("currentRevision") != update_revision:
        return False, f"{updated}/{desired} updated (rolling update in progress)"
    return True, f"rolled out ({ready}/{desired} ready)"

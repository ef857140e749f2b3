"""A stand-in for kube-controller-manager's rollout bookkeeping on the devstack clusters.

The devstack runs kube-apiserver without controllers or kubelets, so a restarted workload would
never finish rolling out. This loop plays the controller: when a Deployment, StatefulSet or
DaemonSet has a generation its status has not observed, it writes the status a healthy rollout
ends with (after `delay` seconds, so "rolling" is observable). Creating a file `controller.paused`
in the stack directory freezes it: tests use that to model a rollout that does not finish.

    python -m devstack.controller --dir D
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from devstack import kube

_KINDS = ("deployment", "stateful_set", "daemon_set")
_MERGE = "application/merge-patch+json"


def _complete(kind: str, generation: int, replicas: int) -> dict[str, Any]:
    if kind == "daemon_set":
        return {"observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                "updatedNumberScheduled": 1, "numberReady": 1, "numberAvailable": 1, "numberMisscheduled": 0}
    status = {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
              "readyReplicas": replicas, "availableReplicas": replicas}
    if kind == "stateful_set":
        status["currentReplicas"] = replicas
    return status


def reconcile_once(api: Any, first_seen: dict[str, float], delay: float) -> int:
    """One pass over every workload of one cluster; returns how many statuses were written."""
    from kubernetes import client

    apps = client.AppsV1Api(api)
    written = 0
    now = time.monotonic()
    for kind in _KINDS:
        for obj in getattr(apps, f"list_{kind}_for_all_namespaces")().items:
            meta, status = obj.metadata, obj.status
            generation = int(meta.generation or 1)
            observed = int(getattr(status, "observed_generation", None) or 0) if status is not None else 0
            if observed >= generation:
                continue
            key = f"{kind}/{meta.namespace}/{meta.name}@{generation}"
            first_seen.setdefault(key, now)
            if now - first_seen[key] < delay:
                continue
            replicas = int(getattr(obj.spec, "replicas", None) or 1)
            getattr(apps, f"patch_namespaced_{kind}_status")(
                meta.name, meta.namespace, {"status": _complete(kind, generation, replicas)}, _content_type=_MERGE)
            written += 1
    return written


def run(directory: Path, stop: threading.Event, *, delay: float = 0.5, interval: float = 0.25) -> None:
    raw = json.loads((directory / "stack.json").read_text())
    clusters = [kube.ClusterInfo(c["name"], c["server"], c["adminToken"], Path(c["ca"])) for c in raw["clusters"]]
    apis = [kube.api_client(c) for c in clusters]
    seen: dict[str, float] = {}
    while not stop.wait(interval):
        if (directory / "controller.paused").exists():
            continue
        for api in apis:
            try:
                reconcile_once(api, seen, delay)
            except Exception as exc:  # noqa: BLE001 - a stand-in controller keeps going, like the real one
                print(f"controller: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.controller")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds a rollout stays in progress")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(Path(args.dir), stop, delay=args.delay)
    return 0


if __name__ == "__main__":
    sys.exit(main())

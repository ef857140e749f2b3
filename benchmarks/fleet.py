"""One event, 1,000 targets over 100 clusters, against the 20 s deadline.

Setup: 100 registry clusters `fleet-00`..`fleet-99` (auth `aks`), each one port of
`benchmarks._proxies` in front of the devstack's `east` or `west` apiserver (alternating), so the app
holds 100 clusters' clients and connection pools while the machine runs two apiservers. Each cluster
has 10 targets (namespace `fleet-NN`, one Secret and one Deployment each) and one Role/RoleBinding
per namespace with infra/k8s/role.yaml's rules (`get`/`patch` on exactly those Secrets and
Deployments, by name). One gateway holds all 1,000 targets.

Measured in a fresh process of its own (`python -m benchmarks.fleet --worker`, so its peak RSS and
CPU are the app's; the proxies and the devstack run in other processes), with the app's own Rotator
and adapters over real TLS and RBAC, forced rotation as an event would trigger it:
- `cold`: the first reconcile of a fresh app at 100 ms added per round trip (every connection new);
- `warm`: the same reconcile again in the same app (pooled connections, cached token);
- `adapter floor`: the same app's adapters making each target's two writes (conditional Secret write,
  restart with the token fingerprint; no read) from a plain pool of the service's fan-out size;
- `slow`: a fresh app at 1 s per round trip; the first delivery hits the deadline, and redeliveries
  (the event handler's reconcile, not forced, as Event Grid redelivers a failed event, after
  REDELIVERY_GAP seconds) finish the targets that were not reached.
Kubernetes calls per target are the proxies' client flights (one per HTTP request on a kept-alive
connection; a new TLS connection adds about two) divided by the targets.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from benchmarks._app import fanout_module
from benchmarks._proxies import Proxies, running
from benchmarks._stack import Control, apply_by_namespace, parallel, workload
from devstack import stack as devstack

CLUSTERS = 100
PER_CLUSTER = 10
TARGETS = CLUSTERS * PER_CLUSTER
LATENCY = 0.1
SLOW_LATENCY = 1.0
DEADLINE = 20.0
REDELIVERY_GAP = 10.0  # Event Grid's first retry waits about 10 s
MAX_DELIVERIES = 8
GATEWAY = "gw-fleet"
APISERVERS = ("east", "west")
KEY = "config.service.auth.key"


def _cluster(i: int) -> str:
    return f"fleet-{i:02d}"


def _targets() -> list[dict[str, Any]]:
    return [{"cluster": _cluster(c), "namespace": _cluster(c), "secret": f"{_cluster(c)}-{k}-token",
             "restart": [f"deployment/{_cluster(c)}-{k}"]}
            for c in range(CLUSTERS) for k in range(PER_CLUSTER)]


def _apiserver(cluster_index: int) -> str:
    return APISERVERS[cluster_index % len(APISERVERS)]


def _role(namespace: str, secrets: list[str], deployments: list[str], principal: str) -> list[dict[str, Any]]:
    """infra/k8s/role.yaml's rules for every target of one namespace, as one Role."""
    name = "apim-token-rotator-fleet"
    labels = {"app.kubernetes.io/name": "apim-token-rotator"}
    rules = [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["", *secrets], "verbs": ["get", "patch"]},
             {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["", *deployments],
              "verbs": ["get", "patch"]}]
    return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": name, "namespace": namespace, "labels": labels}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": name, "namespace": namespace, "labels": labels},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": principal}]}]


def setup(stack: devstack.Stack) -> None:
    docs: dict[str, list[dict[str, Any]]] = {name: [] for name in APISERVERS}
    for c in range(CLUSTERS):
        ns = _cluster(c)
        mine = [t for t in _targets() if t["namespace"] == ns]
        out = docs[_apiserver(c)]
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for t in mine:
            out.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": t["secret"], "namespace": ns},
                        "stringData": {KEY: "GatewayKey placeholder"}})
            out.append(workload("deployment", t["restart"][0].split("/")[1], ns, t["secret"]))
        out.extend(_role(ns, [t["secret"] for t in mine], [t["restart"][0].split("/")[1] for t in mine],
                         devstack.APP_PRINCIPAL))
    for name, cluster_docs in docs.items():
        apply_by_namespace(stack, name, cluster_docs)
    Control(stack).call(stack.arm_url, "POST", "/_devstack/gateways", {"id": devstack.gateway_id(GATEWAY)})


def run(stack: devstack.Stack) -> dict[str, Any]:
    """Seeds the fleet, then measures in a fresh worker process."""
    started = time.monotonic()
    setup(stack)
    seeded = time.monotonic() - started
    proc = subprocess.run([sys.executable, "-m", "benchmarks.fleet", "--worker", str(stack.dir)],
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"fleet worker failed ({proc.returncode}): {proc.stderr[-3000:]}")
    # The worker's progress lines (its app's per-target records go to stderr too: left out).
    sys.stderr.writelines(line for line in proc.stderr.splitlines(keepends=True) if line.startswith("fleet:"))
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["seed_s"] = round(seeded, 1)
    return result


# --- the worker process ---------------------------------------------------------------------------


@contextmanager
def _proxies(stack: devstack.Stack) -> Iterator[Proxies]:
    upstreams = []
    for name in APISERVERS:
        server = urlsplit(stack.cluster(name).server)
        assert server.hostname is not None
        assert server.port is not None
        upstreams.append((server.hostname, server.port))
    with running(upstreams, CLUSTERS, LATENCY) as proxies:
        yield proxies


def _env(stack: devstack.Stack, urls: list[str]) -> dict[str, str]:
    registry = json.loads(stack.settings["ROTATION_REGISTRY"])
    east = next(c for c in registry["clusters"] if c["name"] == "east")
    registry["clusters"] = [{"name": _cluster(i), "auth": "aks", "server": url, "caData": east["caData"]}
                            for i, url in enumerate(urls)]
    registry["gateways"] = [{"id": devstack.gateway_id(GATEWAY), "targets": _targets()}]
    return {**stack.settings, "ROTATION_REGISTRY": json.dumps(registry)}


def _peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def adapter_floor(rotator: Any, proxies: Proxies, reset_targets: Callable[[], None]) -> dict[str, Any]:
    """The warm app's adapters doing each target's two writes (the Secret key conditionally on the
    value it holds, one restart PATCH with the token's fingerprint), no read, no service, as many
    threads as the service's fan-out: what the reconcile costs at best once it uses them."""
    from datetime import UTC, datetime

    config = rotator.gateway("apim-devstack", GATEWAY)
    value = rotator.store.get(config.key_vault_secret, timeout=30).token
    mark = value.fingerprint

    def two_writes(t: Any) -> None:
        client = rotator.clusters.client(rotator.registry.clusters[t.cluster])
        client.write_secret_key_if(t.namespace, t.secret, t.key, value.formatted(t.format), "GatewayKey stale",
                                   timeout=DEADLINE)
        client.restart(t.namespace, t.restart[0], datetime.now(UTC), timeout=DEADLINE, fingerprint=mark)

    reset_targets()
    proxies.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    parallel(config.targets, two_writes, workers=fanout_module().MAX_FANOUT)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = proxies.stats()
    return {"wall_s": round(wall, 2), "cpu_ms_per_target": round(cpu * 1000 / TARGETS, 2),
            "flights_per_target": round(stats["flights"] / TARGETS, 2), "new_connections": stats["connections"]}


def worker(stack_dir: str) -> dict[str, Any]:
    stack = devstack.Stack.load(stack_dir)
    from kubernetes import client as k8s

    admins = {name: k8s.CoreV1Api(stack.admin(name)) for name in APISERVERS}

    def reset_targets() -> None:
        """Every run starts from stale Secrets (a forced rotation within the same minute mints the
        same token), written as admin straight to the apiservers."""
        index = {_cluster(c): _apiserver(c) for c in range(CLUSTERS)}
        parallel(_targets(), lambda t: admins[index[t["cluster"]]].patch_namespaced_secret(
            t["secret"], t["namespace"], {"stringData": {KEY: "GatewayKey stale"}}), workers=16)

    with _proxies(stack) as proxies:
        env = _env(stack, proxies.urls)
        os.environ.update(env)
        from rotation import bootstrap

        def reconcile(force: bool) -> dict[str, Any]:
            box = bootstrap.container()
            config = box.rotator.gateway("apim-devstack", GATEWAY)
            proxies.reset()
            wall, cpu = time.perf_counter(), time.process_time()
            report = box.rotator.reconcile(config, reason="benchmark", force=force, deadline_seconds=DEADLINE)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            stats = proxies.stats()
            outcomes = Counter(t.outcome.value for t in report.targets)
            return {"wall_s": round(wall, 2), "cpu_ms_per_target": round(cpu * 1000 / TARGETS, 2),
                    "outcomes": dict(outcomes), "flights_per_target": round(stats["flights"] / TARGETS, 2),
                    "new_connections": stats["connections"], "peak_rss_mib": _peak_rss_mib()}

        reset_targets()
        bootstrap.reset(env)
        _say(f"fleet: cold reconcile of {TARGETS} targets over {CLUSTERS} clusters (+{LATENCY * 1000:.0f} ms)…")
        cold = reconcile(force=True)
        _say(f"fleet: cold {cold}")
        warm_runs = []
        for _ in range(2):
            reset_targets()
            warm_runs.append(reconcile(force=True))
            _say(f"fleet: warm {warm_runs[-1]}")
        warm = min(warm_runs, key=lambda r: r["wall_s"])
        floor = adapter_floor(bootstrap.container().rotator, proxies, reset_targets)
        _say(f"fleet: adapter floor {floor}")

        # Past the deadline: 1 s per round trip, a fresh app, redelivered until every target is done.
        proxies.set_latency(SLOW_LATENCY)
        proxies.cut()
        reset_targets()
        bootstrap.reset(env)
        deliveries = []
        for n in range(1, MAX_DELIVERIES + 1):
            run_ = reconcile(force=n == 1)
            deliveries.append(run_)
            _say(f"fleet: +{SLOW_LATENCY:g} s per round trip, delivery {n}: {run_}")
            done = sum(run_["outcomes"].get(o, 0) for o in ("updated", "in_sync"))
            if done == TARGETS:
                break
            time.sleep(REDELIVERY_GAP)
        bootstrap.reset()

    return {
        "clusters": CLUSTERS, "targets": TARGETS, "latency_ms": LATENCY * 1000, "deadline_s": DEADLINE,
        "slow_latency_ms": SLOW_LATENCY * 1000, "redelivery_gap_s": REDELIVERY_GAP,
        "cold": cold, "warm": warm, "adapter_floor": floor, "slow_deliveries": deliveries,
        "slow_deliveries_needed": len(deliveries)
        if sum(deliveries[-1]["outcomes"].get(o, 0) for o in ("updated", "in_sync")) == TARGETS else None,
        "cold_within_deadline": cold["outcomes"].get("updated", 0) == TARGETS and cold["wall_s"] <= DEADLINE,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(worker(sys.argv[2])), flush=True)
        sys.exit(0)
    sys.exit("usage: python -m benchmarks.fleet --worker STACK_DIR (run through python -m benchmarks)")

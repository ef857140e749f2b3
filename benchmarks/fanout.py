"""One reconcile fanned out to 100 targets, every Kubernetes call 50 ms slower.

Setup: one gateway with 100 targets on the devstack's `east` cluster (10 namespaces × 10 Secrets,
each target restarting its own Deployment), the Role/RoleBinding from `infra/k8s/` rendered and
applied for each target, and the registry's `east.server` pointing at a `devstack.proxy` port
(`benchmarks._proxies`) with 50 ms added to every client flight (one flight = one HTTP request on a
kept-alive connection).

Measured with the app's own Rotator and adapters (real SDKs, real TLS, real RBAC), forced rotation:
- `critical path`: one ARM generateToken + one Key Vault write + one Secret patch + one restart
  patch, sequential, on warm connections (median of 5): what a single target costs at best;
- `fan-out (warm)`: the reconcile in a worker that has served one before (pooled connections);
- `fan-out (cold)`: the first reconcile of a fresh app (client build, 100 TLS handshakes);
- `sequential`: the same reconcile with the service's fan-out limited to 1 thread;
- `adapter floor`: the two writes per target the adapter offers (a conditional Secret write and a
  restart carrying the token fingerprint, no read), fanned out by a plain thread pool: what the
  reconcile's fan-out costs at best on this machine once the service uses them.

Kubernetes calls per target are counted, not assumed: the proxy's client flights during a warm
reconcile (one flight per request on a kept-alive connection) divided by the targets. Each call in
sequence adds the injected latency, against 100 ms for the critical path's patch + restart.
`app_cpu_ms` is this process's CPU time (all threads) for the reconcile without injected latency;
`busy_cores_*` is how many of the machine's cores were busy (every process: the app, two
kube-apiservers, etcd, the latency proxy) while a reconcile ran.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks._proxies import Proxies, running
from benchmarks._stack import Control, apply_by_namespace, parallel, workload
from devstack import kube
from devstack import stack as devstack

TARGETS = 100
LATENCY = 0.05
GATEWAY = "gw-fanout"
GOAL_CRITICAL = 2.0
GOAL_SEQUENTIAL = 20.0


def _targets() -> list[dict[str, Any]]:
    return [{"cluster": "east", "namespace": f"fan-{i // 10}", "secret": f"fan-{i:03d}-token",
             "restart": [f"deployment/fan-{i:03d}"]} for i in range(TARGETS)]


def setup(stack: devstack.Stack) -> None:
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"fan-{n}"}}
                                  for n in range(TARGETS // 10)]
    for t in _targets():
        name = t["restart"][0].split("/")[1]
        docs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": t["secret"], "namespace": t["namespace"]},
                     "stringData": {"config.service.auth.key": "GatewayKey placeholder"}})
        docs.append(workload("deployment", name, t["namespace"], t["secret"]))
        docs.extend(kube.render_rbac(t["namespace"], t["secret"], t["restart"], devstack.APP_PRINCIPAL, "aks"))
    apply_by_namespace(stack, "east", docs)
    Control(stack).call(stack.arm_url, "POST", "/_devstack/gateways", {"id": devstack.gateway_id(GATEWAY)})


def _machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has spent so far (Linux `/proc/stat`, all cores)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _env(stack: devstack.Stack, proxy: Proxies) -> dict[str, str]:
    registry = json.loads(stack.settings["ROTATION_REGISTRY"])
    for cluster in registry["clusters"]:
        if cluster["name"] == "east":
            cluster["server"] = proxy.urls[0]
    registry["gateways"] = [{"id": devstack.gateway_id(GATEWAY), "targets": _targets()}]
    return {**stack.settings, "ROTATION_REGISTRY": json.dumps(registry)}


def run(stack: devstack.Stack) -> dict[str, Any]:
    from benchmarks._app import fanout_module
    from rotation import bootstrap
    from rotation.core.model import KeyType, Outcome, TokenRecord
    from rotation.core.token import GatewayToken

    setup(stack)
    server = urlsplit(stack.cluster("east").server)
    assert server.hostname is not None
    assert server.port is not None
    # The proxy runs in its own process: in this one its 200 pump threads would compete with the
    # app's fan-out for the GIL and charge the app for the test rig's CPU.
    with running([(server.hostname, server.port)], 1, LATENCY) as proxy:
        env = _env(stack, proxy)
        os.environ.update(env)
        rig = {"proxy": proxy}  # the proxy process the next reconcile goes through

        from kubernetes import client as k8s

        admin = k8s.CoreV1Api(stack.admin("east"))

        def reset_targets() -> None:
            """A forced rotation in the same minute yields the same token (same expiry, same key), so
            every run starts from stale Secrets (written as admin, straight to the apiserver)."""
            parallel(_targets(), lambda t: admin.patch_namespaced_secret(
                t["secret"], t["namespace"], {"stringData": {"config.service.auth.key": "GatewayKey stale"}}))

        cpu_samples: list[float] = []  # this process's CPU (every thread) per reconcile
        flights: list[float] = []  # Kubernetes round trips per target (the proxy's client flights)
        busy_samples: list[float] = []  # the whole machine's busy cores during each reconcile

        runs = [0]

        def reconcile() -> tuple[float, Any]:
            """A rotation as the event path does it: every target holds the token Key Vault held before
            (the previous run's, written by the product), and the new token expires a minute later than
            it (a forced rotation in the same minute would otherwise yield the same token). Only the
            first run starts from stale Secrets."""
            box = bootstrap.container()
            if runs[0] == 0 or box.rotator.token_lifetime < timedelta(days=20):
                reset_targets()
                box.rotator.token_lifetime = timedelta(days=20)
            box.rotator.token_lifetime += timedelta(minutes=1)
            runs[0] += 1
            config = box.rotator.gateway("apim-devstack", GATEWAY)
            rig["proxy"].reset()
            started, cpu, busy = time.perf_counter(), time.process_time(), _machine_busy_seconds()
            report = box.rotator.reconcile(config, reason="benchmark", force=True, deadline_seconds=120)
            took = time.perf_counter() - started
            flights.append(rig["proxy"].stats()["flights"] / TARGETS)
            cpu_samples.append(time.process_time() - cpu)
            busy_samples.append((_machine_busy_seconds() - busy) / took)
            assert all(t.outcome is Outcome.UPDATED for t in report.targets), report.failed_targets[:3]
            return took, report

        bootstrap.reset(env)
        cold, _ = reconcile()
        warm_runs = [reconcile()[0] for _ in range(3)]
        warm = statistics.median(warm_runs)
        calls_per_target = statistics.median(flights[1:4])  # warm: no new connection, one flight per call

        # The critical path, with the same adapters on warm connections.
        box = bootstrap.container()
        rotator = box.rotator
        config = rotator.gateway("apim-devstack", GATEWAY)
        target = config.targets[0]
        client = rotator.clusters.client(rotator.registry.clusters["east"])
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            value = rotator.issuer.generate_token(config.ref, KeyType.PRIMARY,
                                                  datetime.now(UTC) + timedelta(days=29), timeout=30)
            token = GatewayToken.parse(value)
            t1 = time.perf_counter()
            rotator.store.put(config.key_vault_secret, TokenRecord(token, KeyType.PRIMARY, config.ref.id), timeout=30)
            t2 = time.perf_counter()
            state = client.read_secret(target.namespace, target.secret, target.key, timeout=30)  # not timed
            t3 = time.perf_counter()
            client.write_secret_key(target.namespace, target.secret, target.key, token.formatted(target.format),
                                    state.resource_version, timeout=30)
            t4 = time.perf_counter()
            client.restart(target.namespace, target.restart[0], datetime.now(UTC), timeout=30)
            t5 = time.perf_counter()
            samples.append((t1 - t0, t2 - t1, t4 - t3, t5 - t4))
        arm, kv, patch, restart = (statistics.median(s[i] for s in samples) for i in range(4))
        # The goal's critical path: ARM + Key Vault + one Secret patch + one restart call (a PATCH).
        critical = arm + kv + patch + restart

        # The adapter's floor for the same fan-out: each target's two writes (the Secret key written
        # conditionally on the value it holds, one restart PATCH carrying the token's fingerprint), no
        # read, no service around them; the same thread count as the service's fan-out.
        floor_token = GatewayToken.parse(value)

        def two_writes(t: Any) -> None:
            client.write_secret_key_if(t.namespace, t.secret, t.key, floor_token.formatted(t.format),
                                       "GatewayKey stale", timeout=30)
            client.restart(t.namespace, t.restart[0], datetime.now(UTC), timeout=30,
                           fingerprint=floor_token.fingerprint)

        floors = []
        for _ in range(3):
            reset_targets()
            t0 = time.perf_counter()
            parallel(config.targets, two_writes, workers=min(TARGETS, fanout_module().MAX_FANOUT))
            floors.append(time.perf_counter() - t0)
        floor = statistics.median(floors)
        runs[0] = 0  # the floor left its own token in the targets: one rotation from stale Secrets first,
        reconcile()  # so the sequential run below is a rotation like the others

        # Sequential: the same reconcile with one fan-out thread.
        import rotation.app.fanout as fanout

        saved = fanout.MAX_FANOUT
        fanout.MAX_FANOUT = 1
        try:
            sequential, _ = reconcile()
        finally:
            fanout.MAX_FANOUT = saved
        bootstrap.reset()

    # The same warm reconcile with no injected latency: what the 2-core machine's CPU (app, two
    # kube-apiservers and etcd share it) costs by itself.
    with running([(server.hostname, server.port)], 1, 0.0) as plain:
        env = _env(stack, plain)
        os.environ.update(env)
        rig["proxy"] = plain
        bootstrap.reset(env)
        reconcile()
        warm_busy = statistics.median(busy_samples[1:4])  # the warm runs (after the cold one)
        cpu_samples.clear()
        busy_samples.clear()
        no_latency = statistics.median(reconcile()[0] for _ in range(3))
        app_cpu = statistics.median(cpu_samples)
        no_latency_busy = statistics.median(busy_samples)
        bootstrap.reset()

    return {
        "no_latency_ms": round(no_latency * 1000), "app_cpu_ms": round(app_cpu * 1000),
        "cores": os.cpu_count(), "busy_cores_warm": round(warm_busy, 2),
        "busy_cores_no_latency": round(no_latency_busy, 2),
        "targets": TARGETS, "latency_ms": LATENCY * 1000,
        "critical_ms": round(critical * 1000), "critical_parts_ms": {
            "arm": round(arm * 1000, 1), "keyvault": round(kv * 1000, 1), "patch": round(patch * 1000, 1),
            "restart": round(restart * 1000, 1)},
        "warm_ms": round(warm * 1000), "cold_ms": round(cold * 1000), "sequential_ms": round(sequential * 1000),
        "adapter_floor_ms": round(floor * 1000), "adapter_floor_vs_critical": round(floor / critical, 2),
        "warm_vs_critical": round(warm / critical, 2), "cold_vs_critical": round(cold / critical, 2),
        "sequential_vs_warm": round(sequential / warm, 1),
        "kube_requests_per_target": round(calls_per_target, 2),
        "goal_critical": GOAL_CRITICAL, "goal_sequential": GOAL_SEQUENTIAL,
        "met_critical": warm / critical <= GOAL_CRITICAL, "met_sequential": sequential / warm >= GOAL_SEQUENTIAL,
    }

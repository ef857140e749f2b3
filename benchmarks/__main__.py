"""`python -m benchmarks` (`make bench`): every benchmark, a table of figures against the goals, and
`benchmarks/results.md`.

Timings are printed, never asserted: a 2-core CI machine's load would make timing assertions flaky,
and the point is the ratios, which hold across machines. The devstack benchmarks start their own
stack in a temporary directory and stop it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import cold_import, fanout, fleet, sweep

RESULTS = Path(__file__).resolve().parent / "results.md"


def _ok(met: object) -> str:
    return "met" if met else "**not met**"


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = ["| benchmark | figure | goal | result |", "|---|---|---|---|"]
    c = results.get("cold_import")
    if c:
        rows.append(f"| cold import | `function_app` {c['function_app_ms']} ms vs `azure.functions` "
                    f"{c['azure_functions_ms']} ms (median of {c['runs']} fresh interpreters; whole "
                    f"process {c['process_function_app_ms']} vs {c['process_azure_functions_ms']} ms) | "
                    f"≤ {c['goal']}× | {c['ratio']}× {_ok(c['met'])} |")
    f = results.get("fanout")
    if f:
        parts = f["critical_parts_ms"]
        head = f"1 event → {f['targets']} targets, +{f['latency_ms']:.0f} ms per Kubernetes call: vs critical path"
        figure = (f"reconcile {f['warm_ms']} ms (warm worker; first reconcile of a fresh app {f['cold_ms']} ms "
                  f"= {f['cold_vs_critical']}×; {f['no_latency_ms']} ms with no injected latency, of which "
                  f"{f['app_cpu_ms']} ms CPU in the app; machine busy {f['busy_cores_warm']} of {f['cores']} "
                  f"cores during the reconcile) vs critical path {f['critical_ms']} ms (ARM "
                  f"{parts['arm']} + Key Vault {parts['keyvault']} + patch {parts['patch']} + restart "
                  f"{parts['restart']})")
        rows.append(f"| {head} | {figure} | ≤ {f['goal_critical']}× | {f['warm_vs_critical']}× "
                    f"{_ok(f['met_critical'])} |")
        rows.append(f"| same, vs sequential | sequential {f['sequential_ms']} ms vs {f['warm_ms']} ms "
                    f"({f['kube_requests_per_target']} Kubernetes calls per target) | ≥ "
                    f"{f['goal_sequential']:.0f}× faster | {f['sequential_vs_warm']}× {_ok(f['met_sequential'])} |")
    fl = results.get("fleet")
    if fl:
        rows.extend(fleet_rows(fl))
    s = results.get("sweep")
    if s:
        rows.append(f"| sweep of {s['gateways']} fresh gateways: Key Vault calls | {s['keyvault_calls']} "
                    f"({s['keyvault_non_list_calls']} outside the listing; {s['secrets_in_vault']} secrets in the "
                    f"vault) | ≤ {s['listing_pages']} (the pages of one listing) | {_ok(s['met_keyvault'])} |")
        rows.append(f"| same: ARM calls | {s['arm_calls']} | 0 | {_ok(s['met_arm'])} |")
        rows.append(f"| same: wall time, memory | {s['cold_s']} s first sweep, {s['warm_s']} s warm; peak "
                    f"{s['traced_peak_mib']} MiB traced (tracemalloc), {s['max_rss_mib']} MiB max RSS of the "
                    f"benchmark process | – | – |")
    return "\n".join(rows)


def fleet_rows(fl: dict[str, Any]) -> list[str]:
    def run(r: dict[str, Any]) -> str:
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(r["outcomes"].items()))
        return (f"{r['wall_s']} s ({outcomes}); app CPU {r['cpu_ms_per_target']} ms per target; "
                f"{r['flights_per_target']} Kubernetes round trips per target ({r['new_connections']} new "
                f"connections); peak RSS {r['peak_rss_mib']} MiB")

    head = (f"1 event → {fl['targets']} targets over {fl['clusters']} clusters, +{fl['latency_ms']:.0f} ms per "
            "round trip")
    cold, warm = fl["cold"], fl["warm"]
    rows = [f"| {head}, fresh app | {run(cold)} | all updated within the {fl['deadline_s']:.0f} s deadline | "
            f"{cold['wall_s']} s {_ok(fl['cold_within_deadline'])} |",
            f"| same, warm app | {run(warm)} | – | {round(warm['wall_s'] / fl['deadline_s'] * 100)}% of the "
            "deadline |"]
    steps = "; ".join(f"delivery {i}: {d['wall_s']} s, "
                      + ", ".join(f"{n} {o}" for o, n in sorted(d["outcomes"].items()))
                      for i, d in enumerate(fl["slow_deliveries"], 1))
    needed = fl["slow_deliveries_needed"]
    rows.append(f"| same at +{fl['slow_latency_ms']:.0f} ms per round trip (past the deadline; redelivered after "
                f"{fl['redelivery_gap_s']:.0f} s) | {steps} | reached targets kept, the rest `timeout`, "
                f"redeliveries finish | {f'{needed} deliveries' if needed else '**not finished**'} |")
    return rows


def machine() -> str:
    return (f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} "
            f"{platform.machine()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", choices=["cold_import", "fanout", "fleet", "sweep"], action="append")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite benchmarks/results.md")
    parser.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = parser.parse_args(argv)
    chosen = args.only or ["cold_import", "fanout", "fleet", "sweep"]
    results: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    if "cold_import" in chosen:
        print("cold import…", file=sys.stderr, flush=True)
        results["cold_import"] = cold_import.run()
    if {"fanout", "fleet", "sweep"} & set(chosen):
        from devstack import stack as devstack

        with tempfile.TemporaryDirectory(prefix="bench-devstack-") as tmp:
            print("starting the devstack…", file=sys.stderr, flush=True)
            saved = dict(os.environ)
            running = devstack.up(tmp, say=lambda m: print(m, file=sys.stderr))
            try:
                os.environ.update(running.settings)
                if "fanout" in chosen:
                    print("fan-out to 100 targets…", file=sys.stderr, flush=True)
                    results["fanout"] = fanout.run(running)
                if "fleet" in chosen:
                    print("one event to 1,000 targets over 100 clusters…", file=sys.stderr, flush=True)
                    results["fleet"] = fleet.run(running)
                if "sweep" in chosen:
                    print("sweep of 1,000 gateways…", file=sys.stderr, flush=True)
                    results["sweep"] = sweep.run(running)
            finally:
                os.environ.clear()
                os.environ.update(saved)
                devstack.down(tmp)
    text = table(results)
    header = f"Machine: {machine()}. Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {time.monotonic() - started:.0f} s."
    print(header)
    print(text)
    if args.json:
        print(json.dumps(results, indent=2))
    if not args.no_write and args.only is None:
        RESULTS.write_text(f"# Benchmark results\n\nGenerated by `make bench` (`python -m benchmarks`). {header}\n\n"
                           f"{text}\n\n```json\n{json.dumps(results, indent=2)}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cold import of `function_app` against `import azure.functions` alone.

The Functions worker imports `function_app` to index the app on every cold start; everything it
pulls in is paid before the first event is handled. The app keeps every SDK import lazy, so the
goal is that indexing costs at most 1.3x what azure.functions itself costs. Each sample is a fresh
interpreter (`-X importtime` is not used: it slows imports down unevenly); the median of N runs.
Wall time on a shared machine swings with the load of its neighbours, so the CPU time the import
takes (`time.process_time`) is measured too; `met` asks the goal of both.

The app's telemetry stays out of this budget: rotation/telemetry.py imports OpenTelemetry only when the
worker has already configured it (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true), and the
worker pays for that itself, before it imports the app.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL = 1.3


def _once(module: str) -> tuple[float, float]:
    """(wall, cpu) seconds of one `import module` in a fresh interpreter."""
    code = (f"import time; t, c = time.perf_counter(), time.process_time(); import {module}; "
            f"print(time.perf_counter() - t, time.process_time() - c)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "0"})
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def _process(module: str) -> float:
    """Wall time of a whole `python -c 'import X'` (interpreter start included)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, check=True,
                   env={"PATH": "/usr/bin:/bin"})
    return time.perf_counter() - started


def run(runs: int = 15) -> dict[str, object]:
    for module in ("azure.functions", "function_app"):  # warm the bytecode caches once
        _once(module)
    base: list[tuple[float, float]] = []
    app: list[tuple[float, float]] = []
    base_proc, app_proc = [], []
    for _ in range(runs):  # interleaved, so drift in machine load hits both alike
        base.append(_once("azure.functions"))
        app.append(_once("function_app"))
        base_proc.append(_process("azure.functions"))
        app_proc.append(_process("function_app"))
    b, a = statistics.median(w for w, _ in base), statistics.median(w for w, _ in app)
    bc, ac = statistics.median(c for _, c in base), statistics.median(c for _, c in app)
    bp, ap = statistics.median(base_proc), statistics.median(app_proc)
    return {
        "runs": runs,
        "azure_functions_ms": round(b * 1000, 1),
        "function_app_ms": round(a * 1000, 1),
        "ratio": round(a / b, 2),
        "cpu_azure_functions_ms": round(bc * 1000, 1),
        "cpu_function_app_ms": round(ac * 1000, 1),
        "cpu_ratio": round(ac / bc, 2),
        "process_azure_functions_ms": round(bp * 1000, 1),
        "process_function_app_ms": round(ap * 1000, 1),
        "process_ratio": round(ap / bp, 2),
        "goal": GOAL,
        "met": a / b <= GOAL and ac / bc <= GOAL,
    }


if __name__ == "__main__":
    print(run())

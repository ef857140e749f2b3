"""Cold import of `function_app` against `import azure.functions` alone.

The Functions worker imports `function_app` to index the app on every cold start; everything it
pulls in is paid before the first event is handled. The app keeps every SDK import lazy, so the
goal is that indexing costs at most 1.3x what azure.functions itself costs. Each sample is a fresh
interpreter (`-X importtime` is not used: it slows imports down unevenly); the median of N runs.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL = 1.3


def _once(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "0"})
    return float(out.stdout.strip())


def _process(module: str) -> float:
    """Wall time of a whole `python -c 'import X'` (interpreter start included)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, check=True,
                   env={"PATH": "/usr/bin:/bin"})
    return time.perf_counter() - started


def run(runs: int = 15) -> dict[str, object]:
    for module in ("azure.functions", "function_app"):  # warm the bytecode caches once
        _once(module)
    base, app, base_proc, app_proc = [], [], [], []
    for _ in range(runs):  # interleaved, so drift in machine load hits both alike
        base.append(_once("azure.functions"))
        app.append(_once("function_app"))
        base_proc.append(_process("azure.functions"))
        app_proc.append(_process("function_app"))
    b, a = statistics.median(base), statistics.median(app)
    bp, ap = statistics.median(base_proc), statistics.median(app_proc)
    return {
        "runs": runs,
        "azure_functions_ms": round(b * 1000, 1),
        "function_app_ms": round(a * 1000, 1),
        "ratio": round(a / b, 2),
        "process_azure_functions_ms": round(bp * 1000, 1),
        "process_function_app_ms": round(ap * 1000, 1),
        "process_ratio": round(ap / bp, 2),
        "goal": GOAL,
        "met": a / b <= GOAL,
    }


if __name__ == "__main__":
    print(run())

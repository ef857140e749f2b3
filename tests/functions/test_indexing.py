"""The app indexes the way the host expects, and importing it reads no setting and loads no SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rotation import triggers
from rotation.settings import DEFAULT_SWEEP_SCHEDULE
from tests.functions.conftest import indexed

ROOT = Path(__file__).resolve().parents[2]


def test_functions_bindings_and_routes() -> None:
    found = {}
    for fn in indexed().values():
        raw = json.loads(fn.get_function_json())
        found[fn.get_function_name()] = [
            (b["type"], b.get("route"), tuple(b.get("methods") or ()), b.get("authLevel"), b.get("schedule"))
            for b in raw["bindings"] if b["direction"] == "IN"
        ]
    assert found == {
        "on_gateway_token_event": [("eventGridTrigger", None, (), None, None)],
        "rotate": [("httpTrigger", "gateways/{service}/{gateway}/rotate", ("POST",), "FUNCTION", None)],
        "list_gateways": [("httpTrigger", "gateways", ("GET",), "FUNCTION", None)],
        "get_gateway": [("httpTrigger", "gateways/{service}/{gateway}", ("GET",), "FUNCTION", None)],
        "roll_keys": [("httpTrigger", "gateways/{service}/{gateway}/roll-keys", ("POST",), "ADMIN", None)],
        "health": [("httpTrigger", "health", ("GET",), "FUNCTION", None)],
        "sweep": [("timerTrigger", None, (), None, triggers.SWEEP_SCHEDULE)],
    }


def _indexed_schedule(env: dict[str, str]) -> str:
    probe = ("import json, function_app\n"
             "(fn,) = [f for f in function_app.app.get_functions() if f.get_function_name() == 'sweep']\n"
             "print(json.loads(fn.get_function_json())['bindings'][0]['schedule'])\n")
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], env={**base, **env}, cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_the_sweep_schedule_always_has_a_value() -> None:
    """The host resolves `%NAME%` only from app settings and fails the timer when it is missing
    (Azure/azure-webjobs-sdk `NameResolverExtensions.ResolveWholeString`: "does not resolve to a value"), so
    the app writes a literal schedule into the binding when indexed: the setting's value, or the default."""
    assert _indexed_schedule({}) == DEFAULT_SWEEP_SCHEDULE == "0 0 * * * *"
    assert _indexed_schedule({"SWEEP_SCHEDULE": "   "}) == DEFAULT_SWEEP_SCHEDULE
    assert _indexed_schedule({"SWEEP_SCHEDULE": "0 */30 * * * *"}) == "0 */30 * * * *"


def test_import_with_an_empty_environment_loads_no_sdk() -> None:
    probe = (
        "import sys, function_app\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] == 'kubernetes' or m.startswith(("
        "'azure.identity', 'azure.keyvault', 'azure.mgmt', 'azure.eventgrid', 'azure.core', 'msal', 'yaml',"
        " 'opentelemetry', 'azure.monitor'))]\n"
        "print(','.join(sorted(heavy)))\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == ""
    assert out.stderr == ""


def _health_with(env: dict[str, str]) -> dict[str, object]:
    """/api/health of an app indexed (imported) with `env`, in a fresh interpreter as the worker does."""
    probe = ("import json, function_app, azure.functions as func\n"
             "from rotation import bootstrap\n"
             "from tests.service.conftest import World\n"
             "from rotation.settings import Settings\n"
             "(fn,) = [f for f in function_app.app.get_functions() if f.get_function_name() == 'health']\n"
             "w = World()\n"
             "with bootstrap.using(w.rotator, Settings(registry=w.registry, key_vault_url='https://kv.example')):\n"
             "    r = fn.get_user_function()(func.HttpRequest('GET', 'http://localhost/api/health', body=b''))\n"
             "print(r.get_body().decode())\n")
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], env={**base, **env}, cwd=ROOT, capture_output=True,
                         text=True, check=True, timeout=60)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_an_invalid_sweep_schedule_falls_back_to_the_default_and_health_says_so() -> None:
    """The host parses the timer's schedule when it indexes the function: NCRONTAB with seconds (six
    fields: Azure/azure-webjobs-sdk-extensions Timers/Scheduling/CronSchedule.cs `TryCreate`,
    `IncludingSeconds = true`; field ranges from atifaziz/NCrontab CrontabFieldImpl.cs) or a TimeSpan
    (TimerSchedule.cs `Create`, which Microsoft's timer trigger docs allow only on an App Service plan,
    not on Flex Consumption); anything else throws "The schedule expression was not recognized" and
    the sweep function is in error, so the safety net silently never runs. A bad SWEEP_SCHEDULE is
    replaced by the default at indexing and /api/health reports the setting and why."""
    from rotation.core.schedule import DEFAULT_SWEEP_SCHEDULE as default
    from rotation.core.schedule import sweep_schedule

    assert default == DEFAULT_SWEEP_SCHEDULE
    for bad in ("every hour", "0 0 * * *", "0 60 * * * *", "0 0 24 * * *", "0 0 0 0 * *", "0 0 * * * 7",
                "00:30:00", "0 0 * * * Funday", "0 0 * Mon * *", "0 */ * * * *", "0 1,,2 * * * *", "0 -1 * * * *"):
        assert sweep_schedule(bad)[0] == DEFAULT_SWEEP_SCHEDULE and sweep_schedule(bad)[1], bad
    # NCrontab swaps a reversed range and takes a step below 1 as 1 (CrontabField.cs `Accumulate`).
    for good in ("0 */30 * * * *", "0 30 9 * Jan Mon", "0 0 9-17 * * 1-5", "*/15 * * * * *", "0 0,30 * * * Sunday",
                 "0 5-1 * * * *", "0 */0 * * * *", "0 0  12 * * *"):
        assert sweep_schedule(good) == (good, None)
    # what the worker indexes (the binding) and what health answers, in a fresh interpreter each
    assert _indexed_schedule({"SWEEP_SCHEDULE": "0 0 * * *"}) == DEFAULT_SWEEP_SCHEDULE
    body = _health_with({"SWEEP_SCHEDULE": "0 0 * * *"})
    assert body["status"] == "ok" and body["sweepSchedule"] == DEFAULT_SWEEP_SCHEDULE
    problem = str(body["sweepScheduleError"])
    assert "SWEEP_SCHEDULE '0 0 * * *'" in problem and "6 fields" in problem and DEFAULT_SWEEP_SCHEDULE in problem
    assert "sweepScheduleError" not in _health_with({"SWEEP_SCHEDULE": "0 */30 * * * *"})


# What indexing may load beyond azure.functions: the blueprint and what its decorators need at import.
INDEXING_MODULES = {"function_app", "rotation", "rotation.triggers", "rotation.settings", "rotation.core",
                    "rotation.core.errors", "rotation.core.schedule"}


def test_indexing_loads_only_the_blueprint_beyond_azure_functions() -> None:
    """The worker imports function_app on every cold start before the first invocation; the budget is
    1.3x `import azure.functions` (benchmarks/cold_import.py). Any module a top-level import
    adds beyond the standard library and the blueprint fails here, whatever its name (an SDK, yaml,
    requests, the service and its dataclasses), not only the SDKs the test above names."""
    probe = (
        "import sys, azure.functions\n"
        "before = set(sys.modules)\n"
        "import function_app\n"
        "std = sys.stdlib_module_names\n"
        "print(','.join(sorted(m for m in set(sys.modules) - before if m.split('.')[0] not in std)))\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    loaded = set(filter(None, out.stdout.strip().split(",")))
    assert loaded - INDEXING_MODULES == set()

"""`make demo` is one of the README's two commands: run it the way the Makefile does and hold it to
what the README promises (exit 0, discovery reproduces the registry, no token printed), and that it
does so again in the same checkout: the second run finds the first one's state directory (CA,
`discovered-registry.json`, Azurite's workspace, which Azurite reopens with its containers — Azurite
3.35.0 README, "Workspace Path Configuration") and must not trip over it.

It starts its own devstack in a subprocess (real kube-apiservers, HTTPS fakes), so it costs about as
much as the demo itself, twice; nothing else exercises the demo's script end to end, and a merge
once broke it while every other tier stayed green.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from devstack.stack import Stack

REPO = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r"[A-Za-z0-9-]+&\d{12}&[A-Za-z0-9+/=]{20,}")


def _runs(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _demo(directory: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("ROTATION_REGISTRY", "KEY_VAULT_URL")}
    run = subprocess.run([sys.executable, "-m", "devstack", "demo", "--dir", str(directory)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "the proposal equals the stack's registry: True" in out
    assert "\nOK: " in out
    assert "Traceback" not in out
    assert not TOKEN.search(out), "a gateway token was printed"
    return out


def test_make_demo_runs_the_story_twice_in_one_checkout_and_prints_no_token(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    _demo(directory)
    assert (directory / "discovered-registry.json").exists()  # what the second run finds
    _demo(directory)
    assert not list(directory.glob("*.pid")), "the demo left a process behind"


def test_ctrl_c_stops_the_demo_and_its_stack(tmp_path: Path) -> None:
    """Ctrl-C while the demo runs the product's CLI (discovery, step 2): the demo stops with 130 instead of
    carrying on (the product CLI answers Ctrl-C with exit code 130 rather than raising), and its stack is
    down (no recorded process still runs), so the next `make demo` starts clean. Ctrl-C is SIGINT to the
    foreground process, and Python's `signal` docs: "SIGINT is translated into a KeyboardInterrupt
    exception if the parent process has not changed it"; a test runner started in the background has it
    ignored, so the child restores Python's handler itself."""
    directory = tmp_path / "demo"
    script = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
              f"sys.argv = ['devstack', 'demo', '--dir', {str(directory)!r}]; "
              "runpy.run_module('devstack', run_name='__main__', alter_sys=True)")
    env = {k: v for k, v in os.environ.items() if k not in ("ROTATION_REGISTRY", "KEY_VAULT_URL")}
    env["PYTHONUNBUFFERED"] = "1"  # each line as it is printed: the signal must land in step 2
    demo = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            seen.append(line)
            if line.startswith("   ready in "):
                # ARM answers slowly from now on, so the Ctrl-C below lands inside the product CLI's
                # `discover` / `validate-registry` (the ARM fake's fault control: delaySeconds).
                Stack.load(directory).arm("POST", "/_devstack/faults",
                                          {"method": "GET", "path": "/gateways", "delaySeconds": 4, "times": 0})
            if line.startswith("== 2."):
                break
        pids = {f: int(f.read_text()) for f in [*directory.glob("*.pid"), *(directory / "pids").glob("*.pid")]}
        assert pids, "".join(seen)[-2000:]
        time.sleep(1)
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    out = "".join(seen) + rest
    assert demo.returncode == 130, out[-3000:]
    assert "interrupted" in out
    assert "FAILED" not in out and "\nOK: " not in out
    time.sleep(0.5)
    assert [f.name for f, pid in pids.items() if _runs(pid)] == [], "a process outlived the demo"
    assert not TOKEN.search(out), "a gateway token was printed"

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
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r"[A-Za-z0-9-]+&\d{12}&[A-Za-z0-9+/=]{20,}")


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

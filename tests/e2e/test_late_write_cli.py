"""A Key Vault write that lands after its writer lost the gateway's lease, through the CLI on the devstack.

Key Vault's Set Secret takes no precondition (learn.microsoft.com/rest/api/keyvault/secrets/set-secret/
set-secret: value, contentType, tags, attributes; no If-Match), so a PUT sent while its writer held the
lease is applied whenever it reaches the service. Here the Key Vault fake holds writer A's PUT
(`delaySeconds`, devstack/httpfake.py; it applies the request after the client gave up:
tests/adapters/test_fakes.py) while A is frozen with SIGSTOP past its 30 s blob lease (Blob Storage:
an expired lease can be acquired by another client, and the old holder can no longer renew it once it
was, learn.microsoft.com/rest/api/storageservices/lease-blob), and another CLI process completes
`roll-keys --from primary`, regenerating primary. Then A's PUT lands: Key Vault's latest is a token of
the regenerated key. `status` must say unhealthy, and the next `rotate` must repair it: Key Vault's
latest and every target hold a token the ARM fake verifies. Review case 4 (late Key Vault write).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack import stack as devstack
from rotation.core.token import fingerprint, parse_stored
from tests import leakcheck
from tests.e2e.conftest import World
from tests.e2e.test_keyroll_race import leases  # noqa: F401 - the Azurite lease container, a fixture

REPO = Path(__file__).resolve().parents[2]
SECRET = "apim-apim-devstack-gw-east-token"
HOLD_SECONDS = 80.0  # longer than A's lease running out (30 s) plus B's whole roll


def cli(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "rotation", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def run(*argv: str) -> tuple[int, str, str]:
    proc = cli(*argv)
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def until(what: str, check: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def frozen() -> Iterator[list[subprocess.Popen[str]]]:
    """Writer processes this test freezes; always resumed and reaped (this test's own children only)."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


@pytest.mark.usefixtures("leases")
def test_a_late_key_vault_write_makes_status_unhealthy_and_the_next_rotate_repairs_it(
        world: World, frozen: list[subprocess.Popen[str]]) -> None:
    stack = world.stack
    world.fault("keyvault", method="PUT", path=f"^/secrets/{SECRET}$", delaySeconds=HOLD_SECONDS, times=1)
    a = cli("rotate", "apim-devstack/gw-east", "--force", "--reason", "writer A")
    frozen.append(a)
    # A took the lease, got its token from ARM and sent its PUT: the fake took the fault (held now).
    until("writer A's Key Vault PUT", lambda: stack.control(stack.keyvault_url, "GET", "/_devstack/faults") == [],
          timeout=60)
    os.kill(a.pid, signal.SIGSTOP)  # A stalls past its lease; its PUT is in flight
    held_since = time.monotonic()

    code, out, err = run("roll-keys", "apim-devstack/gw-east", "--from", "primary", "--wait", "60",
                         "--deadline", "60")
    assert code == 0 and "completed" in out, out + err
    assert time.monotonic() - held_since < HOLD_SECONDS, "the roll outlasted the held PUT: the case did not happen"
    assert len(world.calls("arm", "regenerateKey")) == 1
    rolled = world.vault()[SECRET]
    leakcheck.register(rolled["value"])

    # A's PUT lands: Key Vault's latest is a token of the regenerated primary key.
    until("the held PUT to land", lambda: world.vault()[SECRET]["versions"] > rolled["versions"],
          timeout=HOLD_SECONDS + 30)
    late = world.vault()[SECRET]["value"]
    leakcheck.register(late)
    assert fingerprint(late) != fingerprint(rolled["value"]) and stack.verify("gw-east", late)["valid"] is False
    os.kill(a.pid, signal.SIGCONT)
    a.communicate(timeout=90)

    code, out, err = run("status", "apim-devstack/gw-east", "--json")
    assert code == 1, out + err  # unhealthy while the late version is Key Vault's latest
    assert late.split("&")[-1] not in out + err

    code, out, err = run("rotate", "apim-devstack/gw-east", "--reason", "next run")
    assert code == 0, out + err
    assert late.split("&")[-1] not in out + err
    latest = world.vault()[SECRET]["value"]
    leakcheck.register(latest)
    assert stack.verify("gw-east", latest)["valid"] is True
    for t in devstack.targets()["gw-east"]:
        token = parse_stored(world.value(t["cluster"], t["namespace"], t["secret"]))
        assert token is not None and token.fingerprint == fingerprint(latest)
    code, out, err = run("status", "apim-devstack/gw-east", "--json")
    assert code == 0, out + err

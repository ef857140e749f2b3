"""The three key-roll sequences on the devstack, entry points racing across processes.

Real kube-apiservers (RBAC), the ARM and Key Vault fakes over HTTPS, Azurite holding the per-gateway
blob leases (LEASE_CONTAINER_URL), the CLI as separate processes (`python -m rotation`) and the HTTP and
Event Grid handlers in this process (another "instance"). Every test ends with the invariant: every
target holds a token the ARM fake verifies, so does Key Vault's latest, the key the roll started from
is the one regenerated (its old token is dead, the new key's token lives, one regenerateKey), and
`status` says healthy only then.

The Azurite lease behaviour relied on is documented in tests/adapters/test_lease.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.identity import ManagedIdentityCredential
from azure.storage.blob import ContainerClient

from devstack import azurite
from devstack import stack as devstack
from devstack.tls import DevCA
from rotation import bootstrap
from rotation.core.errors import UpstreamError
from rotation.core.token import parse_stored
from tests.e2e.azurite_fixture import start_azurite
from tests.e2e.conftest import World
from tests.functions.conftest import deliver, http

REPO = Path(__file__).resolve().parents[2]
SECRET = "apim-apim-devstack-{}-token"


@pytest.fixture(scope="module")
def leases(stack: devstack.Stack) -> Iterator[str]:
    """Azurite with the `gateway-leases` container; LEASE_CONTAINER_URL points every process at it."""
    directory = stack.dir / "leases"
    directory.mkdir(exist_ok=True)
    server = start_azurite(directory, DevCA.load(stack.dir))
    saved = {k: os.environ.get(k) for k in ("IDENTITY_ENDPOINT", "LEASE_CONTAINER_URL", "ROTATION_REGISTRY",
                                            "ROTATION_DEADLINE_SECONDS")}
    overlay: azurite.StorageIdentity | None = None
    try:
        endpoint, header = stack.settings["IDENTITY_ENDPOINT"], stack.settings["IDENTITY_HEADER"]
        if not azurite.serves_storage(endpoint, header):
            overlay = azurite.StorageIdentity(endpoint, header)
            overlay.start()
            os.environ["IDENTITY_ENDPOINT"] = overlay.endpoint
        url = server.container_url("gateway-leases")
        container = ContainerClient.from_container_url(url, credential=ManagedIdentityCredential())
        if not container.exists():  # another module using this fixture ran first (same Azurite data dir)
            container.create_container()
        container.close()
        os.environ["LEASE_CONTAINER_URL"] = url
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if overlay is not None:
            overlay.stop()
        server.stop()
        bootstrap.reset()


@pytest.fixture
def race(world: World, leases: str) -> Iterator[Race]:
    r = Race(world)
    yield r
    r.resume()
    os.environ["ROTATION_REGISTRY"] = r.registry_text
    os.environ.pop("ROTATION_DEADLINE_SECONDS", None)
    bootstrap.reset()


class Race:
    def __init__(self, world: World) -> None:
        self.world = world
        self.registry_text = os.environ["ROTATION_REGISTRY"]

    def registry(self, change: Any) -> None:
        """Rewrite the registry every process reads (this one and the CLI's)."""
        registry = json.loads(self.registry_text)
        change(registry)
        os.environ["ROTATION_REGISTRY"] = json.dumps(registry)
        bootstrap.reset()

    def pause(self) -> None:
        (self.world.stack.dir / "controller.paused").touch()  # rollouts do not finish

    def resume(self) -> None:
        (self.world.stack.dir / "controller.paused").unlink(missing_ok=True)

    def cli(self, *argv: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.Popen([sys.executable, "-m", "rotation", *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)

    def run(self, *argv: str) -> tuple[int, str, str]:
        proc = self.cli(*argv)
        out, err = proc.communicate(timeout=120)
        return proc.returncode, out, err

    def http(self, gateway: str, action: str, body: dict[str, Any]) -> tuple[int, Any]:
        url = f"http://localhost/api/gateways/apim-devstack/{gateway}/{action}"
        route = {"service": "apim-devstack", "gateway": gateway}
        return http(action.replace("-", "_"), "POST", url, route, body)

    def vault(self, gateway: str) -> dict[str, Any]:
        return self.world.vault()[SECRET.format(gateway)]

    def healthy(self, gateway: str) -> bool:
        code, out, err = self.run("status", f"apim-devstack/{gateway}", "--json")
        (status,) = json.loads(out)["gateways"]
        assert (code == 0) is status["healthy"], err
        return bool(status["healthy"])

    def assert_invariant(self, gateway: str, leaked: str) -> None:
        stack = self.world.stack
        latest = self.vault(gateway)
        assert stack.verify(gateway, latest["value"]) | {"expiresAt": None} == {
            **stack.verify(gateway, latest["value"]), "valid": True, "keyType": "secondary", "expiresAt": None}
        for t in devstack.targets()[gateway]:
            held = parse_stored(self.world.value(t["cluster"], t["namespace"], t["secret"],
                                                 t.get("key", "config.service.auth.key")))
            assert held is not None
            verdict = stack.verify(gateway, held.value)
            assert verdict["valid"] is True and verdict["keyType"] == "secondary", t
        assert stack.verify(gateway, leaked)["valid"] is False  # the key the roll started from was regenerated
        assert len(self.world.calls("arm", "regenerateKey")) == 1
        assert "keyRollFrom" not in latest["tags"]
        assert self.healthy(gateway)

    def wait_for_roll_tag(self, gateway: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while self.vault(gateway)["tags"].get("keyRollFrom") != "primary":
            assert time.monotonic() < end, "phase 1 never stored the roll's token"
            time.sleep(0.1)


def test_sequence_1_a_forced_rotate_between_runs_cannot_reverse_the_roll(race: Race) -> None:
    leaked = race.world.seeded["gw-shared"]
    race.pause()
    status, body = race.http("gw-shared", "roll-keys", {"fromKey": "primary", "waitSeconds": 1})
    assert status == 409 and body["phase"] == "pending" and body["regenerated"] is False
    assert not race.healthy("gw-shared")  # pending: the leaked key still works

    code, _, err = race.run("rotate", "apim-devstack/gw-shared", "--force", "--reason", "suspected leak")
    assert code == 0, err
    assert race.vault("gw-shared")["tags"]["keyRollFrom"] == "primary"  # carried forward
    assert race.world.stack.verify("gw-shared", race.vault("gw-shared")["value"])["keyType"] == "secondary"

    before = race.world.snapshot()
    code, _, err = race.run("roll-keys", "apim-devstack/gw-shared", "--from", "secondary")
    assert code == 2 and "a key roll from primary to secondary is pending" in err
    assert race.world.snapshot() == before  # refused: nothing written anywhere

    race.resume()
    code, out, err = race.run("roll-keys", "apim-devstack/gw-shared", "--from", "primary", "--wait", "30")
    assert code == 0 and "completed" in out and "(resumed)" in out, out + err
    race.assert_invariant("gw-shared", leaked)


def test_sequence_2_writers_racing_a_roll_wait_for_its_lease(race: Race) -> None:
    """keyType pinned to primary. A CLI roll waits for rollouts holding the lease; meanwhile this
    process's HTTP forced rotate and an event both find the lease taken and fail transiently."""
    race.registry(lambda r: [g.update(keyType="primary") for g in r["gateways"] if g["id"].endswith("/gw-shared")])
    os.environ["ROTATION_DEADLINE_SECONDS"] = "4"
    bootstrap.reset()
    leaked = race.world.seeded["gw-shared"]
    race.pause()
    roll = race.cli("roll-keys", "apim-devstack/gw-shared", "--from", "primary", "--wait", "60", "--deadline", "20")
    race.wait_for_roll_tag("gw-shared")
    results: dict[str, Any] = {}

    def rotate() -> None:
        results["http"] = race.http("gw-shared", "rotate", {"force": True, "reason": "during the roll"})

    def event() -> None:
        try:
            deliver({"id": "race-1", "topic": devstack.SERVICE_ID, "subject": "/gateways/gw-shared/pod-9",
                     "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
                     "data": {"gatewayInfo": {"gatewayId": "gw-shared", "instanceId": "pod-9"}}})
            results["event"] = "acknowledged"
        except UpstreamError as exc:
            results["event"] = str(exc)

    threads = [threading.Thread(target=rotate), threading.Thread(target=event)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    status, body = results["http"]
    assert status == 503 and "another reconcile of this gateway holds it" in body["error"]
    assert "another reconcile of this gateway holds it" in results["event"]  # Event Grid redelivers
    assert len(race.world.calls("arm", "generateToken")) == 1  # only the roll's

    race.resume()
    out, err = roll.communicate(timeout=120)
    assert roll.returncode == 0 and "completed" in out, out + err
    race.assert_invariant("gw-shared", leaked)


def test_sequence_3_a_target_without_restart_list_keeps_the_roll_pending_until_confirmed(race: Race) -> None:
    def no_restart(registry: dict[str, Any]) -> None:
        for g in registry["gateways"]:
            if g["id"].endswith("/gw-west"):
                for t in g["targets"]:
                    t.pop("restart", None)

    race.registry(no_restart)
    leaked = race.world.seeded["gw-west"]
    code, out, err = race.run("roll-keys", "apim-devstack/gw-west", "--from", "primary", "--wait", "5")
    assert code == 1 and "has no `restart` list" in out and "--confirm-restarted" in out, out + err
    assert race.world.calls("arm", "regenerateKey") == []
    assert race.world.stack.verify("gw-west", leaked)["valid"] is True  # pods still run it: not regenerated
    assert not race.healthy("gw-west")

    status, body = race.http("gw-west", "roll-keys", {"fromKey": "primary", "waitSeconds": 5,
                                                      "confirmRestarted": True})
    assert status == 200 and body["phase"] == "completed" and body["resumed"] is True, body
    race.assert_invariant("gw-west", leaked)

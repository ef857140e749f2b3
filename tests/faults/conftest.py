"""Fault tier: the real app on the devstack, with faults injected by the stack itself.

ARM and Key Vault faults go through the fakes' `POST /_devstack/faults`; Kubernetes faults through a
`devstack.proxy.Proxy` put in front of the `east` kube-apiserver (the registry's `east.server` points
at it for every test here, so in `pass` mode it is just part of the path). Nothing is mocked: the
SDKs, the Kubernetes client, TLS and RBAC are the real ones.

After every scenario `FaultWorld.assert_nothing_lost()` checks the one property that matters to a
user: every target holds a token that the ARM fake verifies as valid and that is the current or an
earlier version of the gateway's secret in Key Vault.

Set `FAULTS_REPORT=FILE` to have the session write a markdown table of scenario outcomes (the README's
reliability table is generated that way).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from devstack import stack as devstack
from devstack.proxy import Proxy
from rotation import bootstrap
from rotation.core.model import GatewayRef
from rotation.core.registry import default_secret_name
from rotation.core.token import GatewayToken, parse_stored
from tests import leakcheck
from tests.e2e.conftest import World

REPO = Path(__file__).resolve().parents[2]
_RESULTS: list[dict[str, str]] = []


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    """One devstack for the fault tier (the e2e tier's fixture is local to tests/e2e)."""
    directory = tmp_path_factory.mktemp("devstack-faults")
    try:
        running = devstack.up(directory, say=lambda m: None)
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the devstack did not start (CI=true, so this fails): {exc}")
        pytest.skip(f"the devstack did not start: {exc}")
    saved = dict(os.environ)
    os.environ.update(running.settings)
    try:
        yield running
    finally:
        os.environ.clear()
        os.environ.update(saved)
        bootstrap.reset()
        devstack.down(directory)


@pytest.fixture(scope="session")
def east_proxy(stack: devstack.Stack) -> Iterator[Proxy]:
    server = urlsplit(stack.cluster("east").server)
    assert server.hostname is not None and server.port is not None
    with Proxy((server.hostname, server.port)) as proxy:
        yield proxy


def secret_name(gateway: str) -> str:
    return default_secret_name(GatewayRef.parse(devstack.gateway_id(gateway)))


class FaultWorld(World):
    """The e2e `World` with `east` behind a proxy, settings overrides, and Key Vault history."""

    def __init__(self, stack: devstack.Stack, proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
        proxy.set(latency=0, connect_latency=0, mode="pass")
        proxy.cut()
        proxy.reset_stats()
        self.proxy = proxy
        self._monkeypatch = monkeypatch
        super().__init__(stack)
        registry = json.loads(stack.settings["ROTATION_REGISTRY"])
        for cluster in registry["clusters"]:
            if cluster["name"] == "east":
                cluster["server"] = proxy.url
        self.overrides: dict[str, str] = {"ROTATION_REGISTRY": json.dumps(registry)}
        self.use()
        self._credential: Any = None

    def use(self, **settings: str) -> None:
        """App settings for this test (restored afterwards); the app is rebuilt from them."""
        self.overrides.update(settings)
        for name, value in self.overrides.items():
            self._monkeypatch.setenv(name, value)
        bootstrap.reset()

    def settings_file(self, directory: Path, **extra: str) -> Path:
        """The same settings for a CLI subprocess (`python -m rotation --settings FILE ...`)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "settings.json"
        path.write_text(json.dumps({**self.stack.settings, **self.overrides, **extra}))
        path.chmod(0o600)
        return path

    def cli(self, directory: Path, *args: str, **settings: str) -> list[str]:
        return [sys.executable, "-m", "rotation", "--settings", str(self.settings_file(directory, **settings)),
                *args]

    def clear_faults(self) -> None:
        for url in (self.stack.arm_url, self.stack.keyvault_url):
            self.stack.control(url, "DELETE", "/_devstack/faults")

    # --- what the stores hold ---------------------------------------------------------------------

    def versions(self, gateway: str) -> list[GatewayToken]:
        """Every version of the gateway's Key Vault secret, oldest first (read with the real SDK)."""
        from azure.keyvault.secrets import SecretClient

        if self._credential is None:
            from rotation.adapters.credential import build_credential

            self._credential = build_credential()
        client = SecretClient(self.stack.keyvault_url, self._credential, verify_challenge_resource=False)
        name = secret_name(gateway)
        try:
            props = sorted(client.list_properties_of_secret_versions(name),
                           key=lambda p: p.created_on or datetime.min.replace(tzinfo=UTC))
            tokens = [GatewayToken.parse(str(client.get_secret(name, p.version).value)) for p in props]
        finally:
            client.close()
        for t in tokens:
            leakcheck.register(t.value)
        return tokens

    def latest(self, gateway: str) -> GatewayToken:
        token = GatewayToken.parse(self.vault()[secret_name(gateway)]["value"])
        leakcheck.register(token.value)
        return token

    def held(self, gateway: str) -> list[GatewayToken | None]:
        """The token each target of the gateway holds (as the admin sees it, not through the proxy)."""
        out = []
        for t in devstack.targets()[gateway]:
            raw = self.value(t["cluster"], t["namespace"], t["secret"], t.get("key", "config.service.auth.key"))
            token = parse_stored(raw)
            if token is not None:
                leakcheck.register(token.value)
            out.append(token)
        return out

    def annotations(self, cluster: str, namespace: str, name: str) -> dict[str, str]:
        return dict(self.secret(cluster, namespace, name).metadata.annotations or {})

    def assert_nothing_lost(self, gateways: tuple[str, ...] = ("gw-east", "gw-shared", "gw-west")) -> None:
        """Every target holds a valid token that is the current or an earlier version in Key Vault."""
        for gateway in gateways:
            history = {t.value for t in self.versions(gateway)}
            for t, token in zip(devstack.targets()[gateway], self.held(gateway), strict=True):
                where = f"{t['cluster']}/{t['namespace']}/{t['secret']}"
                assert token is not None, f"{where}: holds no gateway token"
                assert token.value in history, f"{where}: holds a token that is not in Key Vault"
                verdict = self.stack.verify(gateway, token.value)
                assert verdict["valid"] is True, f"{where}: token not valid for ARM: {verdict}"

    def assert_converged(self, gateway: str = "gw-shared") -> GatewayToken:
        """Every target holds Key Vault's latest token, in its format, and no restart is pending."""
        latest = self.latest(gateway)
        for t, token in zip(devstack.targets()[gateway], self.held(gateway), strict=True):
            assert token is not None and token.value == latest.value, f"{t['cluster']}: not the Key Vault token"
            pending = self.annotations(t["cluster"], t["namespace"], t["secret"])
            assert "apim-token-rotator/restart-pending" not in pending
        return latest


@pytest.fixture
def fw(stack: devstack.Stack, east_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultWorld]:
    world = FaultWorld(stack, east_proxy, monkeypatch)
    try:
        yield world
    finally:
        east_proxy.set(latency=0, connect_latency=0, mode="pass")
        east_proxy.cut()
        world.clear_faults()
        world.register_vault_values()
        bootstrap.reset()


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """A test fills `record["scenario"]` and `record["outcome"]`; its duration is added here."""
    entry: dict[str, str] = {}
    started = time.monotonic()
    yield entry
    if entry:
        entry["seconds"] = f"{time.monotonic() - started:.1f}"
        entry["test"] = request.node.name
        _RESULTS.append(entry)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("FAULTS_REPORT")
    if not target or not _RESULTS:
        return
    lines = [f"<!-- generated by FAULTS_REPORT=... pytest tests/faults on {datetime.now().date()} -->",
             "| scenario | outcome | data lost | time |", "|---|---|---|---|"]
    lines += [f"| {r['scenario']} | {r['outcome']} | none | {r['seconds']} s |" for r in _RESULTS]
    Path(target).write_text("\n".join(lines) + "\n")

"""Security tier: hostile input, token leaks on error paths, TLS and challenge verification.

Hypothesis profiles: `security` (the default here, 300 examples, no per-example deadline: the
2-core CI machine must not turn a slow example into a flaky failure) and `thorough` (3,000
examples; `HYPOTHESIS_PROFILE=thorough`). Both derandomized, so a CI failure reproduces locally.

`app` is the real app (function handlers, SDK adapters) wired to in-process HTTPS fakes of ARM,
Key Vault and the identity endpoint, with its one cluster's `server` pointing at a counting proxy:
any outbound call a test expects never to happen shows up in `app.outbound()`.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from devstack.fakes import Fakes, start
from devstack.proxy import Proxy
from rotation import bootstrap
from tests.adapters.conftest import _FOREIGN_ENV

settings.register_profile("security", max_examples=300, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=3000, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "security"))

SUBSCRIPTION = "00000000-0000-4000-8000-000000000001"
SERVICE_ID = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-sec/providers/"
              "Microsoft.ApiManagement/service/apim-sec")
GATEWAY_ID = f"{SERVICE_ID}/gateways/gw-1"


@dataclass
class App:
    fakes: Fakes
    sentinel: Proxy

    def outbound(self) -> dict[str, Any]:
        """Every call that reached ARM, Key Vault or the cluster (identity token fetches excluded)."""
        return {"arm": self.fakes.arm.calls(), "keyvault": self.fakes.keyvault.calls(),
                "cluster connections": self.sentinel.stats.connections}

    def assert_no_outbound(self) -> None:
        assert self.outbound() == {"arm": [], "keyvault": [], "cluster connections": 0}


def registry(server: str, ca_pem: bytes) -> dict[str, Any]:
    return {"clusters": [{"name": "east", "auth": "aks", "server": server,
                          "caData": base64.b64encode(ca_pem).decode()}],
            "gateways": [{"id": GATEWAY_ID, "targets": [
                {"cluster": "east", "namespace": "apim", "secret": "gw-1-token",
                 "restart": ["deployment/gw-1"]}]}]}


@pytest.fixture(scope="session")
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fakes, Proxy]]:
    """Started once: stopping HTTPS fakes costs a poll interval each, which adds up over 300 cases."""
    fakes = start(tmp_path_factory.mktemp("security-fakes"), {"arm": {"gateways": [GATEWAY_ID]}})
    # The cluster: a proxy to a closed port. It counts every connection the app would open.
    sentinel = Proxy(("127.0.0.1", 9)).start()
    try:
        yield fakes, sentinel
    finally:
        sentinel.stop()
        fakes.stop()


@pytest.fixture
def app(_servers: tuple[Fakes, Proxy], monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    fakes, sentinel = _servers
    for server in (fakes.arm, fakes.keyvault):
        server.clear_faults()
        server.clear_calls()
    sentinel.reset_stats()
    for name in _FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("WEBSITE_INSTANCE_ID", raising=False)
    env = {**fakes.env(), "ROTATION_REGISTRY": json.dumps(registry(sentinel.url, fakes.ca.ca_pem)),
           "KEY_VAULT_URL": fakes.keyvault.url, "ARM_ENDPOINT": fakes.arm.url,
           "ROTATION_LOCAL_EMULATORS": "true", "ROTATION_DEADLINE_SECONDS": "5"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bootstrap.reset()
    try:
        yield App(fakes, sentinel)
    finally:
        bootstrap.reset()
        for server in (fakes.arm, fakes.keyvault):
            server.clear_faults()

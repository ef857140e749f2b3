"""The real SDK adapters against the devstack fakes, started in this process over real HTTPS.

The only things a test changes are the process environment the SDKs read (`IDENTITY_ENDPOINT`,
`IDENTITY_HEADER`: the Functions managed-identity protocol; `REQUESTS_CA_BUNDLE`: the devstack CA),
set with monkeypatch. No SDK internals are patched.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack import azurite
from devstack.fakes import Fakes, start
from rotation.core.model import GatewayRef

SUBSCRIPTION = "00000000-0000-4000-8000-000000000001"

# Environment azure-identity would otherwise pick up from the developer's machine.
_FOREIGN_ENV = (
    "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
    "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT", "SSL_CERT_FILE",
)


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fakes]:
    """Fresh identity + ARM + Key Vault fakes, with the process env pointing the SDKs at them."""
    running = start(tmp_path / "fakes")
    for name in _FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in running.env().items():
        monkeypatch.setenv(name, value)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def gateway(fakes: Fakes) -> GatewayRef:
    """A gateway registered in the ARM fake (fresh keys)."""
    ref = GatewayRef(SUBSCRIPTION, "rg-devstack", "apim-devstack", f"gw-{secrets.token_hex(3)}")
    fakes.arm.create_gateway(ref.id)
    return ref


def control(fakes_server_url: str, ca: str, method: str, path: str, body: Any = None) -> Any:
    """Calls a fake's `/_devstack/...` control route (what an out-of-process test would do)."""
    response = requests.request(method, fakes_server_url + path, json=body, verify=ca, timeout=10)
    response.raise_for_status()
    return response.json() if response.content else None


@contextmanager
def storage_stack(directory: Path) -> Iterator[tuple[Fakes, azurite.Azurite]]:
    """The identity fake handing out Azurite-shaped storage tokens, and Azurite with the same CA, with
    the app's environment pointing at them (what the blob-backed adapters authenticate through)."""
    from tests.e2e.azurite_fixture import start_azurite

    with pytest.MonkeyPatch.context() as mp:
        fakes = start(directory, {"identity": {"tokens": {azurite.STORAGE_RESOURCE: azurite.storage_token()}}})
        try:
            for name in _FOREIGN_ENV:
                mp.delenv(name, raising=False)
            for name, value in fakes.env().items():
                mp.setenv(name, value)
            server = start_azurite(directory, fakes.ca)
            try:
                yield fakes, server
            finally:
                server.stop()
        finally:
            fakes.stop()

"""Azurite for the dead-letter tests: started by the test setup, not by `devstack up`.

`start_azurite` follows the devstack's rule: when Azurite cannot start (npm could not install it, the
binary fails), the tests skip locally and FAIL with CI=true, so CI never goes green without running them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from devstack import azurite
from devstack.tls import DevCA


def start_azurite(directory: Path, ca: DevCA) -> azurite.Azurite:
    try:
        return azurite.start(directory, ca)
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Azurite did not start (CI=true, so this fails): {exc}")
        pytest.skip(f"Azurite did not start: {exc}")


def empty(container: ContainerClient) -> None:
    """Delete every blob (between tests; the container itself stays)."""
    for blob in container.list_blobs():
        container.delete_blob(blob.name)

"""Shared test data: the reference samples and a registry builder."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

# Samples of the wire and registry formats (tests/data): an event of each schema, the example registry.
REFERENCE = Path(__file__).resolve().parent / "data"

SUB = "11111111-2222-3333-4444-555555555555"
SERVICE_ID = f"/subscriptions/{SUB}/resourceGroups/rg-apim/providers/Microsoft.ApiManagement/service/contoso-apim"
CA_DATA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n").decode()


def gateway_id(name: str, service_id: str = SERVICE_ID) -> str:
    return f"{service_id}/gateways/{name}"


def reference_event(name: str) -> dict[str, Any]:
    data = json.loads((REFERENCE / "events" / name).read_text())
    return copy.deepcopy(data[0] if isinstance(data, list) else data)


def reference_registry() -> dict[str, Any]:
    return json.loads((REFERENCE / "registry.example.json").read_text())  # type: ignore[no-any-return]


def registry(*gateways: dict[str, Any], clusters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "clusters": clusters if clusters is not None else [
            {"name": "east", "auth": "aks", "server": "https://east-dns-4f1c2a9b.hcp.westeurope.azmk8s.io:443", "caData": CA_DATA},
            {"name": "west", "auth": "kubeconfig", "kubeconfigSecret": "kubeconfig-west"},
        ],
        "gateways": list(gateways) or [gateway("gw-1")],
    }


def gateway(name: str, *targets: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": gateway_id(name), "targets": list(targets) or [target("east", f"{name}-token")], **extra}


def target(cluster: str, secret: str, namespace: str = "apim", **extra: Any) -> dict[str, Any]:
    return {"cluster": cluster, "namespace": namespace, "secret": secret, **extra}

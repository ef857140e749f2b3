"""The product's entry points as the service-tier tests of token provenance, fenced writes, key-roll
consumption and restart fingerprints drive them: imported here once, so moving them is one line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rotation.adapters.lease import LocalLease
from rotation.core.model import GatewayConfig, KeyType, Registry
from rotation.core.token import GatewayToken, fingerprint, parse_stored
from rotation.service import Heal, Rotator
from tests import leakcheck
from tests.service.conftest import World

__all__ = ["Heal", "LocalLease", "Monotonic", "Rotator", "assert_no_token", "fingerprints", "forged", "instance", "signed_by"]


@dataclass
class Monotonic:
    """A lease holder's monotonic clock; `pause` is time the process did not see pass."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


def instance(world: World, lease: Any = None, clock: Callable[[], datetime] | None = None,
             registry: Registry | None = None, **kwargs: Any) -> Rotator:
    """Another function instance (or the CLI): its own Rotator over the same Key Vault and clusters.
    `lease`: a LocalLease (or a wrapper of one) shared by the instances; None: one of its own."""
    kwargs.setdefault("clusters", world.rotator.clusters)
    return Rotator(registry=registry or world.registry, issuer=world.issuer, store=world.store,
                   clock=clock or (lambda: world.now), lease=lease, publisher=world.publisher, **kwargs)


def forged(gateway: str, stamp: str = "209912312359") -> str:
    """A token-shaped value nobody signed: the gateway's name, an expiry, random base64."""
    import base64
    import secrets

    value = f"{gateway}&{stamp}&{base64.b64encode(secrets.token_bytes(64)).decode()}"
    leakcheck.register(value)
    return value


def assert_no_token(report: Any, *values: str) -> None:
    """A report (or anything with to_dict) names tokens by fingerprint only, never by value."""
    text = json.dumps(report.to_dict() if hasattr(report, "to_dict") else report, default=str)
    raws = [value.removeprefix("GatewayKey ") for value in values]
    leaked = [fingerprint(raw) for raw in raws if raw in text or raw.split("&")[-1] in text]
    assert not leaked, f"token(s) {leaked} in the report"


def signed_by(world: World, config: GatewayConfig, token: GatewayToken | str | None) -> KeyType | None:
    """Which of the gateway's keys signed it, as ARM would say (None: no token of this gateway). Takes
    the token object so a failing assert shows its fingerprint, not its value."""
    parsed = parse_stored(token) if not isinstance(token, GatewayToken) else token
    return None if parsed is None else world.issuer.verify(config.ref, parsed.value)


def fingerprints(values: Iterable[str | None]) -> list[str | None]:
    """What a test compares and prints instead of token values (a failing assert shows its operands)."""
    return [None if v is None else fingerprint(v.removeprefix("GatewayKey ")) for v in values]

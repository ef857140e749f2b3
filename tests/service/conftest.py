from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rotation.adapters.lease import LocalLease
from rotation.app.rotator import Rotator
from rotation.core.model import GatewayConfig, KeyType, Registry, TokenRecord
from rotation.core.registry import load_registry
from rotation.core.token import GatewayToken
from tests.memory import MemoryCluster, MemoryClusters, MemoryIssuer, MemoryStore, RecordingPublisher
from tests.samples import gateway, registry, target

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class World:
    """A registry of two gateways over two clusters, with every port in memory."""

    def __init__(self) -> None:
        self.now = NOW
        self.registry: Registry = load_registry(registry(
            gateway("gw-1", target("east", "gw1-token", restart=["deployment/gw1"]),
                    target("west", "gw1-token", namespace="gateways", key="value", format="{token}")),
            gateway("gw-2", target("east", "gw2-token")),
        ))
        self.issuer = MemoryIssuer()
        self.store = MemoryStore(clock=lambda: self.now)
        self.east = MemoryCluster("east")
        self.west = MemoryCluster("west")
        for cluster, ns, name in ((self.east, "apim", "gw1-token"), (self.west, "gateways", "gw1-token"),
                                  (self.east, "apim", "gw2-token")):
            cluster.seed(ns, name, {})
        for config in self.registry.gateways:  # each registered workload reads its target's key
            for t in config.targets:
                for w in t.restart:
                    self.cluster(t.cluster).reading(t.namespace, str(w), t.secret, t.key)
        self.publisher = RecordingPublisher()
        self.rotator = Rotator(registry=self.registry, issuer=self.issuer, store=self.store,
                               clusters=MemoryClusters({"east": self.east, "west": self.west}),
                               clock=lambda: self.now, publisher=self.publisher, lease=LocalLease())

    @property
    def gw1(self) -> GatewayConfig:
        return self.registry.gateways[0]

    @property
    def gw2(self) -> GatewayConfig:
        return self.registry.gateways[1]

    def seed_token(self, config: GatewayConfig, expires_in: timedelta, key: KeyType = KeyType.PRIMARY,
                   everywhere: bool = True) -> GatewayToken:
        """A token (really signed) in Key Vault, and optionally in every target already."""
        value = self.issuer.generate_token(config.ref, key, (self.now + expires_in).replace(second=0))
        self.issuer.calls.clear()
        token = GatewayToken.parse(value)
        self.store.put(config.key_vault_secret, TokenRecord(token, key, config.ref.id))
        self.store.calls.clear()
        if everywhere:
            for t in config.targets:
                self.cluster(t.cluster).secrets[(t.namespace, t.secret)].data[t.key] = token.formatted(t.format)
        return token

    def cluster(self, name: str) -> MemoryCluster:
        return {"east": self.east, "west": self.west}[name]

    def held(self, config: GatewayConfig) -> list[str | None]:
        return [self.cluster(t.cluster).value(t.namespace, t.secret, t.key) for t in config.targets]


@pytest.fixture
def world() -> World:
    return World()

"""The token targets should hold, with its value and its storage time fetched only when needed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from rotation.app.context import Deps, Scope
from rotation.core.convergence import Desired, token_stored_at
from rotation.core.errors import NotFound, UnusableSecret
from rotation.core.model import GatewayConfig
from rotation.core.token import GatewayToken


@dataclass
class TokenSource:
    """The token targets should hold; its value is fetched from Key Vault only if a target needs it."""

    desired: Desired
    load: Callable[[], GatewayToken]
    _token: GatewayToken | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    stored_at: Callable[[], datetime | None] = lambda: None

    @classmethod
    def holding(cls, token: GatewayToken, stored_at: Callable[[], datetime | None] = lambda: None) -> TokenSource:
        return cls(Desired.of(token), lambda: token, token, stored_at=stored_at)

    def token(self) -> GatewayToken:
        with self._lock:
            if self._token is None:
                self._token = self.load()
            return self._token


def check_gateway(config: GatewayConfig, token: GatewayToken) -> None:
    """Key Vault's value is input too: a token of another gateway (pasted into the wrong secret) is never
    pushed to this gateway's targets; a forced rotation overwrites it."""
    if token.gateway.lower() != config.ref.gateway.lower():
        raise UnusableSecret(f"Key Vault secret {config.key_vault_secret!r} holds a token of another gateway "
                             f"(fingerprint {token.fingerprint}), not of {config.ref.gateway} "
                             "(rotate with force to overwrite it)")


def loader(deps: Deps, scope: Scope) -> Callable[[], GatewayToken]:
    """Reads Key Vault's token when a target first needs its value (the sweep's fast path)."""
    def load() -> GatewayToken:
        config = scope.config
        record = deps.store.get(config.key_vault_secret, timeout=scope.check("reading Key Vault"))
        if record is None:
            raise NotFound(f"Key Vault secret {config.key_vault_secret} disappeared")
        check_gateway(config, record.token)
        return record.token

    return load


def stored_at(deps: Deps, scope: Scope, fingerprint: str) -> Callable[[], datetime | None]:
    """When Key Vault first stored the token, looked up only if a heal needs it (one listing)."""
    lock = threading.Lock()
    box: list[datetime | None] = []

    def load() -> datetime | None:
        with lock:
            if not box:
                versions = deps.store.versions(scope.config.key_vault_secret,
                                               timeout=scope.check("listing Key Vault versions"))
                box.append(token_stored_at(versions, fingerprint))
            return box[0]

    return load

"""The token targets should hold, with its value fetched only when a target needs it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from rotation.app.context import Deps, Scope
from rotation.app.vault import check_owned
from rotation.core.convergence import Desired
from rotation.core.errors import NotFound, UpstreamError
from rotation.core.token import GatewayToken


@dataclass
class TokenSource:
    """The token targets should hold; its value is fetched from Key Vault only if a target needs it."""

    desired: Desired
    load: Callable[[], GatewayToken]
    _token: GatewayToken | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def holding(cls, token: GatewayToken) -> TokenSource:
        return cls(Desired.of(token), lambda: token, token)

    def token(self) -> GatewayToken:
        with self._lock:
            if self._token is None:
                self._token = self.load()
            return self._token


def loader(deps: Deps, scope: Scope, fingerprint: str, version: str | None) -> Callable[[], GatewayToken]:
    """Reads the decided token when a target first needs its value (the sweep's fast path): the committed
    version itself when the lease names it, and only ever the token whose fingerprint was decided on —
    a different latest (written since the listing) is not pushed, the next reconcile decides again."""
    def load() -> GatewayToken:
        config = scope.config
        record = deps.store.get(config.key_vault_secret, timeout=scope.check("reading Key Vault"), version=version)
        if record is None:
            raise NotFound(f"Key Vault secret {config.key_vault_secret} disappeared")
        check_owned(config, record)
        if record.token.fingerprint != fingerprint:
            raise UpstreamError(f"Key Vault's token of {config.ref} changed since the sweep listed it "
                                f"({fingerprint} -> {record.token.fingerprint}): not pushed; the next reconcile "
                                "decides again")
        return record.token

    return load

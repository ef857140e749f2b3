"""Key Vault reads that refine a reconcile's plan, both best effort: making a later-expiring version
the targets hold the latest again, and listing the tokens a pending key roll dooms."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from rotation.app.context import Deps, Scope
from rotation.app.source import TokenSource
from rotation.core.convergence import doomed_by_roll, promotable
from rotation.core.errors import RotationError
from rotation.core.model import KeyType, TokenRecord
from rotation.core.token import GatewayToken
from rotation.telemetry import emit

log = logging.getLogger("rotation")


def promote(deps: Deps, scope: Scope, held: Sequence[GatewayToken]) -> TokenSource | None:
    """Makes a later-expiring version that targets hold Key Vault's latest again (see
    `convergence.promotable`), so that every target converges on what Key Vault says. Best effort:
    the targets already hold valid tokens, so a failure here is logged, not raised."""
    config = scope.config
    secret = config.key_vault_secret
    try:
        latest = deps.store.get(secret, timeout=scope.check("reading Key Vault"))
        if latest is None:
            return None
        versions = deps.store.versions(secret, timeout=scope.check("listing Key Vault versions"))
        token = promotable(latest, versions, held, config.ref.gateway)
        if token is None:
            return None
        record = TokenRecord(token=token, key_type=latest.key_type, gateway_id=config.ref.id)
        deps.store.put(secret, record, timeout=scope.writing("writing Key Vault"))
    except RotationError as exc:
        log.warning("%s: could not make the later-expiring version targets hold Key Vault's latest: %s",
                    config.ref, exc)
        return None
    emit("rotation.token", {"gatewayId": config.ref.id, "fingerprint": token.fingerprint,
                            "expiresAt": token.expires_at.isoformat(), "keyType": latest.key_type.value,
                            "why": "a target held a later-expiring earlier version: stored it as the latest"})
    return TokenSource.holding(token)


def doomed(deps: Deps, scope: Scope, roll_from: KeyType) -> frozenset[str]:
    """During a key roll: the stored tokens of the key about to be regenerated. Best effort: without
    them a target holding such a token stays `newer`, and the roll stops before regenerating."""
    try:
        versions = deps.store.versions(scope.config.key_vault_secret,
                                       timeout=scope.check("listing Key Vault versions"))
    except RotationError as exc:
        log.warning("%s: could not list Key Vault versions for the key roll: %s", scope.config.ref, exc)
        return frozenset()
    return doomed_by_roll(versions, roll_from)

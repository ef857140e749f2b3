"""Key Vault reads that refine a reconcile's plan, both best effort: making a later-expiring version
the targets hold the latest again, and listing the tokens a pending key roll dooms."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rotation.app.context import Deps, Scope
from rotation.app.evidence import EvidenceLoader
from rotation.app.source import TokenSource
from rotation.app.vault import fenced_put
from rotation.core.convergence import doomed_by_roll
from rotation.core.errors import RotationError
from rotation.core.model import KeyType, TokenRecord
from rotation.core.token import GatewayToken
from rotation.telemetry import emit

if TYPE_CHECKING:
    from rotation.app.renewal import Renewal

log = logging.getLogger("rotation")


def promote(deps: Deps, scope: Scope, held: Sequence[GatewayToken], evidence: EvidenceLoader,
            renewal: Renewal) -> TokenSource | None:
    """Makes the latest-expiring verified token of the gateway that targets kept (`newer`) Key Vault's
    latest, so every target converges on what Key Vault says. Only a token signed by the key in use
    (during a key roll: the key rolled to, so the roll's own later token is promotable and a retiring
    key's never is). Best effort: the targets already hold valid tokens, so a failure is logged."""
    config = scope.config
    source = renewal.source
    if source is None:
        return None
    wanted = renewal.roll_from.other if renewal.roll_from is not None else renewal.key_type
    try:
        candidates = sorted(((t.expires_at, t.fingerprint, t) for t in held
                             if t.expires_at > source.desired.expires_at and evidence.key_of(t.fingerprint) is wanted),
                            reverse=True)
        if not candidates:
            return None
        token = candidates[0][2]
        record = TokenRecord(token=token, key_type=wanted, gateway_id=config.ref.id, roll_from=renewal.roll_from)
        fenced_put(deps, scope, record, based_on=renewal.version)
    except RotationError as exc:
        log.warning("%s: could not make the later-expiring token targets hold Key Vault's latest: %s",
                    config.ref, exc)
        return None
    emit("rotation.token", {"gatewayId": config.ref.id, "fingerprint": token.fingerprint,
                            "expiresAt": token.expires_at.isoformat(), "keyType": wanted.value,
                            "why": "a target held a later-expiring verified token: stored it as the latest"})
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

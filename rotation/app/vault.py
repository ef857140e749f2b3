"""Key Vault writes and reads that respect the fence (`rotation.core.fencing`).

Every version the product writes is tagged with the writer's lease generation and the version it was
based on, sent with a timeout no longer than the lease time still guaranteed, and then committed as
the gateway's head with the lease. A write whose commit fails (the lease was lost meanwhile) is a
fork: it may sit in Key Vault as the latest version, but no reader pushes it, and the next reconcile
under the lease stores the head's token again.
"""

from __future__ import annotations

from dataclasses import replace

from rotation.app.context import Deps, Scope
from rotation.core.errors import UnusableSecret, UpstreamError
from rotation.core.fencing import Chain, FenceHead, chain_state
from rotation.core.model import GatewayConfig, TokenRecord
from rotation.telemetry import emit


def fenced_put(deps: Deps, scope: Scope, record: TokenRecord, based_on: str | None) -> str:
    """Stores `record` as the gateway's new latest version and makes it the head; returns the version.
    Raises UpstreamError when the lease no longer holds (the write, if it landed, stays a fork)."""
    config = scope.config
    fence = scope.fence
    tagged = replace(record, version=None, created_at=None, based_on=based_on,
                     generation=fence.generation if fence is not None else None)
    version = deps.store.put(config.key_vault_secret, tagged, timeout=scope.writing("writing Key Vault"))
    if fence is not None:
        head = FenceHead(version, record.token.fingerprint, fence.generation)
        fence.commit(head, timeout=scope.writing("committing the Key Vault version to the lease"))
    return version


def owned(config: GatewayConfig, record: TokenRecord) -> bool:
    """Key Vault's value counts as this gateway's only when the product wrote it for this gateway: its
    `gatewayId` tag is the gateway's full ARM id (a same-named gateway of another service has another),
    and the value names the gateway, as every token ARM generates for it does (tags and value are
    written separately: whoever wrote another gateway's token under this tag proves nothing)."""
    return (record.gateway_id.lower() == config.ref.id.lower()
            and record.token.gateway.lower() == config.ref.gateway.lower())


def check_owned(config: GatewayConfig, record: TokenRecord) -> None:
    if record.gateway_id.lower() != config.ref.id.lower():
        tagged = record.gateway_id or "no gatewayId tag"
        raise UnusableSecret(f"Key Vault secret {config.key_vault_secret!r} holds a token written for "
                             f"{tagged!r}, not {config.ref.id} (fingerprint {record.token.fingerprint}): it is "
                             "never pushed (rotate with force to overwrite it)")
    if not owned(config, record):
        raise UnusableSecret(f"Key Vault secret {config.key_vault_secret!r} holds a token of another gateway "
                             f"(fingerprint {record.token.fingerprint}), not of {config.ref.gateway}, whatever "
                             "its tags say: it is never pushed (rotate with force to overwrite it)")


def authoritative(deps: Deps, scope: Scope, latest: TokenRecord | None, *, repair: bool) -> TokenRecord | None:
    """Key Vault's latest version if it is the head the lease committed; otherwise (a fork: a late or
    foreign write) the head's token, stored again as the latest when `repair` — never the fork."""
    fence = scope.fence
    head = fence.head if fence is not None else None
    if latest is None:
        return None
    state = chain_state(latest.version, latest.token.fingerprint, head)
    if state is not Chain.FORK or head is None:
        return latest
    config = scope.config
    record = deps.store.get(config.key_vault_secret, timeout=scope.check("reading the committed version"),
                            version=head.version)
    emit("rotation.fork", {"gatewayId": config.ref.id, "latestFingerprint": latest.token.fingerprint,
                           "headFingerprint": head.fingerprint, "headGeneration": head.generation,
                           "repair": repair})
    if record is None or not owned(config, record):
        raise UpstreamError(f"Key Vault's latest version of {config.key_vault_secret!r} (fingerprint "
                            f"{latest.token.fingerprint}) is not the committed one, and the committed version "
                            f"{head.version} cannot be read: nothing is pushed (rotate with force mints anew)")
    if repair:
        version = fenced_put(deps, scope, record, based_on=latest.version)
        record = replace(record, version=version)
    return record

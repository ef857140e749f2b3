"""Gather and renew: read Key Vault's token (unless the sweep's listing said it is fresh), plan with
`rotation.core.renewal`, and act on the plan: keep it, adopt the targets' token, or mint and store a
new one. Key Vault is written before any cluster: a target never holds a token Key Vault does not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rotation.app.adoption import adopt
from rotation.app.context import Deps, Scope
from rotation.app.source import TokenSource, check_gateway, loader, stored_at
from rotation.core.errors import InvalidToken, UnusableSecret, UpstreamError
from rotation.core.model import KeyType, TokenInfo, TokenRecord
from rotation.core.renewal import RenewalPlan, fresh_in_listing, new_expiry, plan_renewal
from rotation.core.token import GatewayToken
from rotation.telemetry import emit


@dataclass(frozen=True, slots=True)
class Renewal:
    """Key Vault's token after the renewal step. `source` None: a dry run that would mint."""

    source: TokenSource | None
    rotated: bool
    key_type: KeyType
    roll_from: KeyType | None  # the key a pending roll retires


def renew(deps: Deps, scope: Scope, *, known: TokenInfo | None, force: bool, dry_run: bool,
          key_type: KeyType | None, roll_from: KeyType | None) -> Renewal:
    now = deps.clock()
    config = scope.config
    fresh = fresh_in_listing(known, config.ref.gateway, now, deps.renew_before, force=force, key_type=key_type)
    if fresh is not None and known is not None:
        # The sweep's one listing already says the stored token is fresh: no per-gateway read.
        source = TokenSource(fresh, loader(deps, scope), stored_at=stored_at(deps, scope, fresh.fingerprint))
        return Renewal(source, False, known.key_type or KeyType.PRIMARY, None)
    current = read_current(deps, scope, force)
    plan = plan_renewal(current, now, deps.renew_before, configured=config.key_type, force=force,
                        key_type=key_type, roll_from=roll_from, adopt_existing=deps.adopt_existing)
    if plan.keeps and current is not None:
        token = current.token
        return Renewal(TokenSource.holding(token, stored_at(deps, scope, token.fingerprint)), False,
                       current.key_type, plan.roll_from)
    if dry_run:
        return Renewal(None, False, plan.key_type, plan.roll_from)
    if plan.adopt:
        # Onboarding: Key Vault's first version is the newest valid token the targets already run.
        adopted = adopt(deps, scope, now)
        if adopted is not None:
            return Renewal(TokenSource.holding(adopted.token, lambda: now), False, adopted.key_type, None)
    return mint(deps, scope, plan, now)


def read_current(deps: Deps, scope: Scope, force: bool) -> TokenRecord | None:
    """Key Vault's latest token; another gateway's fails the routine path and is overwritten by a forced one."""
    config = scope.config
    try:
        current = deps.store.get(config.key_vault_secret, timeout=scope.check("reading Key Vault"))
        if current is not None:
            check_gateway(config, current.token)
    except UnusableSecret:
        if not force:
            raise
        return None
    return current


def mint(deps: Deps, scope: Scope, plan: RenewalPlan, now: datetime) -> Renewal:
    config = scope.config
    expiry = new_expiry(now, deps.token_lifetime)
    value = deps.issuer.generate_token(config.ref, plan.key_type, expiry, timeout=scope.check("generateToken"))
    try:
        token = GatewayToken.parse(value)
    except InvalidToken as exc:
        raise UpstreamError(f"ARM generateToken for {config.ref} returned an unusable token: {exc}") from None
    if token.gateway.lower() != config.ref.gateway.lower():
        raise UpstreamError(f"ARM generateToken for {config.ref} returned a token for another gateway")
    record = TokenRecord(token=token, key_type=plan.key_type, gateway_id=config.ref.id, roll_from=plan.roll_from)
    # Still the gateway's writer? (ARM may have taken long, or this process was paused past its lease.)
    deps.store.put(config.key_vault_secret, record, timeout=scope.writing("writing Key Vault"))
    emit("rotation.token", {"gatewayId": config.ref.id, "fingerprint": token.fingerprint,
                            "expiresAt": token.expires_at.isoformat(), "keyType": plan.key_type.value,
                            "keyRollFrom": plan.roll_from.value if plan.roll_from else None, "why": plan.reason})
    return Renewal(TokenSource.holding(token, lambda: now), True, plan.key_type, plan.roll_from)

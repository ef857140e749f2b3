"""Gather and renew: read Key Vault's token (unless the sweep's listing said it is fresh), plan with
`rotation.core.renewal`, and act on the plan: keep it, adopt the targets' token, or mint and store a
new one. Key Vault is written before any cluster: a target never holds a token Key Vault does not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rotation.app.adoption import adopt
from rotation.app.context import Deps, Scope
from rotation.app.source import TokenSource, loader
from rotation.app.vault import authoritative, check_owned, fenced_put
from rotation.core.errors import InvalidToken, UnusableSecret, UpstreamError
from rotation.core.fencing import Chain, chain_state
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
    previous: GatewayToken | None = None  # the token Key Vault held before this reconcile minted one
    version: str | None = None  # the Key Vault version targets get (None: not known, e.g. a dry run)


def renew(deps: Deps, scope: Scope, *, known: TokenInfo | None, force: bool, dry_run: bool,
          key_type: KeyType | None, roll_from: KeyType | None) -> Renewal:
    now = deps.clock()
    config = scope.config
    fresh = fresh_in_listing(known, config.ref.gateway, now, deps.renew_before, force=force, key_type=key_type)
    head = scope.fence.head if scope.fence is not None else None
    if (fresh is not None and known is not None and (known.gateway_id or "").lower() == config.ref.id.lower()
            and chain_state(None, fresh.fingerprint, head) is not Chain.FORK):
        # The sweep's one listing already says the stored token is fresh and is the committed head: no
        # per-gateway read. Its value is read (by version when the head names it) only if a target
        # needs it, and only exactly that token is ever pushed.
        source = TokenSource(fresh, loader(deps, scope, fresh.fingerprint, head.version if head else None))
        return Renewal(source, False, known.key_type or KeyType.PRIMARY, None,
                       version=head.version if head else None)
    current = read_current(deps, scope, force, repair=not dry_run)
    plan = plan_renewal(current, now, deps.renew_before, configured=config.key_type, force=force,
                        key_type=key_type, roll_from=roll_from, adopt_existing=deps.adopt_existing)
    if plan.keeps and current is not None:
        token = current.token
        return Renewal(TokenSource.holding(token), False, current.key_type, plan.roll_from, version=current.version)
    if dry_run:
        return Renewal(None, False, plan.key_type, plan.roll_from)
    if plan.adopt:
        # Onboarding: Key Vault's first version is the newest valid token the targets already run.
        adopted = adopt(deps, scope, now)
        if adopted is not None:
            return Renewal(TokenSource.holding(adopted.token), False, adopted.key_type, None,
                           version=adopted.record.version)
    return mint(deps, scope, plan, now, current)


def read_current(deps: Deps, scope: Scope, force: bool, *, repair: bool = True) -> TokenRecord | None:
    """Key Vault's authoritative token: its latest version when that is the committed head, else the
    head's token stored again (a fork is never pushed). A value the product did not write for this
    gateway fails the routine path and is overwritten by a forced one."""
    config = scope.config
    try:
        current = deps.store.get(config.key_vault_secret, timeout=scope.check("reading Key Vault"))
        if current is not None:
            check_owned(config, current)
        return authoritative(deps, scope, current, repair=repair)
    except UnusableSecret:
        if not force:
            raise
        return None
    except UpstreamError:
        if not force:
            raise
        return None  # a fork whose committed version is gone: a forced rotation mints anew


def mint(deps: Deps, scope: Scope, plan: RenewalPlan, now: datetime, current: TokenRecord | None) -> Renewal:
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
    # Key Vault before any cluster, fenced: still the gateway's writer, and committed as the head.
    version = fenced_put(deps, scope, record, based_on=current.version if current is not None else None)
    emit("rotation.token", {"gatewayId": config.ref.id, "fingerprint": token.fingerprint,
                            "expiresAt": token.expires_at.isoformat(), "keyType": plan.key_type.value,
                            "keyRollFrom": plan.roll_from.value if plan.roll_from else None, "why": plan.reason})
    previous = current.token if current is not None else None
    return Renewal(TokenSource.holding(token), True, plan.key_type, plan.roll_from, previous, version)

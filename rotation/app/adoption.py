"""Adopting the token targets already run as Key Vault's first version (see `rotation.core.adoption`).

Called from the reconcile's gather step when Key Vault has no token for the gateway, and by the
`adopt` command. Reads every target's Secret (the app's `get` right), then proves which key signed
the newest candidate by asking ARM for a token of the same gateway and expiry from each key
(`generateToken`, which the app may call anyway and which invalidates nothing): HMAC signatures are
deterministic, so the same key gives the same token. Microsoft documents APIM's SAS tokens of the
same `{id}&{yyyyMMddHHmm}&{signature}` shape as Base64(HMAC-SHA512(key, id + "\n" + expiry))
("Authenticate to the direct management Azure API Management REST API", learn.microsoft.com/rest/api/
apimanagement/apimanagementrest/azure-api-management-rest-api-authentication); for gateway tokens it
is not documented, and if APIM's were not reproducible nothing would be verified and the reconcile
would mint exactly as before adoption existed: safe either way. A candidate no key reproduces (another
gateway's key, a regenerated key, an expiry ARM will not sign) is not adopted: its key type is
unknown and it may not work, so the reconcile mints as before (and `adopt` says why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import wait
from dataclasses import dataclass, replace
from datetime import datetime

from rotation.app.context import Deps, Scope
from rotation.app.vault import fenced_put
from rotation.core.adoption import Candidate, candidates, key_order, origin
from rotation.core.errors import RotationError, UpstreamError
from rotation.core.model import GatewayConfig, KeyType, Target, TokenRecord
from rotation.core.token import GatewayToken
from rotation.telemetry import Executor, emit

log = logging.getLogger("rotation")


@dataclass(frozen=True, slots=True)
class Adopted:
    record: TokenRecord
    candidate: Candidate

    @property
    def token(self) -> GatewayToken:
        return self.record.token

    @property
    def key_type(self) -> KeyType:
        return self.record.key_type


def held_tokens(deps: Deps, config: GatewayConfig, check: Callable[[str], float],
                budget: float = 1.0) -> list[tuple[Target, str | None]]:
    """What each target's Secret key holds, read in parallel within `budget` (a share of the
    deadline: the targets still need the rest). A target that fails or is slow holds nothing here;
    the fan-out that follows reports it."""
    def read(target: Target) -> tuple[Target, str | None]:
        client = deps.clusters.client(deps.registry.clusters[target.cluster])
        state = client.read_secret(target.namespace, target.secret, target.key,
                                   timeout=min(check("reading the Secret"), budget))
        return target, state.value

    pool = Executor(max_workers=min(len(config.targets), 32) or 1, thread_name_prefix="adopt")
    try:
        futures = [pool.submit(read, t) for t in config.targets]
        wait(futures, timeout=budget)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    held: list[tuple[Target, str | None]] = []
    for target, future in zip(config.targets, futures, strict=True):
        if not future.done() or future.cancelled():
            log.info("%s: adoption skips %s: no answer within %.1fs", config.ref, target, budget)
        elif (exc := future.exception()) is not None:
            log.info("%s: adoption skips %s: %s", config.ref, target,
                     exc if isinstance(exc, RotationError) else type(exc).__name__)
        else:
            held.append(future.result())
    return held


def signing_key(deps: Deps, config: GatewayConfig, token: GatewayToken,
                check: Callable[[str], float]) -> KeyType | None:
    """The key whose ARM-generated token of the same expiry is this token, if any. A transient ARM
    error is retried once and never stops the other key from being tried: one 503 must not turn a
    running token into a needless mint (and a restart of every pod)."""
    for key_type in key_order(config.key_type):
        for attempt in (1, 2):
            try:
                again = deps.issuer.generate_token(config.ref, key_type, token.expires_at,
                                                   timeout=check("generateToken (adoption check)"))
            except UpstreamError as exc:
                log.info("%s: adoption could not reproduce token %s with the %s key (attempt %d): %s", config.ref,
                         token.fingerprint, key_type.value, attempt, exc)
                continue
            except RotationError as exc:  # refused (an expiry ARM will not sign): this key proves nothing
                log.info("%s: adoption could not reproduce token %s with the %s key: %s", config.ref,
                         token.fingerprint, key_type.value, exc)
                break
            if again == token.value:
                return key_type
            break
    return None


def choose(deps: Deps, config: GatewayConfig, now: datetime,
           check: Callable[[str], float]) -> tuple[Adopted | None, list[Candidate]]:
    """The token to adopt (None: a new one is minted), and every candidate considered. Writes nothing."""
    # At most a third of what is left: the fan-out to the targets must still fit in the deadline.
    budget = max(0.1, check("reading the targets for adoption") / 3)
    found = candidates(held_tokens(deps, config, check, budget), config.ref.gateway, now, deps.renew_before)
    for candidate in found:
        key_type = signing_key(deps, config, candidate.token, check)
        if key_type is not None:
            record = TokenRecord(token=candidate.token, key_type=key_type, gateway_id=config.ref.id,
                                 origin=origin(candidate, key_type))
            return Adopted(record, candidate), found
    return None, found


def adopt(deps: Deps, scope: Scope, now: datetime) -> Adopted | None:
    """Choose and store (Key Vault before any cluster, like a minted token). None: nothing adopted.
    Every step checks the lease first: adoption writes Key Vault, so only the gateway's writer may."""
    config = scope.config
    adopted, _ = choose(deps, config, now, scope.writing)
    if adopted is None:
        return None
    version = fenced_put(deps, scope, adopted.record, based_on=None)
    adopted = replace(adopted, record=replace(adopted.record, version=version))
    token = adopted.token
    emit("rotation.token", {"gatewayId": config.ref.id, "fingerprint": token.fingerprint,
                            "expiresAt": token.expires_at.isoformat(), "keyType": adopted.key_type.value,
                            "why": f"no token in Key Vault: {adopted.record.origin}"})
    return adopted

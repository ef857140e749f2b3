"""The evidence one reconcile needs to tell whose token a target's value is, loaded only on need.

The happy path needs none: a target holding exactly Key Vault's head token is in sync, and one holding
an earlier-expiring value of no other registered gateway is overwritten whatever it is. Evidence is
paid for only by a value that could change the decision (`rotation.core.provenance`): one listing of
the gateway's Key Vault versions (a later-expiring token may be one of its own versions), one listing
per registered gateway sharing the value's name (a verified token of another gateway is never
overwritten), and at most two generateToken calls for a later-expiring token ARM may reproduce. Each
is loaded once per reconcile, whichever target thread asks first.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime

from rotation.app.context import Deps, Scope
from rotation.core.adoption import key_order
from rotation.core.errors import RotationError
from rotation.core.fencing import off_chain
from rotation.core.model import GatewayConfig, KeyType, TokenInfo
from rotation.core.ports import TokenIssuer, TokenStore
from rotation.core.provenance import Evidence, Provenance, Verdict, classify, possible, worth_proving
from rotation.core.token import GatewayToken, parse_stored

log = logging.getLogger("rotation")


def chain_versions(versions: list[TokenInfo] | tuple[TokenInfo, ...], gateway_id: str) -> list[TokenInfo]:
    """The versions written by the product for this gateway (tagged with its full id) and on the chain."""
    late = off_chain(versions)
    return [v for v in versions if v.fingerprint and v.fingerprint not in late
            and (v.gateway_id or "").lower() == gateway_id.lower()]


@dataclass
class EvidenceLoader:
    """Lazily gathered `Evidence` for one gateway's reconcile (thread-safe: targets run in parallel)."""

    deps: Deps
    scope: Scope
    head_fingerprint: str | None = None  # the token targets should hold: always the gateway's own
    _versions: list[TokenInfo] | None = None
    _foreign: dict[str, str] = field(default_factory=dict)
    _foreign_loaded: set[str] = field(default_factory=set)
    _proven: dict[str, KeyType | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def config(self) -> GatewayConfig:
        return self.scope.config

    def versions(self) -> list[TokenInfo]:
        """The gateway's own Key Vault versions on the chain, oldest first (one listing)."""
        with self._lock:
            if self._versions is None:
                listed = self.deps.store.versions(self.config.key_vault_secret,
                                                  timeout=self.scope.check("listing Key Vault versions"))
                self._versions = chain_versions(list(listed), self.config.ref.id)
            return self._versions

    def _others_named(self, name: str) -> list[GatewayConfig]:
        me = self.config.ref.id.lower()
        return [g for g in self.deps.registry.gateways
                if g.ref.gateway.lower() == name.lower() and g.ref.id.lower() != me]

    def _load_foreign(self, name: str) -> None:
        with self._lock:
            if name.lower() in self._foreign_loaded:
                return
            self._foreign_loaded.add(name.lower())
        for other in self._others_named(name):
            try:
                listed = self.deps.store.versions(other.key_vault_secret,
                                                  timeout=self.scope.check("listing another gateway's versions"))
            except RotationError as exc:
                log.info("%s: could not list %s's versions to check a foreign token: %s",
                         self.config.ref, other.ref, exc)
                continue
            with self._lock:
                for info in chain_versions(list(listed), other.ref.id):
                    self._foreign.setdefault(info.fingerprint or "", other.ref.id)

    def evidence(self, *, mine: bool, foreign_name: str | None) -> Evidence:
        versions = frozenset(v.fingerprint for v in self.versions() if v.fingerprint) if mine else frozenset()
        if self.head_fingerprint:
            versions = versions | {self.head_fingerprint}
        if foreign_name is not None:
            self._load_foreign(foreign_name)
        with self._lock:
            proven = {fp: k for fp, k in self._proven.items() if k is not None}
            return Evidence(self.config.ref.id, versions, proven, dict(self._foreign))

    def prove(self, token: GatewayToken) -> KeyType | None:
        """ARM reproduces `token` for this gateway with its own expiry minute: which key signed it, if
        any (generateToken invalidates nothing). Paid once per token and reconcile."""
        with self._lock:
            if token.fingerprint in self._proven:
                return self._proven[token.fingerprint]
        found: KeyType | None = None
        for key_type in key_order(self.config.key_type):
            try:
                again = self.deps.issuer.generate_token(self.config.ref, key_type, token.expires_at,
                                                        timeout=self.scope.check("generateToken (provenance)"))
            except RotationError as exc:
                log.info("%s: could not ask ARM to reproduce token %s: %s", self.config.ref, token.fingerprint, exc)
                return None  # not recorded: a later reconcile may try again
            if again == token.value:
                found = key_type
                break
        with self._lock:
            self._proven[token.fingerprint] = found
        return found

    def verdict(self, value: str | None, desired_expires_at: datetime | None, now: datetime) -> Verdict:
        """Whose token `value` is, loading only the evidence that could change what happens to it."""
        token = parse_stored(value)
        if token is None:
            return Verdict(Provenance.NONE)
        if token.fingerprint == self.head_fingerprint:
            return Verdict(Provenance.OURS, token)
        if not possible(token, now):
            return classify(value, Evidence(self.config.ref.id), now)
        later = desired_expires_at is None or token.expires_at > desired_expires_at
        same_name = token.gateway.lower() == self.config.ref.gateway.lower()
        others = bool(self._others_named(token.gateway))
        if not later and not others:
            return classify(value, Evidence(self.config.ref.id), now)  # overwritten either way: no calls
        verdict = classify(value, self.evidence(mine=later and same_name, foreign_name=token.gateway if others
                                                else None), now)
        if worth_proving(verdict, self.config.ref.gateway, desired_expires_at, now):
            key = self.prove(token)
            if key is not None:
                verdict = Verdict(Provenance.OURS, token)
        return verdict

    def proven_key(self, fingerprint: str) -> KeyType | None:
        """The key ARM reproduced this token with in this reconcile, if it was asked and did."""
        with self._lock:
            return self._proven.get(fingerprint)

    def key_of(self, fingerprint: str) -> KeyType | None:
        """Which key signed one of the gateway's verified tokens, as long as that key cannot have been
        regenerated since: ARM's proof (it signs so now), or a version in the newest run of versions of
        one key. An earlier run's key was followed by a move to the other key, which a roll makes by
        regenerating the key it leaves: its tokens may be dead, so they are nobody's to promote."""
        with self._lock:
            proven = self._proven.get(fingerprint)
        if proven is not None:
            return proven
        versions = self.versions()
        current = versions[-1].key_type if versions else None
        for info in reversed(versions):
            if info.key_type is not current:
                return None
            if info.fingerprint == fingerprint:
                return info.key_type
        return None


def prove(store: TokenStore, issuer: TokenIssuer, config: GatewayConfig, token: GatewayToken, now: datetime,
          timeout: float) -> KeyType | None:
    """Outside a reconcile (`validate-registry --live`): which of the gateway's keys signed `token`, by
    its Key Vault versions on the chain, else by ARM reproducing it; None: unverified (also for an
    expiry no APIM token can have)."""
    if not possible(token, now) or token.expires_at <= now:
        return None
    try:
        listed = store.versions(config.key_vault_secret, timeout=timeout)
    except RotationError as exc:
        log.info("%s: could not list Key Vault versions to verify a token: %s", config.ref, exc)
        listed = []
    for info in chain_versions(list(listed), config.ref.id):
        if info.fingerprint == token.fingerprint:
            return info.key_type or KeyType.PRIMARY
    for key_type in key_order(config.key_type):
        try:
            if issuer.generate_token(config.ref, key_type, token.expires_at, timeout=timeout) == token.value:
                return key_type
        except RotationError as exc:
            log.info("%s: ARM could not reproduce token %s with the %s key: %s", config.ref, token.fingerprint,
                     key_type.value, exc)
    return None

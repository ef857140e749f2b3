"""What a key roll must know before regenerating key K: does any registered workload still read a token
K signed, anywhere it reads from — not only the registered Secret key?

A workload whose pod template reads another key of the Secret, or another Secret, may run a token of
the retiring key from there (a copy left by hand, the Helm chart's own key): regenerating K would cut
it off while every registered key holds the new token. The pod template says what it reads
(`RolloutState.uses`); each such key is read with the app's rights and its token attributed to a key
by provenance: one of the gateway's Key Vault versions (its `keyType` tag), or ARM reproducing it with
K (generateToken of its own expiry minute, which invalidates nothing). What cannot be read is reported
as unchecked, for the operator to confirm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rotation.app.context import Deps
from rotation.core.errors import RotationError
from rotation.core.keyroll import Read, TargetSeen
from rotation.core.model import GatewayConfig, KeyType, TokenInfo
from rotation.core.token import parse_stored


@dataclass
class Signer:
    """Which key signed a value, by the gateway's Key Vault versions, else by asking ARM (once each)."""

    deps: Deps
    config: GatewayConfig
    versions: Sequence[TokenInfo]
    from_key: KeyType
    timeout: float
    _proofs: dict[str, KeyType | None] = field(default_factory=dict)

    def key_of(self, value: str | None) -> KeyType | None:
        token = parse_stored(value)
        if token is None:
            return None
        for info in self.versions:
            if info.fingerprint == token.fingerprint and info.key_type is not None:
                return info.key_type
        if token.fingerprint not in self._proofs:
            again = self.deps.issuer.generate_token(self.config.ref, self.from_key, token.expires_at,
                                                    timeout=self.timeout)
            self._proofs[token.fingerprint] = self.from_key if again == token.value else None
        return self._proofs[token.fingerprint]


def other_reads(deps: Deps, seen: TargetSeen, signer: Signer, timeout: float) -> tuple[Read, ...]:
    """Every Secret key a registered workload of the target reads besides the registered one."""
    target = seen.target
    out: dict[str, Read] = {}
    client = deps.clusters.client(deps.registry.clusters[target.cluster])
    for rollout in seen.rollouts:
        for use in rollout.uses or ():
            if use.secret == target.secret and use.key == target.key:
                continue
            if use.key is None:
                # Every key of a Secret (envFrom, a volume): the app may read one key by name only. The
                # registered Secret's other keys are the operator's (the registry names one key).
                if use.secret != target.secret:
                    where = f"{target.cluster}/{target.namespace}/{use.secret} (every key, {rollout.workload})"
                    out.setdefault(where, Read(where, error="the workload reads every key of a Secret the app "
                                                            "may not list"))
                continue
            where = f"{target.cluster}/{target.namespace}/{use.secret} key {use.key!r} ({rollout.workload})"
            if where in out:
                continue
            try:
                state = client.read_secret(target.namespace, use.secret, use.key, timeout=timeout)
                out[where] = Read(where, signed_by=signer.key_of(state.value))
            except RotationError as exc:
                out[where] = Read(where, error=str(exc))
    return tuple(out.values())

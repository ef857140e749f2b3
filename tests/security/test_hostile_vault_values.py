"""Key Vault values and tags are input too: whoever can write the token secret (an operator's paste, a
script, a compromised pipeline with Secrets Officer) must not get the rotator to push a wrong token.

- A token of ANOTHER gateway (`{gateway}&…`, FACTS.md: the first field names the gateway) in this
  gateway's secret is never pushed to this gateway's targets, on any path (HTTP, event, sweep).
- Tags describe the value but do not override it: the token's own expiry decides renewal. The HTTP
  and event paths read the value (tags.record_from parses the token); the sweep's fast path trusts the
  listing's tags by design (see the note below).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devstack.arm import sign
from rotation import bootstrap
from rotation.core import tags
from rotation.core.errors import UnusableSecret
from rotation.core.token import GatewayToken
from tests import leakcheck
from tests.functions.conftest import deliver, http
from tests.security.conftest import GATEWAY_ID, SERVICE_ID, App

SECRET = "apim-apim-sec-gw-1-token"
ROUTE = {"service": "apim-sec", "gateway": "gw-1"}
ROTATE = "http://localhost/api/gateways/apim-sec/gw-1/rotate"


def _event() -> dict[str, object]:
    return {"id": "e-vault", "topic": SERVICE_ID, "subject": "/gateways/gw-1/pod-1",
            "eventType": "Microsoft.ApiManagement.GatewayTokenNearExpiry",
            "data": {"gatewayInfo": {"gatewayId": "gw-1"}}}


def _store(app: App, value: str, *, tag_expiry: datetime | None = None, exp: datetime | None = None) -> None:
    token = GatewayToken.parse(value)
    app.fakes.keyvault.set_secret(SECRET, value, content_type=tags.CONTENT_TYPE, tags={
        tags.TAG_MANAGED_BY: tags.MANAGED_BY, tags.TAG_GATEWAY: GATEWAY_ID, tags.TAG_KEY_TYPE: "primary",
        tags.TAG_EXPIRES: (tag_expiry or token.expires_at).isoformat(), tags.TAG_FINGERPRINT: token.fingerprint},
        exp=int((exp or tag_expiry or token.expires_at).timestamp()))


def test_a_token_of_another_gateway_in_key_vault_is_never_pushed(app: App) -> None:
    other = sign("gw-2", "another-gateways-key", datetime.now(UTC).replace(second=0, microsecond=0)
                 + timedelta(days=20))
    leakcheck.register(other)
    _store(app, other)

    status, body = http("rotate", "POST", ROTATE, ROUTE, {})
    assert status == 502, body
    assert "another gateway" in body["error"] and "force" in body["error"], body
    with pytest.raises(UnusableSecret, match="another gateway"):
        deliver(_event())
    assert app.sentinel.stats.connections == 0  # no cluster was even contacted
    assert app.fakes.arm.calls() == []
    assert other.split("&")[2] not in str(body)


# The sweep's fast path trusts its own listing's tags (expiresAt, fingerprint) and reads a value only for a
# target that needs it: one listing serves the whole fleet (benchmarks/sweep.py: 1,000 gateways, 41 Key
# Vault calls). Tags and value are writable by the same principals (Key Vault Secrets Officer has no
# tags-only variant among the built-in roles), so lying tags can at worst delay a renewal until the
# NearExpiry event, whose path reads the value; they can never get another gateway's token pushed
# (tests/service/test_foreign_tokens.py::test_the_sweeps_fast_path_never_pushes_another_gateways_token_from_key_vault).
# The one tag that Key Vault's own attribute can contradict is checked below.


def test_an_expires_at_tag_later_than_key_vaults_own_expiry_does_not_win(app: App) -> None:
    """Every write sets the tag and Key Vault's `exp` attribute to the token's expiry; an edited tag that
    disagrees with `exp` (Secrets Officer may update tags alone) is not believed: the earlier one counts."""
    soon = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=2)
    token = app.fakes.arm.sign(GATEWAY_ID, "primary", soon)
    leakcheck.register(token)
    _store(app, token, tag_expiry=soon + timedelta(days=23), exp=soon)
    sweep = bootstrap.container().rotator.sweep(deadline_seconds=5)
    assert [c["status"] for c in app.fakes.arm.calls() if "generateToken" in c["path"]] == [200], sweep.reports


def test_a_gateway_cannot_name_a_kubeconfig_secret_as_its_token_secret() -> None:
    """With one vault (CONFIG_KEY_VAULT_URL unset) tokens and kubeconfigs share a namespace: a registry
    whose `keyVaultSecret` names a cluster's `kubeconfigSecret` would have a forced rotation overwrite
    that kubeconfig with a token. Refused when the registry loads."""
    import json

    from rotation.core.errors import RegistryError
    from rotation.core.registry import load_registry
    from tests.samples import gateway, registry

    doc = registry(gateway("gw-1", keyVaultSecret="Kubeconfig-West"))
    with pytest.raises(RegistryError, match=r"gateways\[0\].*kubeconfig secret of cluster west"):
        load_registry(json.dumps(doc))

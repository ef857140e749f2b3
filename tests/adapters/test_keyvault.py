"""KeyVaultTokenStore (azure-keyvault-secrets + azure-identity) against the Key Vault and identity fakes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken

from devstack.arm import sign
from devstack.fakes import Fakes
from rotation.adapters.credential import build_credential
from rotation.adapters.keyvault import KeyVaultTokenStore
from rotation.core import tags
from rotation.core.errors import (
    AccessDenied,
    NotFound,
    PermanentError,
    UnusableSecret,
    UpstreamError,
    UpstreamRejected,
)
from rotation.core.model import KeyType, TokenRecord
from rotation.core.token import GatewayToken
from tests import leakcheck

GATEWAY_ID = ("/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/rg/providers/"
              "Microsoft.ApiManagement/service/apim-devstack/gateways/gw-1")


def store(fakes: Fakes, **kwargs: Any) -> KeyVaultTokenStore:
    return KeyVaultTokenStore(build_credential(None), fakes.keyvault.url, verify_challenge_resource=False,
                              **kwargs)


def record(gateway: str = "gw-1", days: float = 20, key_type: KeyType = KeyType.PRIMARY,
           roll_from: KeyType | None = None) -> TokenRecord:
    expiry = (datetime.now(UTC) + timedelta(days=days)).replace(second=0, microsecond=0)
    value = sign(gateway, "k" * 32 + str(time.time_ns()), expiry)
    leakcheck.register(value)
    return TokenRecord(token=GatewayToken.parse(value), key_type=key_type, gateway_id=GATEWAY_ID,
                       roll_from=roll_from)


class StaticCredential:
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def test_put_then_get_round_trips_value_tags_and_expiry(fakes: Fakes) -> None:
    kv = store(fakes)
    rec = record(key_type=KeyType.SECONDARY, roll_from=KeyType.PRIMARY)

    version = kv.put("apim-devstack-gw-1", rec, timeout=10)
    got = kv.get("apim-devstack-gw-1", timeout=10)

    assert version and got is not None
    assert got.token.value == rec.token.value
    assert (got.key_type, got.gateway_id, got.version, got.roll_from) == (
        KeyType.SECONDARY, GATEWAY_ID, version, KeyType.PRIMARY)
    [dumped] = fakes.keyvault.dump()
    assert dumped["contentType"] == tags.CONTENT_TYPE
    assert dumped["tags"] == tags.tags_for(rec)
    assert dumped["expires"] == int(rec.token.expires_at.timestamp())


def test_every_put_is_a_new_version_and_get_returns_the_latest(fakes: Fakes) -> None:
    kv = store(fakes)
    first, second = record(days=3), record(days=29)

    v1 = kv.put("tok", first)
    v2 = kv.put("tok", second)

    got = kv.get("tok")
    assert got is not None and v1 != v2
    assert (got.version, got.token.value) == (v2, second.token.value)
    assert fakes.keyvault.dump()[0]["versions"] == 2


def test_versions_lists_every_version_oldest_first_without_values(fakes: Fakes) -> None:
    kv = store(fakes)
    written = [record(days=28), record(days=29, key_type=KeyType.SECONDARY, roll_from=KeyType.PRIMARY),
               record(days=27, key_type=KeyType.SECONDARY)]
    for r in written:
        kv.put("tok", r)
        time.sleep(1.05)  # Key Vault's `created` has whole-second precision

    infos = kv.versions("tok", timeout=10)

    assert [(i.fingerprint, i.key_type, i.roll_from, i.expires_at) for i in infos] == [
        (r.token.fingerprint, r.key_type, r.roll_from, r.token.expires_at) for r in written]
    assert kv.versions("missing-secret") == []


def test_missing_secret_is_none_for_get_and_not_found_for_read_text(fakes: Fakes) -> None:
    kv = store(fakes)

    assert kv.get("nope") is None
    with pytest.raises(NotFound, match="'nope'"):
        kv.read_text("nope")


def test_read_text_returns_any_value(fakes: Fakes) -> None:
    kubeconfig = "apiVersion: v1\nkind: Config\nclusters: []\n"
    fakes.keyvault.set_secret("kubeconfig-a", kubeconfig)

    assert store(fakes).read_text("kubeconfig-a") == kubeconfig


def test_a_value_that_is_not_a_token_is_a_permanent_error_without_the_value(fakes: Fakes) -> None:
    fakes.keyvault.set_secret("garbage", "hunter2-this-is-not-a-token")

    with pytest.raises(UnusableSecret) as caught:  # server-side state, not the caller's input
        store(fakes).get("garbage")

    assert "'garbage'" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_list_pages_through_more_than_25_secrets_and_keeps_only_managed_ones(fakes: Fakes) -> None:
    records = {f"tok-{i:02d}": record(gateway=f"gw-{i}", days=i + 1) for i in range(30)}
    for name, rec in records.items():
        fakes.keyvault.set_secret(name, rec.token.value, content_type=tags.CONTENT_TYPE,
                                  tags=tags.tags_for(rec))
    fakes.keyvault.set_secret("kubeconfig-a", "apiVersion: v1")
    fakes.keyvault.set_secret("someone-elses", "x", tags={"owner": "other-team"})

    infos = store(fakes).list(timeout=10)

    assert sorted(i.secret_name for i in infos) == sorted(records)
    by_name = {i.secret_name: i for i in infos}
    for name, rec in records.items():
        info = by_name[name]
        assert (info.gateway_id, info.key_type, info.expires_at, info.fingerprint) == (
            GATEWAY_ID, KeyType.PRIMARY, rec.token.expires_at, rec.token.fingerprint)
    listing = [c for c in fakes.keyvault.calls() if c["path"] == "/secrets" and c["status"] == 200]
    assert len(listing) == 2  # 32 secrets = a full page of 25 + the nextLink page


def test_first_request_gets_the_challenge_then_carries_a_vault_token(fakes: Fakes) -> None:
    store(fakes).put("first", record())

    calls = fakes.keyvault.calls()
    assert [(c["method"], c["path"], c["status"]) for c in calls] == [
        ("PUT", "/secrets/first", 401), ("PUT", "/secrets/first", 200)]
    assert [r["resource"] for r in fakes.identity.requests()] == ["https://vault.azure.net"]


def test_challenge_header_on_the_wire(fakes: Fakes) -> None:
    url = f"{fakes.keyvault.url}/secrets/x?api-version=7.5"

    missing = requests.put(url, data=b"", verify=fakes.ca_path, timeout=10)
    wrong = requests.get(url, headers={"Authorization": "Bearer nope"}, verify=fakes.ca_path, timeout=10)

    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://login.microsoftonline.com/{fakes.keyvault.tenant}", '
        'resource="https://vault.azure.net"')


def test_wrong_token_is_access_denied(fakes: Fakes) -> None:
    kv = KeyVaultTokenStore(StaticCredential("forged"), fakes.keyvault.url,
                            verify_challenge_resource=False, retry_total=0)

    with pytest.raises(AccessDenied, match=r"Key Vault get of secret 'x' failed: 401"):
        kv.get("x")


def test_challenge_resource_is_verified_by_default(fakes: Fakes) -> None:
    # The fake says resource="https://vault.azure.net" while it lives on 127.0.0.1: the SDK's default
    # check refuses that, which is why only the local stack relaxes it.
    kv = KeyVaultTokenStore(build_credential(None), fakes.keyvault.url, retry_total=0)

    with pytest.raises(PermanentError, match=r"challenge resource 'vault\.azure\.net' does not match"):
        kv.get("x")
    assert fakes.identity.requests() == []


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (503, None), (429, None)])
def test_throttling_and_server_errors_are_upstream_errors(fakes: Fakes, status: int,
                                                          retry_after: int | None) -> None:
    kv = store(fakes, retry_total=0)
    kv.put("tok", record())
    fakes.keyvault.add_fault({"method": "GET", "path": "^/secrets", "status": status, "times": 2})

    with pytest.raises(UpstreamError, match=f"Key Vault get of secret 'tok' failed: {status}"):
        kv.get("tok")
    with pytest.raises(UpstreamError, match=f"Key Vault listing of secret properties failed: {status}"):
        kv.list()


def test_429_with_retry_after_is_retried(fakes: Fakes) -> None:
    kv = store(fakes)
    rec = record()
    kv.put("tok", rec)
    fakes.keyvault.add_fault({"method": "GET", "path": "^/secrets/tok$", "status": 429, "retryAfter": 1})

    got = kv.get("tok", timeout=15)

    assert got is not None and got.token.value == rec.token.value


def test_invalid_secret_name_is_rejected_upstream(fakes: Fakes) -> None:
    with pytest.raises(UpstreamRejected, match="400 BadParameter"):
        store(fakes, retry_total=0).get("bad_name")


def test_error_messages_never_carry_the_value(fakes: Fakes) -> None:
    kv = store(fakes, retry_total=0)
    rec = record()
    fakes.keyvault.add_fault({"method": "PUT", "path": "^/secrets/tok$", "status": 400,
                              "message": f"cannot store {rec.token.value}", "times": 2})

    with pytest.raises(UpstreamRejected) as caught:
        kv.put("tok", rec)

    assert rec.token.value not in str(caught.value)
    assert "<redacted>" in str(caught.value)


def test_unreachable_vault_is_an_upstream_error(fakes: Fakes) -> None:
    url = fakes.keyvault.url
    fakes.keyvault.stop()

    with pytest.raises(UpstreamError, match="Key Vault get of secret 'tok' failed"):
        KeyVaultTokenStore(build_credential(None), url, verify_challenge_resource=False,
                           retry_total=0).get("tok", timeout=5)


def test_forbidden_is_access_denied(fakes: Fakes) -> None:
    kv = store(fakes, retry_total=0)
    kv.put("tok", record())
    fakes.keyvault.add_fault({"method": "GET", "path": "^/secrets", "status": 403, "code": "Forbidden",
                              "message": "The user does not have secrets get permission", "times": 0})

    with pytest.raises(AccessDenied, match=r"Key Vault get of secret 'tok' failed: 403 Forbidden"):
        kv.get("tok")
    with pytest.raises(AccessDenied, match="listing"):
        kv.list()

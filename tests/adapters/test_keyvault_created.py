"""Key Vault's `created` attribute reaches the records: events heal and key rolls compare it with the
workloads' restartedAt (azure-keyvault-secrets SecretProperties.created_on)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from devstack.fakes import Fakes
from tests.adapters.test_keyvault import record, store


def test_get_and_versions_carry_when_key_vault_stored_each_version(fakes: Fakes) -> None:
    kv = store(fakes)
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    first, second = record(days=20), record(days=21)
    kv.put("apim-devstack-gw-1", first, timeout=10)
    kv.put("apim-devstack-gw-1", second, timeout=10)
    after = datetime.now(UTC) + timedelta(seconds=1)
    got = kv.get("apim-devstack-gw-1", timeout=10)
    assert got is not None and got.created_at is not None and before <= got.created_at <= after
    versions = kv.versions("apim-devstack-gw-1", timeout=10)
    assert [v.fingerprint for v in versions] == [first.token.fingerprint, second.token.fingerprint]
    assert all(v.created_at is not None and before <= v.created_at <= after for v in versions)

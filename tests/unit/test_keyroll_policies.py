"""Pure decisions around key rolls and leases: carried key rolls, heal restarts, phase-2 blockers, the in-process
lease, and the LEASE_CONTAINER_URL setting."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from rotation.adapters.lease import LocalLease, lease_duration
from rotation.core.convergence import token_stored_at
from rotation.core.errors import SettingsError, UpstreamError
from rotation.core.keyroll import KeyRollRefused, blockers, check_direction
from rotation.core.model import KeyType, TokenInfo, TokenRecord
from rotation.core.renewal import key_type_for
from rotation.core.restarts import RestartAction, instance_is_stale, restart_action
from rotation.core.token import GatewayToken
from rotation.settings import Settings
from tests.samples import gateway, registry

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TOKEN = GatewayToken.parse("gw-1&202612251200&" + "A" * 86 + "==")


def test_a_pending_roll_overrides_the_registry_pin_and_the_current_key() -> None:
    rolling = TokenRecord(TOKEN, KeyType.SECONDARY, "/x", roll_from=KeyType.PRIMARY)
    assert key_type_for(KeyType.PRIMARY, rolling) is KeyType.SECONDARY
    assert key_type_for(KeyType.PRIMARY, TokenRecord(TOKEN, KeyType.SECONDARY, "/x")) is KeyType.PRIMARY


def test_direction() -> None:
    assert check_direction(None, KeyType.SECONDARY) is False
    assert check_direction(KeyType.PRIMARY, KeyType.PRIMARY) is True
    with pytest.raises(KeyRollRefused, match="--from primary"):
        check_direction(KeyType.PRIMARY, KeyType.SECONDARY)


def test_restart_decisions_compare_fingerprints_not_clocks() -> None:
    """A workload owes a restart unless its pod template names the token's fingerprint: no clock of the
    restarting machine is compared with Key Vault's, so a writer minutes off neither misses nor repeats one."""
    assert restart_action("aaaaaaaaaaaa", "aaaaaaaaaaaa") is RestartAction.CURRENT
    assert restart_action("bbbbbbbbbbbb", "aaaaaaaaaaaa") is RestartAction.RESTART
    assert restart_action(None, "aaaaaaaaaaaa") is RestartAction.RESTART  # never restarted by the product


def test_instance_staleness_and_first_storage_time() -> None:
    assert instance_is_stale(None, NOW) and instance_is_stale(NOW - timedelta(days=1), NOW)
    assert not instance_is_stale(NOW + timedelta(seconds=30), NOW)
    versions = [TokenInfo("s", None, KeyType.PRIMARY, NOW, "a", created_at=NOW - timedelta(hours=2)),
                TokenInfo("s", None, KeyType.PRIMARY, NOW, "a", created_at=NOW - timedelta(hours=1))]
    assert token_stored_at(versions, "a") == NOW - timedelta(hours=2)
    assert token_stored_at(versions, "b") is None


def test_blockers_when_key_vault_is_not_this_rolls_token() -> None:
    (b,) = blockers(TokenRecord(TOKEN, KeyType.PRIMARY, "/x"), KeyType.PRIMARY, [], [], False)
    assert "with no roll tag" in str(b) and not b.waits


def test_local_lease_excludes_expires_and_detects_loss() -> None:
    lease = LocalLease()
    held = lease.acquire("g", duration=15, wait=0)
    with pytest.raises(UpstreamError, match="holds it"):
        lease.acquire("g", duration=15, wait=0.05)
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(lease.acquire("g", duration=15, wait=2)))
    t.start()
    time.sleep(0.05)
    held.release()  # wakes the waiter
    t.join()
    assert got
    # expiry: force it, then another holder takes it and the first one's renewal fails
    lease._entries["g"].expires = time.monotonic() - 1
    taker = lease.acquire("g", duration=15, wait=0)
    with pytest.raises(UpstreamError, match="lost"):
        got[0].renew()  # type: ignore[attr-defined]
    taker.renew()
    assert (lease_duration(5), lease_duration(30), lease_duration(600)) == (15, 30, 60)


def _env(**extra: str) -> dict[str, str]:
    return {"ROTATION_REGISTRY": json.dumps(registry(gateway("gw-1"))), "KEY_VAULT_URL": "https://kv-test.vault.azure.net",
            **extra}


def test_lease_container_url_is_required_in_azure_and_must_be_https() -> None:
    assert Settings.from_env(_env()).lease_container_url is None  # local: in-process leases
    with pytest.raises(SettingsError, match="LEASE_CONTAINER_URL is required in Azure"):
        Settings.from_env(_env(WEBSITE_INSTANCE_ID="abc"))
    with pytest.raises(SettingsError, match="LEASE_CONTAINER_URL must be an https:// URL"):
        Settings.from_env(_env(LEASE_CONTAINER_URL="http://acct.blob.core.windows.net/gateway-leases"))
    url = "https://acct.blob.core.windows.net/gateway-leases"
    assert Settings.from_env(_env(LEASE_CONTAINER_URL=url, WEBSITE_INSTANCE_ID="abc")).lease_container_url == url

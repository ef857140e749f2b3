from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from rotation.core.errors import SettingsError
from rotation.settings import Settings
from tests.samples import registry

BASE = {"ROTATION_REGISTRY": json.dumps(registry()), "KEY_VAULT_URL": "https://kv.vault.azure.net/"}


def test_defaults() -> None:
    s = Settings.from_env(BASE)
    assert s.key_vault_url == "https://kv.vault.azure.net"
    assert s.arm_endpoint == "https://management.azure.com"
    assert (s.token_lifetime, s.renew_before, s.deadline_seconds) == (timedelta(days=29), timedelta(days=7), 20)
    assert s.sweep_schedule == "0 0 * * * *"
    assert s.outcome_topic_endpoint is None and s.client_id is None and not s.local_emulators
    assert len(s.registry.gateways) == 1


def test_overrides() -> None:
    s = Settings.from_env({**BASE, "TOKEN_LIFETIME_DAYS": "14", "RENEW_BEFORE_DAYS": "3",
                           "ROTATION_DEADLINE_SECONDS": "10", "AZURE_CLIENT_ID": "abc",
                           "OUTCOME_TOPIC_ENDPOINT": "https://t.westeurope-1.eventgrid.azure.net/api/events",
                           "ARM_ENDPOINT": "https://management.usgovcloudapi.net/"})
    assert s.token_lifetime == timedelta(days=14) and s.renew_before == timedelta(days=3)
    assert s.deadline_seconds == 10 and s.client_id == "abc"
    assert s.arm_endpoint == "https://management.usgovcloudapi.net"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KEY_VAULT_URL": "https://kv"}, "ROTATION_REGISTRY is required"),
        ({"ROTATION_REGISTRY": BASE["ROTATION_REGISTRY"]}, "KEY_VAULT_URL is required"),
        ({**BASE, "KEY_VAULT_URL": "http://kv"}, "KEY_VAULT_URL must be an https:// URL"),
        ({**BASE, "ARM_ENDPOINT": "http://arm"}, "ARM_ENDPOINT must be an https:// URL"),
        ({**BASE, "ROTATION_REGISTRY": "{"}, r"ROTATION_REGISTRY: registry: not valid JSON"),
        ({**BASE, "ROTATION_REGISTRY": '{"clusters": [], "gateways": [{"id": "x"}]}'},
         r"ROTATION_REGISTRY: registry: gateways\[0\]"),
        ({**BASE, "ROTATION_REGISTRY": "@Microsoft.KeyVault(SecretUri=https://kv/secrets/r)"},
         "unresolved Key Vault reference"),
        ({**BASE, "TOKEN_LIFETIME_DAYS": "31"}, "TOKEN_LIFETIME_DAYS must be between 1 and 30"),
        ({**BASE, "TOKEN_LIFETIME_DAYS": "0"}, "TOKEN_LIFETIME_DAYS must be between 1 and 30"),
        ({**BASE, "TOKEN_LIFETIME_DAYS": "ten"}, "TOKEN_LIFETIME_DAYS must be a number"),
        ({**BASE, "TOKEN_LIFETIME_DAYS": "7", "RENEW_BEFORE_DAYS": "7"}, "must be less than TOKEN_LIFETIME_DAYS"),
        ({**BASE, "ROTATION_DEADLINE_SECONDS": "29"}, "ROTATION_DEADLINE_SECONDS must be between 1 and 25"),
        ({**BASE, "ROTATION_LOCAL_EMULATORS": "maybe"}, "must be true or false"),
        ({**BASE, "ROTATION_LOCAL_EMULATORS": "true", "WEBSITE_INSTANCE_ID": "abc"}, "refused in Azure"),
    ],
)
def test_invalid_settings_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_local_emulators_warn_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert Settings.from_env({**BASE, "ROTATION_LOCAL_EMULATORS": "true"}).local_emulators
    assert "verification is OFF" in caplog.text

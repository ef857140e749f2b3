from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from rotation.core.errors import SettingsError, SettingsPending, TransientError
from rotation.settings import AZURE_HOSTING_VARIABLES, Settings
from tests.samples import registry

BASE = {"ROTATION_REGISTRY": json.dumps(registry()), "KEY_VAULT_URL": "https://kv-test.vault.azure.net/"}


def test_defaults() -> None:
    s = Settings.from_env(BASE)
    assert s.key_vault_url == "https://kv-test.vault.azure.net"
    assert s.config_vault_url == s.key_vault_url and s.cloud.name.value == "AzureCloud" and not s.in_azure
    assert s.arm_endpoint == "https://management.azure.com"
    assert (s.token_lifetime, s.renew_before, s.deadline_seconds) == (timedelta(days=29), timedelta(days=7), 20)
    assert s.sweep_schedule == "0 0 * * * *"
    assert s.outcome_topic_endpoint is None and s.client_id is None and not s.local_emulators
    assert len(s.registry.gateways) == 1


def test_overrides() -> None:
    s = Settings.from_env({**BASE, "TOKEN_LIFETIME_DAYS": "14", "RENEW_BEFORE_DAYS": "3",
                           "ROTATION_DEADLINE_SECONDS": "10", "AZURE_CLIENT_ID": "abc",
                           "OUTCOME_TOPIC_ENDPOINT": "https://t.westeurope-1.eventgrid.azure.net/api/events",
                           "CONFIG_KEY_VAULT_URL": "https://kv-cfg-test.vault.azure.net"})
    assert s.token_lifetime == timedelta(days=14) and s.renew_before == timedelta(days=3)
    assert s.deadline_seconds == 10 and s.client_id == "abc"
    assert s.config_vault_url == "https://kv-cfg-test.vault.azure.net"
    assert s.key_vault_url == "https://kv-test.vault.azure.net"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KEY_VAULT_URL": "https://kv"}, "ROTATION_REGISTRY is required"),
        ({"ROTATION_REGISTRY": BASE["ROTATION_REGISTRY"]}, "KEY_VAULT_URL is required"),
        ({**BASE, "KEY_VAULT_URL": "http://kv"}, "KEY_VAULT_URL must be an https:// URL"),
        ({**BASE, "ARM_ENDPOINT": "http://arm"}, "ARM_ENDPOINT must be an https:// URL"),
        ({**BASE, "AZURE_CLOUD": "AzureGermanCloud"}, "AZURE_CLOUD: 'AzureGermanCloud' is not one of"),
        # The ARM token audience no longer follows ARM_ENDPOINT; pointing it elsewhere would send the
        # token there, so it is an override for a loopback emulator only.
        ({**BASE, "ARM_ENDPOINT": "https://management.usgovcloudapi.net"}, "differs from AzureCloud"),
        ({**BASE, "ARM_ENDPOINT": "https://arm.evil.example"}, "only an override for a loopback emulator"),
        ({**BASE, "ARM_ENDPOINT": "https://arm.evil.example", "ROTATION_LOCAL_EMULATORS": "true"},
         "only an override for a loopback emulator"),
        ({**BASE, "KEY_VAULT_URL": "https://kv-test.vault.usgovcloudapi.net"},
         r"KEY_VAULT_URL .* is not a Key Vault of AzureCloud \(https://<vault>.vault.azure.net\)"),
        ({**BASE, "KEY_VAULT_URL": "https://kv-test.vault.azure.net.evil.example"}, "is not a Key Vault"),
        ({**BASE, "KEY_VAULT_URL": "https://127.0.0.1:8443"}, "not an IP address"),
        ({**BASE, "KEY_VAULT_URL": "https://x@kv-test.vault.azure.net"}, "user information"),
        ({**BASE, "CONFIG_KEY_VAULT_URL": "https://cfg.example.com"}, "CONFIG_KEY_VAULT_URL .* is not a Key Vault"),
        ({**BASE, "AZURE_CLOUD": "AzureChinaCloud"}, r"clusters\[0\].server: .* is not an AKS API server of this cloud"),
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


@pytest.mark.parametrize("variable", AZURE_HOSTING_VARIABLES)
def test_emulator_switch_is_refused_on_every_azure_plan(variable: str) -> None:
    """Linux Consumption and Flex Consumption do not set WEBSITE_INSTANCE_ID; the Functions host tells
    them apart by WEBSITE_SKU=FlexConsumption / WEBSITE_POD_NAME / LEGION_SERVICE_HOST
    (azure-functions-host, src/WebJobs.Script/Environment/EnvironmentExtensions.cs), and App Service sets
    WEBSITE_SITE_NAME on every plan (Microsoft Learn, App Service environment variables reference).
    Any one of them refuses the switch, naming the variable."""
    env = {**BASE, "ROTATION_LOCAL_EMULATORS": "true", variable: "FlexConsumption"}
    with pytest.raises(SettingsError, match=f"refused in Azure \\({variable} is set\\)"):
        Settings.from_env(env)
    lease = "https://acct.blob.core.windows.net/gateway-leases"  # required in Azure (key roll leases)
    assert Settings.from_env({**BASE, variable: "x", "LEASE_CONTAINER_URL": lease}).in_azure


@pytest.mark.parametrize(("cloud", "vault", "arm", "scope", "aks"), [
    ("AzureCloud", "https://kv-test.vault.azure.net", "https://management.azure.com",
     "https://management.azure.com/.default", "https://c-1a2b.hcp.westeurope.azmk8s.io:443"),
    ("AzureUSGovernment", "https://kv-test.vault.usgovcloudapi.net", "https://management.usgovcloudapi.net",
     "https://management.usgovcloudapi.net/.default",
     "https://c-1a2b.hcp.usgovvirginia.cx.aks.containerservice.azure.us:443"),
    ("AzureChinaCloud", "https://kv-test.vault.azure.cn", "https://management.chinacloudapi.cn",
     "https://management.chinacloudapi.cn/.default", "https://c-1a2b.hcp.chinaeast2.cx.prod.service.azk8s.cn"),
])
def test_cloud_gives_endpoints_audiences_and_host_names(cloud: str, vault: str, arm: str, scope: str,
                                                        aks: str) -> None:
    """Values of msrestazure's azure_cloud.py (resource_manager, keyvault_dns) and of Microsoft's AKS
    egress rules (*.hcp.<location>.<cloud AKS domain>); see rotation/cloud.py."""
    doc = registry()
    doc["clusters"][0]["server"] = aks
    s = Settings.from_env({"ROTATION_REGISTRY": json.dumps(doc), "KEY_VAULT_URL": vault, "AZURE_CLOUD": cloud})
    assert (s.arm_endpoint, s.cloud.arm_scope) == (arm, scope)
    other = "https://c-1a2b.hcp.westeurope.azmk8s.io" if cloud != "AzureCloud" else aks.replace(
        "azmk8s.io", "cx.prod.service.azk8s.cn")
    doc["clusters"][0]["server"] = other
    with pytest.raises(SettingsError, match="is not an AKS API server of this cloud"):
        Settings.from_env({"ROTATION_REGISTRY": json.dumps(doc), "KEY_VAULT_URL": vault, "AZURE_CLOUD": cloud})


def test_emulator_overrides_only_for_loopback() -> None:
    doc = registry()
    doc["clusters"][0]["server"] = "https://127.0.0.1:6443"
    local = {"ROTATION_REGISTRY": json.dumps(doc), "KEY_VAULT_URL": "https://127.0.0.1:8443",
             "ARM_ENDPOINT": "https://127.0.0.1:9443", "ROTATION_LOCAL_EMULATORS": "true"}
    s = Settings.from_env(local)
    assert s.arm_endpoint == "https://127.0.0.1:9443"
    assert s.cloud.arm_scope == "https://management.azure.com/.default"  # not derived from ARM_ENDPOINT
    assert s.relaxed_challenge(s.key_vault_url)
    # The relaxed challenge check never applies to a real vault, whatever the switch says.
    assert not s.relaxed_challenge("https://kv-test.vault.azure.net")
    assert not Settings.from_env(BASE).relaxed_challenge("https://127.0.0.1:8443")
    # Without the switch, loopback is refused everywhere.
    with pytest.raises(SettingsError, match="not an IP address"):
        Settings.from_env({**local, "ROTATION_LOCAL_EMULATORS": "false", "ARM_ENDPOINT": ""})


def test_unresolved_key_vault_reference_is_transient() -> None:
    """The platform resolves `@Microsoft.KeyVault(...)` app settings itself; right after a deployment
    (role assignment not yet effective) the literal reference is what the worker sees. That heals, so
    it is a TransientError (the event path lets Event Grid redeliver) as well as a SettingsError."""
    with pytest.raises(SettingsPending) as caught:
        Settings.from_env({**BASE, "ROTATION_REGISTRY": "@Microsoft.KeyVault(SecretUri=https://kv/secrets/r)"})
    assert isinstance(caught.value, TransientError) and isinstance(caught.value, SettingsError)


def test_the_operator_login_reads_the_kubectl_default_kubeconfig_and_the_client_id() -> None:
    """kubectl reads the files of KUBECONFIG (os.pathsep-separated) and otherwise ~/.kube/config
    (kubernetes.io, "Organizing Cluster Access Using kubeconfig Files"); discover scans the first."""
    import os
    from pathlib import Path

    from rotation.settings import OperatorLogin

    login = OperatorLogin.from_env({"KUBECONFIG": os.pathsep.join(["/a/one", "/b/two"]), "AZURE_CLIENT_ID": " id "})
    assert (login.kubeconfig, login.client_id, login.in_azure) == ("/a/one", "id", False)
    bare = OperatorLogin.from_env({"WEBSITE_INSTANCE_ID": "x"})
    assert bare.kubeconfig == str(Path.home() / ".kube" / "config") and bare.client_id is None and bare.in_azure

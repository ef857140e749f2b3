"""App settings that decide where one of the app's bearer tokens goes.

KEY_VAULT_URL / CONFIG_KEY_VAULT_URL get a Key Vault token, LEASE_CONTAINER_URL and DEADLETTER_BLOB_URL
a Storage token (audience https://storage.azure.com: the same identity holds data roles on the app's
own storage account, which on Flex Consumption also holds the deployment package), OUTCOME_TOPIC_ENDPOINT
an Event Grid token. A setting may be a Key Vault reference, i.e. come from the configuration vault, so
each must name a host of that service in the configured cloud, with nothing a parser could read twice.

Host forms: Key Vault `<vault>.vault.azure.net` / `.vault.usgovcloudapi.net` / `.vault.azure.cn`
(msrestazure azure_cloud.py `keyvault_dns`); Blob `<account>.blob.core.windows.net` /
`.blob.core.usgovcloudapi.net` / `.blob.core.chinacloudapi.cn` (msrestazure `storage_endpoint`) and the
Azure DNS zone form `<account>.z<NN>.blob.storage.azure.net` (Microsoft Learn, "Storage account
overview", Azure DNS zone endpoints); Event Grid topics `<topic>.<region>-1.eventgrid.azure.net` /
`eventgrid.azure.us` / `eventgrid.azure.cn` (Microsoft Learn, Event Grid on IoT Edge, "outbound" endpoints
must target one of these domains).
"""

from __future__ import annotations

import json

import pytest

from rotation.core.errors import SettingsError
from rotation.settings import Settings
from tests.samples import registry

BASE = {"ROTATION_REGISTRY": json.dumps(registry()), "KEY_VAULT_URL": "https://kv-test.vault.azure.net"}

VAULTS = [
    "https://kv-test.vault.azure.net.evil.example",
    "https://user@kv-test.vault.azure.net",
    "https://kv-test.vault.azure.net@evil.example",
    "https://kv-test.vault.azure.net:8443",
    "https://kv-test.vault.azure.net/secrets",
    "https://kv-test.vault.azure.net?x=1",
    "https://kv-test.vault.usgovcloudapi.net",
    "https://kv-test\t.vault.azure.net",
    "https://evil.example#kv-test.vault.azure.net",
    "http://kv-test.vault.azure.net",
]


@pytest.mark.parametrize("name", ["KEY_VAULT_URL", "CONFIG_KEY_VAULT_URL"])
@pytest.mark.parametrize("url", VAULTS)
def test_vault_urls_name_a_vault_of_the_cloud(name: str, url: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**BASE, name: url})


STORAGE = {
    "another host": "https://evil.example/gateway-leases",
    "suffix as a label": "https://acct.blob.core.windows.net.evil.example/gateway-leases",
    "userinfo": "https://acct.blob.core.windows.net@evil.example/gateway-leases",
    "other port": "https://acct.blob.core.windows.net:8443/gateway-leases",
    "query": "https://acct.blob.core.windows.net/gateway-leases?sv=1",
    "fragment": "https://evil.example#acct.blob.core.windows.net/gateway-leases",
    "control character": "https://acct.blob.core.windows.net\t/gateway-leases",
    "another cloud": "https://acct.blob.core.chinacloudapi.cn/gateway-leases",
    "queue, not blob": "https://acct.queue.core.windows.net/gateway-leases",
    "IP literal": "https://20.1.2.3/gateway-leases",
}


@pytest.mark.parametrize("name", ["LEASE_CONTAINER_URL", "DEADLETTER_BLOB_URL"])
@pytest.mark.parametrize("case", sorted(STORAGE))
def test_storage_urls_name_a_blob_endpoint_of_the_cloud(name: str, case: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**BASE, name: STORAGE[case]})


TOPICS = {
    "another host": "https://evil.example/api/events",
    "suffix as a label": "https://t.westeurope-1.eventgrid.azure.net.evil.example/api/events",
    "userinfo": "https://t.westeurope-1.eventgrid.azure.net@evil.example/api/events",
    "other port": "https://t.westeurope-1.eventgrid.azure.net:8443/api/events",
    "another cloud": "https://t.chinanorth3-1.eventgrid.azure.cn/api/events",
}


@pytest.mark.parametrize("case", sorted(TOPICS))
def test_outcome_topic_names_an_event_grid_endpoint_of_the_cloud(case: str) -> None:
    with pytest.raises(SettingsError, match="OUTCOME_TOPIC_ENDPOINT"):
        Settings.from_env({**BASE, "OUTCOME_TOPIC_ENDPOINT": TOPICS[case]})


@pytest.mark.parametrize(("cloud", "vault", "blob", "topic"), [
    ("AzureCloud", "https://kv-test.vault.azure.net", "https://stacct01.blob.core.windows.net/gateway-leases",
     "https://t.westeurope-1.eventgrid.azure.net/api/events"),
    ("AzureCloud", "https://kv-test.vault.azure.net", "https://stacct01.z17.blob.storage.azure.net/gateway-leases",
     "https://t.westeurope-1.eventgrid.azure.net/api/events"),
    ("AzureUSGovernment", "https://kv-test.vault.usgovcloudapi.net",
     "https://stacct01.blob.core.usgovcloudapi.net/gateway-leases",
     "https://t.usgovvirginia-1.eventgrid.azure.us/api/events"),
    ("AzureChinaCloud", "https://kv-test.vault.azure.cn", "https://stacct01.blob.core.chinacloudapi.cn/gateway-leases",
     "https://t.chinanorth3-1.eventgrid.azure.cn/api/events"),
])
def test_each_clouds_own_endpoints_are_accepted(cloud: str, vault: str, blob: str, topic: str) -> None:
    doc = registry()
    doc["clusters"][0]["server"] = {"AzureCloud": "https://c-1.hcp.westeurope.azmk8s.io",
                                    "AzureUSGovernment": "https://c-1.hcp.usgovvirginia.cx.aks.containerservice.azure.us",
                                    "AzureChinaCloud": "https://c-1.hcp.chinaeast2.cx.prod.service.azk8s.cn"}[cloud]
    s = Settings.from_env({"ROTATION_REGISTRY": json.dumps(doc), "AZURE_CLOUD": cloud, "KEY_VAULT_URL": vault,
                           "LEASE_CONTAINER_URL": blob, "DEADLETTER_BLOB_URL": blob.replace("gateway-leases", "dl"),
                           "OUTCOME_TOPIC_ENDPOINT": topic})
    assert (s.lease_container_url, s.outcome_topic_endpoint) == (blob, topic)


def test_loopback_emulators_only_with_the_switch() -> None:
    doc = registry()
    doc["clusters"][0]["server"] = "https://127.0.0.1:6443"
    local = {"ROTATION_REGISTRY": json.dumps(doc), "KEY_VAULT_URL": "https://127.0.0.1:8443",
             "ROTATION_LOCAL_EMULATORS": "true",
             "LEASE_CONTAINER_URL": "https://127.0.0.1:10000/devstoreaccount1/gateway-leases",
             "OUTCOME_TOPIC_ENDPOINT": "https://127.0.0.1:9444/api/events"}
    assert Settings.from_env(local).lease_container_url == local["LEASE_CONTAINER_URL"]
    with pytest.raises(SettingsError, match="LEASE_CONTAINER_URL"):
        Settings.from_env({**BASE, "LEASE_CONTAINER_URL": local["LEASE_CONTAINER_URL"]})

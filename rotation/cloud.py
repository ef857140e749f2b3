"""The Azure clouds the rotator runs in (`AZURE_CLOUD`): endpoints, token audiences and host names.

Each sovereign cloud has its own Resource Manager endpoint and audience, Key Vault DNS suffix and AKS
API-server domain. Deriving any of them from another setting (e.g. the audience from `ARM_ENDPOINT`)
would hand a token to whatever host that setting names, so they come from this table only; Bicep sets
`AZURE_CLOUD` from `environment().name`, whose names these are.

Sources (checked for this table):
- Resource Manager endpoints and Key Vault DNS suffixes: `msrestazure/azure_cloud.py`
  (Azure/msrestazure-for-python: `AZURE_PUBLIC_CLOUD`, `AZURE_US_GOV_CLOUD`, `AZURE_CHINA_CLOUD`,
  `resource_manager`, `keyvault_dns`); the ARM scope `{resource_manager}/.default` as in Microsoft's
  sovereign-cloud sample (MicrosoftDocs/python-sdk-docs-examples `sovereign_domain/sovereign_cloud.py`).
- Authority hosts: azure-identity `AzureAuthorityHosts` (AZURE_PUBLIC_CLOUD / AZURE_GOVERNMENT /
  AZURE_CHINA).
- Blob endpoints: msrestazure `storage_endpoint` (core.windows.net / core.usgovcloudapi.net /
  core.chinacloudapi.cn); Azure DNS zone endpoints `<account>.z<NN>.blob.storage.azure.net` (Microsoft
  Learn, "Storage account overview", public cloud). Event Grid topics: eventgrid.azure.net /
  eventgrid.azure.us / eventgrid.azure.cn (Microsoft Learn, Event Grid on IoT Edge: outbound endpoints).
- The AKS Entra server application (6dae42f8-4368-4678-94ff-3960e28e3630, rotation/adapters/kubernetes.py
  AKS_SCOPE) is the same in every cloud: Microsoft Learn, "Use kubelogin to authenticate users in AKS"
  ("AKS uses a pair of first-party Microsoft Entra applications. These application IDs are the same in
  all environments"), as does Azure/kubelogin's docs.
- AKS API-server domains: Microsoft's AKS egress rules ("Azure Global / US Government / 21Vianet
  required FQDN": `*.hcp.<location>.azmk8s.io`, `*.hcp.<location>.cx.aks.containerservice.azure.us`,
  `*.hcp.<location>.cx.prod.service.azk8s.cn`) and private clusters (private DNS zone
  `privatelink.<region>.azmk8s.io` or `<subzone>.privatelink.<region>.azmk8s.io`, per cloud suffix).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from rotation.core.hosts import (
    AksServerRule,
    blob_host_pattern,
    eventgrid_host_pattern,
    server_problem,
    vault_host_pattern,
)
from rotation.core.redact import url_shown


class CloudName(StrEnum):
    PUBLIC = "AzureCloud"
    US_GOVERNMENT = "AzureUSGovernment"
    CHINA = "AzureChinaCloud"


@dataclass(frozen=True, slots=True)
class Cloud:
    name: CloudName
    arm_endpoint: str
    arm_audience: str          # the resource of ARM tokens (scope = audience + "/.default")
    key_vault_audience: str
    key_vault_dns_suffix: str  # a vault is https://{name}{suffix}
    aks_dns_suffix: str        # AKS servers: *.hcp.{region}.{suffix} or *.privatelink.{region}.{suffix}
    authority_host: str
    storage_dns_suffix: str = "core.windows.net"     # blob endpoints: https://{account}.blob.{suffix}
    storage_dns_zone_suffix: str | None = None       # Azure DNS zone endpoints: {account}.zNN.blob.{suffix}
    eventgrid_dns_suffix: str = "eventgrid.azure.net"  # topics: https://{topic}.{region}-1.{suffix}

    @property
    def arm_scope(self) -> str:
        return f"{self.arm_audience}/.default"

    def aks_rule(self, allow_loopback: bool) -> AksServerRule:
        return AksServerRule(self.aks_dns_suffix, allow_loopback)

    def vault_problem(self, url: str, allow_loopback: bool) -> str | None:
        """Why `url` is not a Key Vault of this cloud (None when it is)."""
        why = server_problem(url, vault_host_pattern(self.key_vault_dns_suffix), allow_loopback)
        if why == "is not an allowed host":
            return f"is not a Key Vault of {self.name.value} (https://<vault>{self.key_vault_dns_suffix})"
        return why

    def blob_problem(self, url: str, allow_loopback: bool) -> str | None:
        """Why `url` is not a blob endpoint (container or blob) of this cloud (None when it is): it gets
        the app's Storage token."""
        pattern = blob_host_pattern(self.storage_dns_suffix, self.storage_dns_zone_suffix)
        why = server_problem(url, pattern, allow_loopback, allow_path=True)
        if why == "is not an allowed host":
            return f"is not a blob endpoint of {self.name.value} (https://<account>.blob.{self.storage_dns_suffix}/...)"
        return why

    def eventgrid_problem(self, url: str, allow_loopback: bool) -> str | None:
        """Why `url` is not an Event Grid topic endpoint of this cloud (None when it is): it gets the app's
        Event Grid token."""
        why = server_problem(url, eventgrid_host_pattern(self.eventgrid_dns_suffix), allow_loopback, allow_path=True)
        if why == "is not an allowed host":
            return (f"is not an Event Grid topic endpoint of {self.name.value} "
                    f"(https://<topic>.<region>-1.{self.eventgrid_dns_suffix}/api/events)")
        return why


CLOUDS: dict[CloudName, Cloud] = {
    CloudName.PUBLIC: Cloud(CloudName.PUBLIC, "https://management.azure.com", "https://management.azure.com",
                            "https://vault.azure.net", ".vault.azure.net", "azmk8s.io",
                            "login.microsoftonline.com", storage_dns_zone_suffix="storage.azure.net"),
    CloudName.US_GOVERNMENT: Cloud(CloudName.US_GOVERNMENT, "https://management.usgovcloudapi.net",
                                   "https://management.usgovcloudapi.net", "https://vault.usgovcloudapi.net",
                                   ".vault.usgovcloudapi.net", "cx.aks.containerservice.azure.us",
                                   "login.microsoftonline.us", storage_dns_suffix="core.usgovcloudapi.net",
                                   eventgrid_dns_suffix="eventgrid.azure.us"),
    CloudName.CHINA: Cloud(CloudName.CHINA, "https://management.chinacloudapi.cn",
                           "https://management.chinacloudapi.cn", "https://vault.azure.cn", ".vault.azure.cn",
                           "cx.prod.service.azk8s.cn", "login.chinacloudapi.cn",
                           storage_dns_suffix="core.chinacloudapi.cn", eventgrid_dns_suffix="eventgrid.azure.cn"),
}


def cloud_named(text: str | None) -> Cloud:
    """The cloud for an `AZURE_CLOUD` value (empty: the public cloud). ValueError names the choices."""
    if not text:
        return CLOUDS[CloudName.PUBLIC]
    try:
        return CLOUDS[CloudName(text)]
    except ValueError:
        names = ", ".join(c.value for c in CloudName)
        raise ValueError(f"{text[:40]!r} is not one of {names}") from None




@dataclass(frozen=True, slots=True)
class OperatorCloud:
    """What an operator's command (`validate-registry`, `discover`) needs without the app's settings:
    the cloud, whether the local emulators are on, and the ARM endpoint to call."""

    cloud: Cloud
    local_emulators: bool
    arm_endpoint: str
    arm_endpoint_problem: str | None = None  # set when ARM_ENDPOINT may not be used (see operator_cloud)


def operator_cloud(env: Mapping[str, str]) -> OperatorCloud:
    """The same rules as the app's settings: `ARM_ENDPOINT` may only name a loopback emulator with
    `ROTATION_LOCAL_EMULATORS`, so an operator's ARM token never goes to a host that is not the cloud's
    Resource Manager (a command that calls ARM refuses `arm_endpoint_problem`). ValueError: a bad
    `AZURE_CLOUD`."""
    try:
        cloud = cloud_named(env.get("AZURE_CLOUD", "").strip())
    except ValueError as exc:
        raise ValueError(f"AZURE_CLOUD: {exc}") from None
    local = env.get("ROTATION_LOCAL_EMULATORS", "").strip().lower() in {"1", "true", "yes", "on"}
    endpoint = (env.get("ARM_ENDPOINT", "").strip() or cloud.arm_endpoint).rstrip("/")
    problem = None
    if endpoint != cloud.arm_endpoint and (
            not local or server_problem(endpoint, None, allow_loopback=True) is not None):
        problem = (f"ARM_ENDPOINT {url_shown(endpoint)!r} is only an override for a loopback emulator with "
                   "ROTATION_LOCAL_EMULATORS; set AZURE_CLOUD for a sovereign cloud")
    return OperatorCloud(cloud, local, endpoint, problem)

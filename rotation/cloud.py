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
- AKS API-server domains: Microsoft's AKS egress rules ("Azure Global / US Government / 21Vianet
  required FQDN": `*.hcp.<location>.azmk8s.io`, `*.hcp.<location>.cx.aks.containerservice.azure.us`,
  `*.hcp.<location>.cx.prod.service.azk8s.cn`) and private clusters (private DNS zone
  `privatelink.<region>.azmk8s.io` or `<subzone>.privatelink.<region>.azmk8s.io`, per cloud suffix).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rotation.core.hosts import AksServerRule, server_problem, vault_host_pattern


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


CLOUDS: dict[CloudName, Cloud] = {
    CloudName.PUBLIC: Cloud(CloudName.PUBLIC, "https://management.azure.com", "https://management.azure.com",
                            "https://vault.azure.net", ".vault.azure.net", "azmk8s.io",
                            "login.microsoftonline.com"),
    CloudName.US_GOVERNMENT: Cloud(CloudName.US_GOVERNMENT, "https://management.usgovcloudapi.net",
                                   "https://management.usgovcloudapi.net", "https://vault.usgovcloudapi.net",
                                   ".vault.usgovcloudapi.net", "cx.aks.containerservice.azure.us",
                                   "login.microsoftonline.us"),
    CloudName.CHINA: Cloud(CloudName.CHINA, "https://management.chinacloudapi.cn",
                           "https://management.chinacloudapi.cn", "https://vault.azure.cn", ".vault.azure.cn",
                           "cx.prod.service.azk8s.cn", "login.chinacloudapi.cn"),
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



"""Registry names that must not collide, and target formats the rotator can read back.

Key Vault secret names are case-insensitive (Microsoft Learn, "About keys, secrets, and
certificates": "Key Vault names and object names are case-insensitive"), so two clusters whose
`kubeconfigSecret` differ only in case share one secret: storing the second kubeconfig overwrites the
first and both clusters' targets go to one cluster. Cluster names are the registry's keys for targets
and appear in Key Vault-derived names, so they are unique ignoring case too.

A target's `format` must be a form `GatewayToken.parse` reads back: exactly `{token}` (the raw token,
as Microsoft's token-rotation doc stores it under `config.service.auth.key`) or `GatewayKey {token}`
(the portal's deployment YAML, `stringData.value: "GatewayKey <token>"`). Anything around it
(`config.service.auth: GatewayKey {token}`) makes every read of the Secret "no token": each reconcile
rewrote it and restarted the workloads, and the foreign/newer checks never saw the token held.
"""

from __future__ import annotations

import pytest

from rotation.core.discovery import cluster_entry, distinct_contexts
from rotation.core.errors import InvalidInput, RegistryError
from rotation.core.registry import load_registry
from tests.samples import CA_DATA, gateway, registry, target

AKS = "https://east-dns-4f1c2a9b.hcp.westeurope.azmk8s.io:443"


@pytest.mark.parametrize(("first", "second"), [("kubeconfig-prod", "Kubeconfig-Prod"),
                                                ("kubeconfig-prod", "kubeconfig-prod")])
def test_kubeconfig_secrets_are_unique_ignoring_case(first: str, second: str) -> None:
    clusters = [{"name": "prod-a", "auth": "kubeconfig", "kubeconfigSecret": first},
                {"name": "prod-b", "auth": "kubeconfig", "kubeconfigSecret": second}]
    with pytest.raises(RegistryError, match=r"clusters\[1\]\.kubeconfigSecret: .*already the kubeconfig secret of "
                                            r"cluster prod-a"):
        load_registry(registry(gateway("gw-1", target("prod-a", "s")), clusters=clusters))


def test_cluster_names_are_unique_ignoring_case() -> None:
    clusters = [{"name": "Prod", "auth": "aks", "server": AKS, "caData": CA_DATA},
                {"name": "prod", "auth": "kubeconfig", "kubeconfigSecret": "kubeconfig-prod"}]
    with pytest.raises(RegistryError, match=r"clusters\[1\]\.name: duplicate cluster name 'prod' \(ignoring case: 'Prod'\)"):
        load_registry(registry(gateway("gw-1", target("prod", "s")), clusters=clusters))


@pytest.mark.parametrize("fmt", ["{token}", "GatewayKey {token}"])
def test_the_two_canonical_formats_load(fmt: str) -> None:
    reg = load_registry(registry(gateway("gw-1", target("east", "s", format=fmt))))
    assert reg.gateways[0].targets[0].format == fmt


@pytest.mark.parametrize("fmt", ["config.service.auth: GatewayKey {token}", "GatewayKey  {token}",
                                 "gatewaykey {token}", "{token}\n", "Bearer {token}", "{token};"])
def test_a_format_the_token_cannot_be_read_back_from_is_refused(fmt: str) -> None:
    with pytest.raises(RegistryError, match=r"gateways\[0\]\.targets\[0\]\.format: .* must be exactly "
                                            r"'\{token\}' or 'GatewayKey \{token\}'"):
        load_registry(registry(gateway("gw-1", target("east", "s", format=fmt))))


@pytest.mark.parametrize(("a", "b"), [("aks_prod", "aks-prod"), ("Prod", "prod"), ("a.b", "a-b")])
def test_discover_names_distinct_contexts_distinct_secrets(a: str, b: str) -> None:
    first = cluster_entry(a, server=None, ca_data=None, aks=False)["kubeconfigSecret"]
    second = cluster_entry(b, server=None, ca_data=None, aks=False)["kubeconfigSecret"]
    assert first.lower() != second.lower()
    assert first == cluster_entry(a, server=None, ca_data=None, aks=False)["kubeconfigSecret"]  # stable


def test_discover_keeps_the_plain_name_of_a_vault_safe_context() -> None:
    assert cluster_entry("west-1", server=None, ca_data=None, aks=False)["kubeconfigSecret"] == "kubeconfig-west-1"


def test_discover_refuses_contexts_that_differ_only_in_case() -> None:
    with pytest.raises(InvalidInput, match=r"contexts 'Prod' and 'prod' differ only in case"):
        distinct_contexts(["Prod", "west", "prod"])
    distinct_contexts(["aks_prod", "aks-prod"])  # distinct names, distinct secrets

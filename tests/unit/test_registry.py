from __future__ import annotations

import json
from typing import Any

import pytest

from rotation.core.errors import RegistryError
from rotation.core.model import AksAuth, KeyType, KubeconfigAuth, Workload, WorkloadKind
from rotation.core.registry import default_secret_name, load_registry
from tests.samples import gateway, gateway_id, reference_registry, registry, target


def test_loads_the_reference_registry_with_defaults() -> None:
    reg = load_registry(json.dumps(reference_registry()))
    assert set(reg.clusters) == {"aks-weu-1", "onprem-1"}
    assert isinstance(reg.clusters["aks-weu-1"].auth, AksAuth)
    assert reg.clusters["onprem-1"].auth == KubeconfigAuth("kubeconfig-onprem-1")
    (gw,) = reg.gateways
    assert gw.key_vault_secret == "apim-contoso-apim-onprem-gw-token"
    assert gw.key_type is None
    first, second = gw.targets
    assert first.key == "config.service.auth.key" and first.format == "GatewayKey {token}"
    assert second.key == "value" and second.format == "GatewayKey {token}"
    assert second.restart == (Workload(WorkloadKind.DEPLOYMENT, "onprem-gw"),
                              Workload(WorkloadKind.STATEFULSET, "onprem-gw-backup"))
    assert reg.find("CONTOSO-APIM", "onprem-gw") is gw
    assert reg.find("contoso-apim", "nope") is None


def test_explicit_fields() -> None:
    reg = load_registry(registry(gateway("gw-1", target("west", "s", key="k", format="{token}"),
                                         keyVaultSecret="my-secret", keyType="secondary")))
    (gw,) = reg.gateways
    assert gw.key_vault_secret == "my-secret" and gw.key_type is KeyType.SECONDARY
    assert gw.targets[0].format == "{token}"


def test_default_secret_name_is_vault_safe() -> None:
    reg = load_registry(registry(gateway("gw_One", target("east", "tok"))))
    assert reg.gateways[0].key_vault_secret == "apim-contoso-apim-gw-one-token"
    assert default_secret_name(reg.gateways[0].ref) == "apim-contoso-apim-gw-one-token"


def _mutate(path: str, value: Any) -> dict[str, Any]:
    doc = registry(gateway("gw-1", target("east", "tok", restart=["deployment/gw"])))
    node: Any = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("clusters", {}, r"^registry: clusters: expected a list"),
        ("clusters.0.name", "bad name!", r"clusters\[0\]\.name: 'bad name!' is not a valid cluster name"),
        ("clusters.0.auth", "token", r"clusters\[0\]\.auth: 'token' must be 'aks' or 'kubeconfig'"),
        ("clusters.0.server", "http://east", r"clusters\[0\]\.server: 'http://east' must be an https:// URL"),
        ("clusters.0.caData", "%%%", r"clusters\[0\]\.caData: is not base64"),
        ("clusters.0.caData", "aGVsbG8=", r"clusters\[0\]\.caData: does not decode to a PEM certificate"),
        ("clusters.0.server", _DELETE, r"clusters\[0\]\.server: is required"),
        ("clusters.0.kubeconfigSecret", "x", r"clusters\[0\]\.kubeconfigSecret: only allowed with auth 'kubeconfig'"),
        ("clusters.1.kubeconfigSecret", "has_underscore",
         r"clusters\[1\]\.kubeconfigSecret: 'has_underscore' is not a valid Key Vault secret name"),
        ("clusters.1.name", "east", r"clusters\[1\]\.name: duplicate cluster name 'east'"),
        ("clusters.0.extra", 1, r"clusters\[0\]: unknown field 'extra'"),
        ("gateways.0.id", "onprem-gw", r"gateways\[0\]\.id: gateway id must look like"),
        ("gateways.0.id", gateway_id(".."), r"gateways\[0\]\.id: invalid gateway name '\.\.'"),
        ("gateways.0.keyType", "tertiary", r"gateways\[0\]\.keyType: 'tertiary' must be 'primary' or 'secondary'"),
        ("gateways.0.keyVaultSecret", "a/b", r"gateways\[0\]\.keyVaultSecret: 'a/b' is not a valid Key Vault"),
        ("gateways.0.targets", [], r"gateways\[0\]\.targets: needs at least one target"),
        ("gateways.0.resart", [], r"gateways\[0\]: unknown field 'resart'"),
        ("gateways.0.targets.0.cluster", "north", r"targets\[0\]\.cluster: unknown cluster 'north' \(known: east, west\)"),
        ("gateways.0.targets.0.namespace", "Prod_NS", r"targets\[0\]\.namespace: 'Prod_NS' is not a valid Kubernetes namespace"),
        ("gateways.0.targets.0.namespace", "../x", r"targets\[0\]\.namespace: '\.\./x' is not a valid Kubernetes namespace"),
        ("gateways.0.targets.0.secret", "a/b", r"targets\[0\]\.secret: 'a/b' is not a valid Kubernetes Secret name"),
        ("gateways.0.targets.0.secret", _DELETE, r"targets\[0\]\.secret: is required"),
        ("gateways.0.targets.0.key", "a/b", r"targets\[0\]\.key: 'a/b' is not a valid Secret key"),
        ("gateways.0.targets.0.format", "GatewayKey", r"targets\[0\]\.format: 'GatewayKey' must contain \{token\} exactly once"),
        ("gateways.0.targets.0.format", "{token}{token}", r"must contain \{token\} exactly once"),
        ("gateways.0.targets.0.restart", "deployment/gw", r"targets\[0\]\.restart: expected a list"),
        ("gateways.0.targets.0.restart.0", "pod/gw", r"restart\[0\]: 'pod/gw' must be KIND/NAME with KIND one of"),
        ("gateways.0.targets.0.restart.0", "deployment/../x", r"restart\[0\]: '\.\./x' is not a valid Kubernetes object name"),
        ("gateways.0.targets.0.restart", ["deployment/a", "deployment/a"], r"restart: lists a workload twice"),
        ("gateways.0.targets.0.namespace", 7, r"namespace: expected a non-empty string, got 7"),
        ("gateways", None, r"^registry: gateways: expected a list, got null"),
    ],
)
def test_every_error_names_path_and_value(path: str, value: Any, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        load_registry(_mutate(path, value))


def test_duplicate_gateway_and_secret_and_target() -> None:
    with pytest.raises(RegistryError, match=r"gateways\[1\]\.id: gateway contoso-apim/gw-1 is registered twice"):
        load_registry(registry(gateway("gw-1"), gateway("gw-1")))
    with pytest.raises(RegistryError, match=r"gateways\[1\]: Key Vault secret 'same' is already used by"):
        load_registry(registry(gateway("gw-1", keyVaultSecret="same"), gateway("gw-2", keyVaultSecret="same")))
    with pytest.raises(RegistryError, match=r"targets\[1\]: duplicates another target"):
        load_registry(registry(gateway("gw-1", target("east", "s"), target("east", "s"))))


@pytest.mark.parametrize("text", ["", "{", "[]", "null", '{"clusters": [], "gateways": [], "x": 1}'])
def test_document_level_errors(text: str) -> None:
    with pytest.raises(RegistryError, match=r"^registry: "):
        load_registry(text)


def test_hostile_values_are_truncated_in_messages() -> None:
    with pytest.raises(RegistryError) as err:
        load_registry(_mutate("gateways.0.targets.0.namespace", "x" * 10_000))
    assert len(str(err.value)) < 300


GOOD_AKS = "https://east-dns-4f1c2a9b.hcp.westeurope.azmk8s.io:443"


@pytest.mark.parametrize("server", [
    GOOD_AKS,
    "https://east-dns-4f1c2a9b.hcp.westeurope.azmk8s.io",
    "https://east-dns-4f1c2a9b.hcp.westeurope.azmk8s.io/",
    "https://east-dns-4f1c2a9b.portal.hcp.westeurope.azmk8s.io",
    "https://east-dns-4f1c2a9b.privatelink.westeurope.azmk8s.io:443",      # private cluster
    "https://east-dns-4f1c2a9b.0a1b2c3d.privatelink.westeurope.azmk8s.io",  # private, custom subzone
])
def test_aks_servers_of_the_public_cloud_are_accepted(server: str) -> None:
    reg = load_registry(_mutate("clusters.0.server", server))
    assert reg.clusters["east"].auth == AksAuth(server=server, ca_data=reg.clusters["east"].auth.ca_data)  # type: ignore[union-attr]


@pytest.mark.parametrize(("server", "why"), [
    ("https://kubernetes.example.com", "is not an AKS API server of this cloud"),
    ("https://evil.example/x.hcp.westeurope.azmk8s.io", "must not have a path"),
    ("https://east.hcp.westeurope.azmk8s.io.evil.com", "is not an AKS API server"),   # suffix confusion
    ("https://east.hcp.westeurope.azmk8s.io.", "must not end with a dot"),
    ("https://EAST.hcp.westeurope.azmk8s.io", "must be lowercase"),
    ("https://east.HCP.westeurope.azmk8s.io", "must be lowercase"),
    ("https://east.hcp.westeurope.azmk8s.io@evil.com", "user information"),
    ("https://evil.com@east.hcp.westeurope.azmk8s.io", "user information"),
    ("https://east.hcp.westeurope.azmk8s.io:8443", "must use port 443"),
    ("https://east.hcp.westeurope.azmk8s.io:443:80", "is not a valid URL"),
    ("https://east.hcp.westeurope.azmk8s.io:0x1bb", "is not a valid URL"),
    ("https://east.hcp.westeurope.azmk8s.io?x=1", "query or fragment"),
    ("https://east.hcp.westeurope.azmk8s.io#x", "query or fragment"),
    ("https://20.50.1.2", "not an IP address"),
    ("https://[2001:db8::1]", "not an IP address"),
    ("https://127.0.0.1:6443", "not an IP address"),        # loopback only with the local emulators
    ("https://localhost:6443", "must use port 443"),
    ("https://localhost", "is not an AKS API server"),
    ("https://hcp.westeurope.azmk8s.io", "is not an AKS API server"),           # no cluster label
    ("https://azmk8s.io", "is not an AKS API server"),
    ("https://east.westeurope.azmk8s.io", "is not an AKS API server"),           # neither hcp nor privatelink
    ("https://east.hcp.westeurope.cx.prod.service.azk8s.cn", "is not an AKS API server"),  # another cloud
    ("https://east.hcp.west_europe.azmk8s.io", "is not an AKS API server"),
    ("https://east.hcp.westeurope.azmk8s.io\\@evil.com", "user information"),
    ("https://east\u3002hcp.westeurope.azmk8s.io", "is not an AKS API server"),  # ideographic full stop
    ("http://east.hcp.westeurope.azmk8s.io", "must be an https:// URL"),
])
def test_aks_servers_elsewhere_are_refused(server: str, why: str) -> None:
    """The app's Entra token for AKS goes to `server`: anything but an AKS API server host name of the
    configured cloud (Microsoft's AKS egress rules: *.hcp.<location>.azmk8s.io; private clusters:
    privatelink.<region>.azmk8s.io zones) is refused when the registry loads, naming the field."""
    with pytest.raises(RegistryError, match=r"clusters\[0\]\.server: .*" + why):
        load_registry(_mutate("clusters.0.server", server))


def test_loopback_aks_servers_only_with_the_emulator_rule() -> None:
    from rotation.core.hosts import AksServerRule

    for server in ("https://127.0.0.1:6443", "https://localhost:6443", "https://[::1]:6443"):
        reg = load_registry(_mutate("clusters.0.server", server), aks_servers=AksServerRule(allow_loopback=True))
        assert reg.clusters["east"].auth.server == server  # type: ignore[union-attr]
        with pytest.raises(RegistryError):
            load_registry(_mutate("clusters.0.server", server))
    with pytest.raises(RegistryError, match="not an IP address"):  # loopback, not any IP
        load_registry(_mutate("clusters.0.server", "https://10.0.0.1:6443"),
                      aks_servers=AksServerRule(allow_loopback=True))


def test_validate_registry_checks_aks_servers_against_the_configured_cloud(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from rotation.cli import main

    path = tmp_path / "registry.json"
    path.write_text(json.dumps(_mutate("clusters.0.server",
                                       "https://c-1a2b.hcp.usgovvirginia.cx.aks.containerservice.azure.us")))
    monkeypatch.delenv("AZURE_CLOUD", raising=False)
    monkeypatch.delenv("ROTATION_LOCAL_EMULATORS", raising=False)
    assert main(["validate-registry", str(path)], io.StringIO()) == 2
    assert "is not an AKS API server of this cloud" in capsys.readouterr().err
    monkeypatch.setenv("AZURE_CLOUD", "AzureUSGovernment")
    out = io.StringIO()
    assert main(["validate-registry", str(path)], out) == 0 and "valid (2 clusters" in out.getvalue()

"""Where a credential may go, and what a kubeconfig's YAML may hide: the forms an attacker would try.

AKS API-server hosts (rotation/core/hosts.py, checked when the registry loads): Microsoft Learn,
"Control egress traffic for cluster nodes in AKS" (required FQDN `*.hcp.<location>.azmk8s.io`, US Gov
`*.hcp.<location>.cx.aks.containerservice.azure.us`, 21Vianet `*.hcp.<location>.cx.prod.service.azk8s.cn`)
and "Create a private AKS cluster" (private DNS zone `privatelink.<region>.azmk8s.io` or
`<subzone>.privatelink.<region>.azmk8s.io`). Anything a URL parser and the HTTP client could read
differently is refused: Python's `urlsplit` silently drops tab/CR/LF (bpo-43882, WHATWG URL spec) while
urllib3, which the Kubernetes client uses, refuses them in a host.

Kubeconfig YAML (rotation/adapters/kubeconfig.py): PyYAML's `safe_load` keeps the LAST of duplicate
keys and expands `<<` merge keys and aliases; kubectl (sigs.k8s.io/yaml, strict) refuses duplicates.
A document is accepted only when every reader would see the same thing.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
import yaml

from rotation.adapters.kubeconfig import parse_kubeconfig
from rotation.cloud import CLOUDS, CloudName
from rotation.core.errors import PermanentError, RegistryError
from rotation.core.hosts import AksServerRule
from rotation.core.registry import load_registry

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
GATEWAY = ("/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/rg/providers/"
           "Microsoft.ApiManagement/service/apim-x/gateways/gw-1")


def _registry(server: str) -> str:
    return json.dumps({"clusters": [{"name": "east", "auth": "aks", "server": server, "caData": CA}],
                       "gateways": [{"id": GATEWAY, "targets": [{"cluster": "east", "namespace": "apim",
                                                                 "secret": "gw-1-token"}]}]})


ACCEPTED = [
    (CloudName.PUBLIC, "https://aks-x-1a2b3c.hcp.eastus.azmk8s.io"),
    (CloudName.PUBLIC, "https://aks-x-1a2b3c.hcp.eastus.azmk8s.io:443/"),
    (CloudName.PUBLIC, "https://aks-x-1a2b3c.portal.hcp.eastus.azmk8s.io"),
    (CloudName.PUBLIC, "https://aks-x-1a2b3c.privatelink.eastus.azmk8s.io"),
    (CloudName.PUBLIC, "https://aks-x-1a2b3c.sub1.privatelink.eastus.azmk8s.io"),
    (CloudName.US_GOVERNMENT, "https://aks-x.hcp.usgovvirginia.cx.aks.containerservice.azure.us"),
    (CloudName.US_GOVERNMENT, "https://aks-x.privatelink.usgovvirginia.cx.aks.containerservice.azure.us"),
    (CloudName.CHINA, "https://aks-x.hcp.chinaeast2.cx.prod.service.azk8s.cn"),
]


@pytest.mark.parametrize(("cloud", "server"), ACCEPTED)
def test_aks_host_forms_of_each_cloud_are_accepted(cloud: CloudName, server: str) -> None:
    registry = load_registry(_registry(server), aks_servers=CLOUDS[cloud].aks_rule(allow_loopback=False))
    assert registry.clusters["east"].auth.server == server  # type: ignore[union-attr]


REFUSED = {
    "tab inside the host": "https://evil.example\t.hcp.eastus.azmk8s.io",
    "trailing tab": "https://aks-x.hcp.eastus.azmk8s.io\t",
    "trailing newline": "https://aks-x.hcp.eastus.azmk8s.io\n",
    "CRLF": "https://aks-x.hcp.eastus.azmk8s.io\r\n",
    "space in the host": "https://evil.example .hcp.eastus.azmk8s.io",
    "no-break space": "https://aks-x.hcp.eastus.azmk8s.io\u00a0",
    "zero-width space": "https://aks-x\u200b.hcp.eastus.azmk8s.io",
    "IDN (unicode) label": "https://аks-x.hcp.eastus.azmk8s.io",
    "percent-encoded dot": "https://evil.example%2ehcp.eastus.azmk8s.io",
    "backslash": "https://evil.example\\.hcp.eastus.azmk8s.io",
    "userinfo": "https://aks-x.hcp.eastus.azmk8s.io@evil.example",
    "backslash userinfo": "https://aks-x.hcp.eastus.azmk8s.io\\@evil.example",
    "fragment": "https://evil.example#.hcp.eastus.azmk8s.io",
    "query": "https://evil.example?.hcp.eastus.azmk8s.io",
    "trailing dot": "https://aks-x.hcp.eastus.azmk8s.io.",
    "mixed case": "https://AKS-x.hcp.eastus.azmk8s.io",
    "other port": "https://aks-x.hcp.eastus.azmk8s.io:8443",
    "path": "https://aks-x.hcp.eastus.azmk8s.io/api",
    "IP literal": "https://20.1.2.3",
    "suffix as a label": "https://aks-x.hcp.eastus.azmk8s.io.evil.example",
    "another cloud's suffix": "https://aks-x.hcp.chinaeast2.cx.prod.service.azk8s.cn",
    "http": "http://aks-x.hcp.eastus.azmk8s.io",
    "no name label": "https://hcp.eastus.azmk8s.io",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hostile_aks_server_forms_are_refused_at_load(name: str) -> None:
    with pytest.raises(RegistryError, match=r"clusters\[0\]\.server: "):
        load_registry(_registry(REFUSED[name]), aks_servers=AksServerRule())


# --- kubeconfig YAML --------------------------------------------------------------------------------

GOOD = """\
apiVersion: v1
kind: Config
clusters:
- name: onprem
  cluster:
    server: https://10.1.2.3:6443
users:
- name: rotator
  user:
    token: kc-token-5f1e9a77d2c04b6e
contexts:
- name: onprem
  context: {cluster: onprem, user: rotator}
current-context: onprem
"""


def _parse(text: str) -> object:
    return parse_kubeconfig(text, cluster="west", secret="kubeconfig-west")


def test_the_plain_document_is_accepted() -> None:
    assert _parse(GOOD).server == "https://10.1.2.3:6443"  # type: ignore[attr-defined]


DUPLICATES = {
    "server": GOOD.replace("    server: https://10.1.2.3:6443\n",
                           "    server: https://10.1.2.3:6443\n    server: https://10.9.9.9:6443\n"),
    "token": GOOD.replace("    token: kc-token-5f1e9a77d2c04b6e\n",
                          "    token: kc-token-5f1e9a77d2c04b6e\n    token: other-token-0000000000\n"),
    "user (hides an exec block)": GOOD.replace(
        "  user:\n    token: kc-token-5f1e9a77d2c04b6e\n",
        "  user:\n    exec: {command: /bin/sh, apiVersion: v1}\n  user:\n    token: kc-token-5f1e9a77d2c04b6e\n"),
    "current-context": GOOD + "current-context: other\n",
}


@pytest.mark.parametrize("name", sorted(DUPLICATES))
def test_duplicate_keys_are_refused(name: str) -> None:
    """PyYAML keeps the last value, kubectl refuses the document: a reviewer and the rotator would not
    see the same kubeconfig."""
    assert yaml.safe_load(DUPLICATES[name]) is not None  # PyYAML itself accepts it
    with pytest.raises(PermanentError, match="duplicate key"):
        _parse(DUPLICATES[name])


def test_merge_keys_are_validated_after_expansion() -> None:
    """`<<: *anchor` copies another node's keys in: the merged mapping is what is checked (a cluster's
    `server` merged into the user is refused there), so a merge cannot smuggle a field past the check."""
    text = GOOD.replace("  cluster:\n    server:", "  cluster: &c\n    server:").replace(
        "  user:\n    token:", "  user:\n    <<: *c\n    token:")
    with pytest.raises(PermanentError, match=r"users\[0\]\.user\.server is not allowed"):
        _parse(text)


def test_alias_expansion_is_bounded() -> None:
    """A billion-laughs document under the size limit: PyYAML shares aliased nodes (no copy), and the
    validator refuses it without walking the expansion."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    text = "\n".join(lines) + "\n" + GOOD.replace("  context: {cluster: onprem, user: rotator}",
                                                  "  context: {cluster: *a9, user: rotator}")
    started = time.monotonic()
    with pytest.raises(PermanentError):
        _parse(text)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("tagged", ["!!python/object/apply:os.system ['id']", "!!binary aHR0cHM6Ly9ldmls",
                                    "!!set {a, b}", "2001-01-01", "443", "true", "null", "[https://x]"])
def test_non_string_server_values_are_refused(tagged: str) -> None:
    with pytest.raises(PermanentError, match=r"not valid YAML|server must be a non-empty string"):
        _parse(GOOD.replace("server: https://10.1.2.3:6443", f"server: {tagged}"))


# --- registry JSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["server", "auth", "cluster"])
def test_registry_duplicate_keys_are_refused(field: str) -> None:
    """Python's json keeps the last of duplicate names (RFC 8259 §4: names SHOULD be unique, behaviour
    otherwise unpredictable): a reviewer reading the first `server` and the app using the last must not
    disagree about where the AKS token goes."""
    text = _registry("https://aks-x.hcp.eastus.azmk8s.io")
    doubled = {"server": ('"server": ', '"server": "https://aks-y.hcp.eastus.azmk8s.io", "server": '),
               "auth": ('"auth": ', '"auth": "kubeconfig", "auth": '),
               "cluster": ('"cluster": ', '"cluster": "west", "cluster": ')}[field]
    assert doubled[0] in text
    with pytest.raises(RegistryError, match=f"duplicate field '{field}'"):
        load_registry(text.replace(doubled[0], doubled[1], 1), aks_servers=AksServerRule())


# --- every field the Kubernetes client acts on is validated or refused ------------------------------

# Keys the client reads only inside blocks that are refused as a whole (`auth-provider` config, `exec`
# output / ExecCredential status) or that are the document's own structure.
_INSIDE_REFUSED_OR_STRUCTURE = {
    "access-token", "client-id", "client-secret", "cmd-args", "cmd-path", "config", "expiry", "expiry-key",
    "id-token", "idp-certificate-authority", "idp-certificate-authority-data", "idp-issuer-url",
    "refresh-token", "scopes", "token-key", "expirationTimestamp", "clientCertificateData", "clientKeyData",
    "credential", "name", "cluster", "user", "context", "clusters", "users", "contexts", "current-context",
    "BearerToken",     # the client Configuration's api_key slot, not a kubeconfig field
    "tokenFile-data",  # FileOrData(user, 'tokenFile', 'token'): its data key is `token`, not `tokenFile-data`
}


def test_every_field_the_kubernetes_loader_acts_on_is_validated_or_refused() -> None:
    """kubernetes/config/kube_config.py (the installed client: `_load_authentication`, `_load_user_token`,
    `_load_user_pass_token`, `_load_cluster_info`, `FileOrData`) reads these keys; each must be one the
    validator checks or refuses, so a client upgrade that starts acting on a new field fails here."""
    import inspect
    import re

    from kubernetes.config import kube_config

    from rotation.adapters import kubeconfig

    source = inspect.getsource(kube_config)
    read = set(re.findall(r"\[['\"]([a-zA-Z][a-zA-Z-]*)['\"]\]", source))
    read |= set(re.findall(r"['\"]([a-zA-Z][a-zA-Z-]*)['\"] in ", source))
    read |= set(re.findall(r"safe_get\(['\"]([a-zA-Z][a-zA-Z-]*)['\"]\)", source))
    # FileOrData(obj, 'file-key') also reads 'file-key-data'
    for key in re.findall(r"FileOrData\(\s*self\._(?:user|cluster), ['\"]([a-zA-Z-]+)['\"]", source):
        read |= {key, f"{key}-data"}
    validated = {"server", "certificate-authority-data", "token", "client-certificate-data", "client-key-data",
                 "namespace"}
    unaccounted = read - validated - set(kubeconfig._REFUSED) - _INSIDE_REFUSED_OR_STRUCTURE
    assert {"exec", "auth-provider", "tokenFile", "proxy-url", "insecure-skip-tls-verify"} <= read  # parsed it
    assert unaccounted == set()

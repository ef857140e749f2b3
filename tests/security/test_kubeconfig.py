"""Kubeconfigs from Key Vault: only the safe shape is accepted (rotation/adapters/kubeconfig.py).

Each hostile shape is refused at load with an error naming the cluster, the secret and the field, and
never a value. The end-to-end tests run the real adapter (`KubernetesClusters`) on kubeconfigs whose
exec plugin / auth-provider would create a marker file and whose file paths name a FIFO: the marker
never appears and nobody ever opened the FIFO, i.e. no process ran and no file was read. The Kubernetes
client's own loader honours all of these fields (kubernetes/config/kube_config.py: `ExecProvider`,
`_load_auth_provider_token`, `tokenFile`, `FileOrData` for the certificate paths,
`insecure-skip-tls-verify`, `proxy-url`), which is why it is no longer used.
"""

from __future__ import annotations

import base64
import copy
import errno
import os
import ssl
import stat
from pathlib import Path
from typing import Any
from urllib.request import getproxies

import pytest
import yaml

from rotation.adapters.kubeconfig import SafeKubeconfig, parse_kubeconfig, validate_kubeconfig
from rotation.adapters.kubernetes import KubernetesClusters
from rotation.core.errors import PermanentError, UpstreamError
from rotation.core.model import Cluster, KubeconfigAuth

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n"
SECRET_TOKEN = "kc-token-5f1e9a77d2c04b6e"  # must never appear in an error


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def good(**user: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "onprem", "cluster": {"server": "https://10.1.2.3:6443",
                                                        "certificate-authority-data": b64(CA_PEM)}}],
            "users": [{"name": "rotator", "user": user or {"token": SECRET_TOKEN}}],
            "contexts": [{"name": "onprem", "context": {"cluster": "onprem", "user": "rotator",
                                                        "namespace": "apim"}}],
            "current-context": "onprem"}


def load(doc: Any) -> SafeKubeconfig:
    return validate_kubeconfig(doc, cluster="west", secret="kubeconfig-west")


def test_token_and_client_certificate_shapes_are_accepted() -> None:
    safe = load(good())
    assert (safe.server, safe.ca_pem, safe.token, safe.namespace) == ("https://10.1.2.3:6443", CA_PEM,
                                                                      SECRET_TOKEN, "apim")
    assert SECRET_TOKEN not in repr(safe)
    cert = load(good(**{"client-certificate-data": b64(CA_PEM), "client-key-data": b64(KEY_PEM)}))
    assert (cert.token, cert.client_cert_pem, cert.client_key_pem) == (None, CA_PEM, KEY_PEM)
    minimal = good()
    del minimal["preferences"], minimal["current-context"], minimal["clusters"][0]["cluster"][
        "certificate-authority-data"]
    assert load(minimal).ca_pem is None  # the system trust store verifies the server then
    assert parse_kubeconfig(yaml.safe_dump(good()), cluster="west", secret="kubeconfig-west").token == SECRET_TOKEN


def mutate(path: str, value: Any) -> dict[str, Any]:
    doc = good()
    node: Any = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    node[parts[-1]] = value
    return doc


HOSTILE = [
    ("users.0.user.exec", {"apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh",
                           "args": ["-c", "touch /tmp/pwned"]}, r"users\[0\]\.user\.exec is refused: runs a program"),
    ("users.0.user.auth-provider", {"name": "gcp", "config": {"cmd-path": "/bin/sh", "cmd-args": "-c id"}},
     r"users\[0\]\.user\.auth-provider is refused: runs a program"),
    ("users.0.user.tokenFile", "/home/site/wwwroot/secret", r"users\[0\]\.user\.tokenFile is refused: reads a file"),
    ("users.0.user.client-certificate", "/etc/ssl/private/x.crt", r"client-certificate is refused: reads a file"),
    ("users.0.user.client-key", "/etc/ssl/private/x.key", r"client-key is refused: reads a file"),
    ("clusters.0.cluster.certificate-authority", "/etc/ca.pem", r"certificate-authority is refused: reads a file"),
    ("clusters.0.cluster.insecure-skip-tls-verify", True, r"insecure-skip-tls-verify is refused: disables TLS"),
    ("clusters.0.cluster.proxy-url", "http://proxy.evil:3128", r"proxy-url is refused: sends the credential"),
    ("clusters.0.cluster.tls-server-name", "other.example", r"tls-server-name is refused"),
    ("clusters.0.cluster.extensions", [], r"clusters\[0\]\.cluster\.extensions is refused"),
    ("clusters.0.cluster.disable-compression", True, r"disable-compression is not allowed"),
    ("users.0.user.username", "admin", r"username is refused: basic authentication"),
    ("users.0.user.password", "hunter2", r"password is refused: basic authentication"),
    ("users.0.user.as", "system:admin", r"users\[0\]\.user\.as is refused: impersonation"),
    ("users.0.user.as-groups", ["system:masters"], r"as-groups is refused: impersonation"),
    ("users.0.user.client-certificate-data", b64(CA_PEM), r"a token or a client certificate, not both"),
    ("users.0.user.token", "two words", r"token must not contain whitespace"),
    ("users.0.user.token", 42, r"token must be a non-empty string"),
    ("users.0.user", {}, r"needs a token or client-certificate-data"),
    ("users.0.user", {"client-certificate-data": b64(CA_PEM)}, r"needs both client-certificate-data"),
    ("users.0.user", {"client-certificate-data": b64(CA_PEM), "client-key-data": b64(CA_PEM)},
     r"client-key-data does not decode to a PEM private key"),
    ("users.0.user.extra", 1, r"users\[0\]\.user\.extra is not allowed"),
    ("clusters.0.cluster.server", "http://10.1.2.3:6443", r"server must be an https:// URL"),
    ("clusters.0.cluster.server", "https://user:pw@10.1.2.3", r"server must not contain user information"),
    ("clusters.0.cluster.server", "https://10.1.2.3:99999", r"server is not a valid URL"),
    ("clusters.0.cluster.server", "https://10.1.2.3/?x=1", r"server must not have a query"),
    ("clusters.0.cluster.server", "https://10.1.2.3/\nHost: evil", r"server must not contain whitespace"),
    ("clusters.0.cluster.certificate-authority-data", "%%%", r"certificate-authority-data is not base64"),
    ("clusters.0.cluster.certificate-authority-data", b64("hello"), r"does not decode to a PEM certificate"),
    ("clusters", [], r"clusters must list exactly one entry"),
    ("users", [good()["users"][0]] * 2, r"users must list exactly one entry"),
    ("contexts", "onprem", r"contexts must list exactly one entry"),
    ("contexts.0.context.cluster", "elsewhere", r"context\.cluster must name the kubeconfig's cluster"),
    ("contexts.0.context.user", "admin", r"context\.user must name the kubeconfig's user"),
    ("contexts.0.context.extensions", [], r"contexts\[0\]\.context\.extensions is refused"),
    ("current-context", "other", r"current-context must name the kubeconfig's context"),
    ("preferences", {"colors": True}, r"preferences must be empty"),
    ("apiVersion", "v2", r"apiVersion must be v1"),
    ("kind", "Secret", r"kind must be Config"),
    ("extensions", [], r"extensions is refused"),
]


@pytest.mark.parametrize(("path", "value", "message"), HOSTILE, ids=[f"{p}={str(v)[:20]}" for p, v, _ in HOSTILE])
def test_hostile_shapes_are_refused_naming_cluster_and_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(PermanentError, match=r"^cluster west: kubeconfig secret 'kubeconfig-west': " + "(.*)"
                       + message) as caught:
        load(mutate(path, value))
    text = str(caught.value)
    assert SECRET_TOKEN not in text and "touch" not in text and "hunter2" not in text and "evil" not in text


@pytest.mark.parametrize("text", ["", "[]", "just text", "{", "a: [" * 5000, "x" * (65 * 1024),
                                  "a: &a [*a]"])
def test_non_kubeconfig_text_is_refused(text: str) -> None:
    with pytest.raises(PermanentError, match=r"^cluster west: kubeconfig secret 'kubeconfig-west'[: ]"):
        parse_kubeconfig(text, cluster="west", secret="kubeconfig-west")


def _fifo(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    os.mkfifo(path)
    return path


def _nobody_opened(fifo: Path) -> bool:
    """Opening a FIFO write-only without blocking fails with ENXIO when no reader has it open: had
    anything tried to read the path, it would still be blocked in open() and this would succeed."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        return exc.errno == errno.ENXIO
    os.close(fd)
    return False


def test_no_process_runs_and_no_file_is_read(tmp_path: Path) -> None:
    """Through the real adapter: exec and auth-provider commands that would create a marker, and path
    fields naming FIFOs. Every one is refused before the Kubernetes client sees the document."""
    marker = tmp_path / "marker"
    script = tmp_path / "plugin.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\necho '{{\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"x\"}}}}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    fifos = {name: _fifo(tmp_path, name) for name in ("token", "crt", "key", "ca")}
    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(script),
                          "interactiveMode": "Never"}}
    shapes = {
        "exec": mutate("users.0.user", exec_user),
        "auth-provider": mutate("users.0.user", {"auth-provider": {"name": "gcp", "config": {
            "cmd-path": str(script), "cmd-args": "", "token-key": "{.status.token}"}}}),
        "tokenFile": mutate("users.0.user", {"tokenFile": str(fifos["token"])}),
        "client-certificate": mutate("users.0.user", {"client-certificate": str(fifos["crt"]),
                                                      "client-key": str(fifos["key"])}),
        "certificate-authority": mutate("clusters.0.cluster", {"server": "https://127.0.0.1:9",
                                                               "certificate-authority": str(fifos["ca"])}),
    }
    read: list[str] = []

    def read_kubeconfig(name: str) -> str:
        read.append(name)
        return yaml.safe_dump(shapes[name.removeprefix("kc-")])

    clusters = KubernetesClusters(None, read_kubeconfig)
    try:
        for field in shapes:
            with pytest.raises(PermanentError, match=f"cluster c-{field}: kubeconfig secret 'kc-{field}': .*"
                               f"{field} is refused"):
                # The kubeconfig is read (and refused) by the cluster's first call, within its timeout.
                clusters.client(Cluster(f"c-{field}", KubeconfigAuth(f"kc-{field}"))).read_secret(
                    "apim", "gw-1-token", "value", timeout=10)
    finally:
        clusters.close()
    assert read == [f"kc-{f}" for f in shapes]
    assert not marker.exists(), "a kubeconfig ran a program"
    assert all(_nobody_opened(f) for f in fifos.values()), "a kubeconfig made the app open a file"


def test_client_certificate_files_are_private_and_removed_on_close() -> None:
    doc = good(**{"client-certificate-data": b64(CA_PEM), "client-key-data": b64(KEY_PEM)})
    clusters = KubernetesClusters(None, lambda name: yaml.safe_dump(copy.deepcopy(doc)))
    client = clusters.client(Cluster("west", KubeconfigAuth("kubeconfig-west")))
    conf = client._api.configuration
    key_file = Path(conf.key_file)
    assert key_file.read_text() == KEY_PEM and Path(conf.cert_file).read_text() == CA_PEM
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    # No proxy from the kubeconfig (only the platform's own proxy environment, as for every SDK).
    environment_proxy = getproxies().get("https") or getproxies().get("all")
    assert conf.verify_ssl is True and conf.proxy == environment_proxy and not conf.tls_server_name
    clusters.close()
    assert not key_file.exists() and not key_file.parent.exists()


def test_client_certificate_shape_authenticates_over_mutual_tls(tmp_path: Path) -> None:
    """The validated inline client certificate is what the client presents: a server that requires a
    client certificate from the devstack CA answers the read; without it the handshake is refused."""
    from devstack.httpfake import FakeServer, Request, Response, json_response
    from devstack.tls import DevCA

    ca = DevCA.create(tmp_path / "ca")
    context = ca.server_context(tmp_path / "ca", "mtls-server")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(ca.ca_path)
    secret = {"metadata": {"resourceVersion": "7"}, "data": {"value": b64("GatewayKey sample")}}

    def read(request: Request) -> Response:
        return json_response(200, secret)

    cert_path, key_path = ca.issue(tmp_path / "ca", "rotator-client", ["apim-token-rotator"])
    shape = {"client-certificate-data": b64(Path(cert_path).read_text()),
             "client-key-data": b64(Path(key_path).read_text())}
    with FakeServer("mtls", ssl_context=context) as server:
        server.route("GET", r"/api/v1/namespaces/apim/secrets/gw-1-token", read)
        docs = {"with-cert": mutate("users.0.user", shape), "token-only": good()}
        for doc in docs.values():
            doc["clusters"][0]["cluster"] = {"server": server.url, "certificate-authority-data": b64(ca.ca_pem.decode())}
        clusters = KubernetesClusters(None, lambda name: yaml.safe_dump(docs[name]))
        try:
            state = clusters.client(Cluster("west", KubeconfigAuth("with-cert"))).read_secret(
                "apim", "gw-1-token", "value", timeout=5)
            assert (state.value, state.resource_version) == ("GatewayKey sample", "7")
            with pytest.raises(UpstreamError, match="cluster east unreachable"):
                clusters.client(Cluster("east", KubeconfigAuth("token-only"))).read_secret(
                    "apim", "gw-1-token", "value", timeout=5)
        finally:
            clusters.close()
        assert [c["status"] for c in server.calls()] == [200]

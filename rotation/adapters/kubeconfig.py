"""Kubeconfigs from Key Vault, accepted only in a shape that cannot run code, read files or weaken TLS.

Whoever can write a kubeconfig secret must not get more than a cluster credential out of it. A
kubeconfig loaded verbatim by the Kubernetes client can run programs (`exec`, `auth-provider` with
`cmd-path`), read the rotator's files (`tokenFile`, `certificate-authority`, `client-certificate`,
`client-key`), turn TLS verification off (`insecure-skip-tls-verify`) or route the credential through
a proxy (`proxy-url`). So the document is validated here, field by field, before anything uses it, and
the client is built from the validated values only (`SafeKubeconfig`), never by the client's loader.

Accepted: exactly one cluster (`server` https, optional inline `certificate-authority-data`), one user
(a static `token`, or inline `client-certificate-data` + `client-key-data`) and one context joining them
(optional `namespace`); `apiVersion: v1`, `kind: Config`, empty `preferences`, `current-context` naming
that context. Everything else is refused, naming the cluster, the secret and the field, never a value.
`tls-server-name` is refused too: the rotator has no use for it and it decouples the certificate check
from the `server` a reader sees. Exec plugins (kubelogin, cloud CLIs) cannot work in the Functions
sandbox anyway: for AKS use `auth: aks`.

Pure: YAML parsing and checks only (no I/O), so each hostile shape is unit-tested.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rotation.core.errors import PermanentError

MAX_KUBECONFIG_BYTES = 64 * 1024

# Fields that make the client run a program, read a file, weaken TLS or use a proxy: named in the error
# with the reason, so an operator knows what to change.
_REFUSED = {
    "exec": "runs a program",
    "auth-provider": "runs a program or reads files (auth plugins)",
    "tokenFile": "reads a file",
    "certificate-authority": "reads a file (use certificate-authority-data)",
    "client-certificate": "reads a file (use client-certificate-data)",
    "client-key": "reads a file (use client-key-data)",
    "insecure-skip-tls-verify": "disables TLS verification",
    "proxy-url": "sends the credential through a proxy",
    "tls-server-name": "verifies the certificate against another name than the server's",
    "username": "basic authentication is not supported",
    "password": "basic authentication is not supported",
    "as": "impersonation is not supported",
    "as-groups": "impersonation is not supported",
    "as-uid": "impersonation is not supported",
    "as-user-extra": "impersonation is not supported",
    "extensions": "extensions are not supported",
}


@dataclass(frozen=True, slots=True)
class SafeKubeconfig:
    """What the client is built from: a server, its CA, and one credential (token or client cert)."""

    server: str
    ca_pem: str | None = None
    token: str | None = None
    client_cert_pem: str | None = None
    client_key_pem: str | None = None
    namespace: str | None = None

    def __repr__(self) -> str:  # the credential never reaches a log or an error through a repr
        kind = "token" if self.token else "client certificate"
        return f"SafeKubeconfig(server={self.server!r}, auth={kind})"


class _Check:
    def __init__(self, cluster: str, secret: str) -> None:
        self._where = f"cluster {cluster}: kubeconfig secret {secret!r}"

    def fail(self, path: str, why: str) -> PermanentError:
        return PermanentError(f"{self._where}: {path} {why}" if path else f"{self._where} {why}")

    def obj(self, value: object, path: str, allowed: set[str],
            required: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "must be a mapping")
        for key in value:
            if not isinstance(key, str):
                raise self.fail(path, "has a non-text key")
        for key in sorted(value):
            if key in _REFUSED:
                raise self.fail(f"{path}.{key}" if path else key, f"is refused: {_REFUSED[key]}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            name = f"{path}.{unknown[0]}" if path else unknown[0]
            raise self.fail(name, f"is not allowed (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required - set(value)):
            raise self.fail(f"{path}.{key}" if path else key, "is required")
        return value

    def one(self, value: object, path: str) -> Any:
        if not isinstance(value, list) or len(value) != 1:
            raise self.fail(path, "must list exactly one entry")
        return value[0]

    def text(self, value: object, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, "must be a non-empty string")
        return value

    def pem(self, value: object, path: str, marker: str) -> str:
        text = self.text(value, path)
        try:
            pem = base64.b64decode(text, validate=True).decode("ascii")
        except (binascii.Error, ValueError):
            raise self.fail(path, "is not base64") from None
        if f"-----BEGIN {marker}" not in pem and not (marker == "PRIVATE KEY" and "PRIVATE KEY-----" in pem):
            raise self.fail(path, f"does not decode to a PEM {marker.lower()}")
        return pem


def parse_kubeconfig(text: str, *, cluster: str, secret: str) -> SafeKubeconfig:
    """Validate a kubeconfig's text; raises PermanentError naming the cluster, secret and field."""
    import yaml

    c = _Check(cluster, secret)
    if len(text.encode("utf-8", errors="replace")) > MAX_KUBECONFIG_BYTES:
        raise c.fail("", f"is larger than {MAX_KUBECONFIG_BYTES // 1024} KiB")
    try:
        doc = yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as dup:
        raise c.fail("", f"has a duplicate key {dup.name} (line {dup.line}): readers disagree on which "
                         "one counts") from None
    except (yaml.YAMLError, RecursionError):
        raise c.fail("", "is not valid YAML") from None
    return validate_kubeconfig(doc, cluster=cluster, secret=secret)


class _DuplicateKey(Exception):
    def __init__(self, name: str, line: int) -> None:
        super().__init__(name)
        self.name = name
        self.line = line


_KEY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")
_LOADER: Any = None


def _strict_loader() -> Any:
    """PyYAML's SafeLoader, refusing duplicate keys: it would keep the last one silently, kubectl
    (sigs.k8s.io/yaml, strict) refuses the document, so a reviewer and the rotator could see different
    kubeconfigs. Merge keys (`<<`) are expanded first; a merged key given again counts as a duplicate."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class StrictLoader(yaml.SafeLoader):
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                if isinstance(node, yaml.MappingNode):
                    self.flatten_mapping(node)
                    seen: set[object] = set()
                    for key_node, _ in node.value:
                        key = self.construct_object(key_node, deep=deep)
                        try:
                            duplicate = key in seen
                            seen.add(key)
                        except TypeError:
                            continue  # unhashable: SafeLoader refuses it below
                        if duplicate:
                            shown = repr(key) if isinstance(key, str) and _KEY_NAME.fullmatch(key) else "(not shown)"
                            raise _DuplicateKey(shown, key_node.start_mark.line + 1)
                return super().construct_mapping(node, deep=deep)

        _LOADER = StrictLoader
    return _LOADER


def validate_kubeconfig(doc: object, *, cluster: str, secret: str) -> SafeKubeconfig:
    c = _Check(cluster, secret)
    if not isinstance(doc, dict):
        raise c.fail("", "is not a kubeconfig (expected a mapping)")
    top = c.obj(doc, "", {"apiVersion", "kind", "preferences", "clusters", "users", "contexts",
                          "current-context"}, {"clusters", "users", "contexts"})
    if top.get("apiVersion", "v1") != "v1":
        raise c.fail("apiVersion", "must be v1")
    if top.get("kind", "Config") != "Config":
        raise c.fail("kind", "must be Config")
    if top.get("preferences") not in (None, {}):
        raise c.fail("preferences", "must be empty")

    named_cluster = c.obj(c.one(top["clusters"], "clusters"), "clusters[0]", {"name", "cluster"},
                          {"name", "cluster"})
    cluster_name = c.text(named_cluster["name"], "clusters[0].name")
    entry = c.obj(named_cluster["cluster"], "clusters[0].cluster", {"server", "certificate-authority-data"},
                  {"server"})
    server = c.text(entry["server"], "clusters[0].cluster.server")
    _check_server(c, server)
    ca = entry.get("certificate-authority-data")
    ca_pem = None if ca is None else c.pem(ca, "clusters[0].cluster.certificate-authority-data", "CERTIFICATE")

    named_user = c.obj(c.one(top["users"], "users"), "users[0]", {"name", "user"}, {"name", "user"})
    user_name = c.text(named_user["name"], "users[0].name")
    user = c.obj(named_user["user"], "users[0].user", {"token", "client-certificate-data", "client-key-data"})
    token, cert, key = _credential(c, user)

    named_context = c.obj(c.one(top["contexts"], "contexts"), "contexts[0]", {"name", "context"},
                          {"name", "context"})
    context_name = c.text(named_context["name"], "contexts[0].name")
    context = c.obj(named_context["context"], "contexts[0].context", {"cluster", "user", "namespace"},
                    {"cluster", "user"})
    if context["cluster"] != cluster_name:
        raise c.fail("contexts[0].context.cluster", "must name the kubeconfig's cluster")
    if context["user"] != user_name:
        raise c.fail("contexts[0].context.user", "must name the kubeconfig's user")
    namespace = context.get("namespace")
    if namespace is not None:
        c.text(namespace, "contexts[0].context.namespace")
    current = top.get("current-context")
    if current not in (None, "", context_name):
        raise c.fail("current-context", "must name the kubeconfig's context")
    return SafeKubeconfig(server=server.rstrip("/"), ca_pem=ca_pem, token=token, client_cert_pem=cert,
                          client_key_pem=key, namespace=namespace)


def _credential(c: _Check, user: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(token, client certificate PEM, client key PEM): exactly one kind of credential."""
    if "token" in user:
        if "client-certificate-data" in user or "client-key-data" in user:
            raise c.fail("users[0].user", "must hold a token or a client certificate, not both")
        token = c.text(user["token"], "users[0].user.token")
        if any(ch.isspace() for ch in token):
            raise c.fail("users[0].user.token", "must not contain whitespace")
        return token, None, None
    if "client-certificate-data" in user or "client-key-data" in user:
        if "client-certificate-data" not in user or "client-key-data" not in user:
            raise c.fail("users[0].user", "needs both client-certificate-data and client-key-data")
        cert = c.pem(user["client-certificate-data"], "users[0].user.client-certificate-data", "CERTIFICATE")
        key = c.pem(user["client-key-data"], "users[0].user.client-key-data", "PRIVATE KEY")
        return None, cert, key
    raise c.fail("users[0].user", "needs a token or client-certificate-data and client-key-data")


def _check_server(c: _Check, server: str) -> None:
    path = "clusters[0].cluster.server"
    if not server.startswith("https://"):
        raise c.fail(path, "must be an https:// URL")
    try:
        parts = urlsplit(server)
        _ = parts.port
    except ValueError:
        raise c.fail(path, "is not a valid URL") from None
    if not parts.hostname:
        raise c.fail(path, "has no host")
    if "@" in parts.netloc:
        raise c.fail(path, "must not contain user information ('@')")
    if parts.query or parts.fragment or "?" in server or "#" in server:
        raise c.fail(path, "must not have a query or fragment")
    if any(ch.isspace() or ord(ch) < 32 for ch in server):
        raise c.fail(path, "must not contain whitespace or control characters")

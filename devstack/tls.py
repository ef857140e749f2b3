"""A throwaway certificate authority for the local stack.

Every HTTPS fake (ARM, Key Vault) and every kube-apiserver of the stack presents a certificate issued by
one devstack CA, so clients verify TLS for real: they trust `ca.pem` (via `REQUESTS_CA_BUNDLE`,
`connection_verify` or a kubeconfig's `certificate-authority-data`) instead of switching checks off.

The CA key is written next to the certificate (mode 0600) so another process of the stack (e.g. the
kube-apiserver orchestrator) can `DevCA.load(dir)` and issue its own server certificates.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from pathlib import Path

import trustme

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost")


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class DevCA:
    """The devstack CA: `ca.pem` (+ `ca-key.pem`) in `dir`; issues server cert/key PEM files."""

    def __init__(self, ca: trustme.CA, directory: Path) -> None:
        self._ca = ca
        self.dir = directory

    @classmethod
    def create(cls, directory: str | os.PathLike[str]) -> DevCA:
        """A new CA; writes `dir/ca.pem` and `dir/ca-key.pem`."""
        d = Path(directory)
        ca = trustme.CA(organization_name="apim-token-rotator devstack")
        _write(d / CA_CERT, ca.cert_pem.bytes())
        _write(d / CA_KEY, ca.private_key_pem.bytes(), private=True)
        return cls(ca, d)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> DevCA:
        """The CA a previous `create(dir)` wrote."""
        d = Path(directory)
        ca = trustme.CA.from_pem((d / CA_CERT).read_bytes(), (d / CA_KEY).read_bytes())
        return cls(ca, d)

    @classmethod
    def load_or_create(cls, directory: str | os.PathLike[str]) -> DevCA:
        d = Path(directory)
        if (d / CA_CERT).exists() and (d / CA_KEY).exists():
            return cls.load(d)
        return cls.create(d)

    @property
    def ca_path(self) -> str:
        return str(self.dir / CA_CERT)

    @property
    def ca_pem(self) -> bytes:
        return bytes(self._ca.cert_pem.bytes())

    def issue(self, directory: str | os.PathLike[str], name: str,
              hosts: Sequence[str] = DEFAULT_HOSTS) -> tuple[str, str]:
        """Writes `dir/{name}.pem` and `dir/{name}-key.pem` for `hosts`; returns (cert_path, key_path)."""
        d = Path(directory)
        leaf = self._ca.issue_cert(*hosts, common_name=hosts[0] if hosts else name)
        cert = d / f"{name}.pem"
        key = d / f"{name}-key.pem"
        _write(cert, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        _write(key, leaf.private_key_pem.bytes(), private=True)
        return str(cert), str(key)

    def server_context(self, directory: str | os.PathLike[str], name: str,
                       hosts: Sequence[str] = DEFAULT_HOSTS) -> ssl.SSLContext:
        """A server-side SSLContext with a freshly issued certificate (files written to `dir`)."""
        cert, key = self.issue(directory, name, hosts)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client-side SSLContext that trusts this CA only."""
        return ssl.create_default_context(cafile=self.ca_path)

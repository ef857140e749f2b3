"""Which hosts may receive one of the app's credentials (pure: no I/O, no name resolution).

A registry `server`, a vault URL or an ARM endpoint decides where a bearer token is sent. Whoever can
edit that value must not be able to point the token elsewhere, so hosts are checked by shape, strictly:
lowercase DNS names under the cloud's domain, port 443, nothing a URL parser and a reader could
disagree about (userinfo, a trailing dot, IP literals, paths). Loopback is a separate, explicit
allowance for the local emulators.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

PUBLIC_AKS_DNS_SUFFIX = "azmk8s.io"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_REGION = r"[a-z0-9]{2,40}"


def is_loopback_host(host: str | None) -> bool:
    """`localhost` or a loopback IP literal: a server on this machine (the devstack)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """An https URL whose host is loopback (and that carries no userinfo to confuse the reader)."""
    try:
        parts = urlsplit(url)
        return parts.scheme == "https" and "@" not in parts.netloc and is_loopback_host(parts.hostname)
    except ValueError:
        return False


def aks_host_pattern(dns_suffix: str) -> re.Pattern[str]:
    """AKS API-server host names under `dns_suffix`: the public form `<name>.hcp.<region>.<suffix>`
    (also `<name>.portal.hcp…`) and the private-link form `<name>.privatelink.<region>.<suffix>`,
    optionally under a subzone (`<name>.<subzone>.privatelink.<region>.<suffix>`)."""
    return re.compile(rf"(?:{_LABEL}\.)+(?:hcp|privatelink)\.{_REGION}\.{re.escape(dns_suffix)}")


def vault_host_pattern(dns_suffix: str) -> re.Pattern[str]:
    """Key Vault host names: `<vault>{suffix}` (vault names are 3-24 of `[a-z0-9-]`, lowercase here)."""
    return re.compile(rf"[a-z0-9](?:[a-z0-9-]{{1,22}})[a-z0-9]{re.escape(dns_suffix)}")


def blob_host_pattern(storage_suffix: str, dns_zone_suffix: str | None) -> re.Pattern[str]:
    """Blob endpoints: `<account>.blob.<suffix>` (account names are 3-24 of `[a-z0-9]`), and where the
    cloud has them, Azure DNS zone endpoints `<account>.z<NN>.blob.<dns zone suffix>`."""
    forms = [rf"[a-z0-9]{{3,24}}\.blob\.{re.escape(storage_suffix)}"]
    if dns_zone_suffix:
        forms.append(rf"[a-z0-9]{{3,24}}\.z\d{{2}}\.blob\.{re.escape(dns_zone_suffix)}")
    return re.compile("|".join(f"(?:{f})" for f in forms))


def eventgrid_host_pattern(dns_suffix: str) -> re.Pattern[str]:
    """Event Grid topic / domain endpoints: `<topic>.<region>-1.<suffix>`."""
    return re.compile(rf"{_LABEL}\.{_LABEL}\.{re.escape(dns_suffix)}")


def server_problem(url: str, host_ok: re.Pattern[str] | None, allow_loopback: bool,
                   allow_path: bool = False) -> str | None:
    """Why `url` may not receive a credential (None when it may).

    Accepted: `https://HOST` or `https://HOST:443`, optionally with a trailing `/`, HOST matching
    `host_ok`; with `allow_loopback`, also a loopback host on any port. Refused: whitespace and control
    characters, userinfo, IP literals, other ports, paths (unless `allow_path`: a container or a
    topic's `/api/events`), queries, fragments, uppercase, a trailing dot.
    """
    if not url.startswith("https://"):
        return "must be an https:// URL"
    if any(c.isspace() or not c.isprintable() for c in url):
        # urlsplit silently drops tab, CR and LF (bpo-43882) while urllib3 refuses them in a host: the
        # host checked here would not be the host connected to.
        return "must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    why = _shape_problem(url, parts, allow_path)
    if why is not None:
        return why
    host = parts.hostname or ""
    if allow_loopback and is_loopback_host(host):
        return None
    return _host_problem(parts.netloc, host, port, host_ok)


def _shape_problem(url: str, parts: SplitResult, allow_path: bool) -> str | None:
    """Everything but the host: userinfo, query, fragment, path."""
    if "@" in parts.netloc:
        return "must not contain user information ('@')"
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return "must not have a query or fragment"
    if parts.path not in ("", "/") and not allow_path:
        return "must not have a path"
    return None


def _host_problem(netloc: str, host: str, port: int | None, host_ok: re.Pattern[str] | None) -> str | None:
    if any(c.isupper() for c in netloc):
        return "must be lowercase"
    if host.endswith("."):
        return "must not end with a dot"
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return "must be a host name, not an IP address"
    if port not in (None, 443):
        return "must use port 443"
    if host_ok is None or not host_ok.fullmatch(host):
        return "is not an allowed host"
    return None


@dataclass(frozen=True, slots=True)
class AksServerRule:
    """Where `aks` clusters may be: the cloud's AKS domain, plus loopback for the local emulators."""

    dns_suffix: str = PUBLIC_AKS_DNS_SUFFIX
    allow_loopback: bool = False

    def problem(self, url: str) -> str | None:
        why = server_problem(url, aks_host_pattern(self.dns_suffix), self.allow_loopback)
        if why == "is not an allowed host":
            return (f"is not an AKS API server of this cloud (*.hcp.<region>.{self.dns_suffix} or "
                    f"*.privatelink.<region>.{self.dns_suffix})")
        return why

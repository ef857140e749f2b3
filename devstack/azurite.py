"""Azurite (the Azure Storage emulator) for the dead-letter container, over HTTPS with OAuth.

Event Grid dead-letters undeliverable events into a blob container; `replay-deadletter` reads them with
the real azure-storage-blob SDK and the app's managed identity. To exercise exactly that path locally,
Azurite's blob service runs here with:

- HTTPS, with a certificate from the devstack CA (`DevCA`), so the SDK verifies TLS for real (it trusts
  `ca.pem` through `REQUESTS_CA_BUNDLE`, like every other devstack endpoint);
- `--oauth basic`, so the SDK authenticates with a bearer token from the identity fake, not an account
  key. Azurite's basic OAuth decodes the JWT *without checking the signature* and accepts it when it has
  `iat`, `nbf` and `exp` (now inside [nbf, exp]), an `iss` starting with `https://sts.windows.net/` (or
  another Entra ID authority) and an `aud` of `https://storage.azure.com` (see
  `dist/src/blob/authentication/BlobTokenAuthenticator.js` in azurite 3.35.0). `storage_token()` mints
  such an unsigned JWT; the identity fake hands it out for resource `https://storage.azure.com`
  (its `tokens` mapping), so nothing in the app knows it talks to an emulator.

Azurite is started by the tests that need it (about a second) and by `devstack up --azurite` (and so
`make demo`, when it is installed). Its workspace (`--location`) keeps containers and blobs across
restarts (Azurite 3.35.0 README, "Workspace Path Configuration", "Workspace Structure": deleting the
workspace is how it is cleaned); `start(fresh=True)` empties it first, for a new stack whose state must
not meet an earlier one's. `scripts/azurite.sh` installs the pinned npm package into
a cache outside the repo.

Until `devstack.stack.up` puts `storage_token()` into the identity fake's config, a running stack's
identity endpoint hands out an opaque token for storage; `StorageIdentity` is then a small overlay
endpoint that answers storage itself and forwards every other resource to the stack's endpoint.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devstack import pidfile
from devstack.httpfake import Request, Response
from devstack.identity import IdentityFake, normalize_resource
from devstack.keyvault import DEFAULT_TENANT
from devstack.tls import DevCA

VERSION = "3.35.0"
STORAGE_RESOURCE = "https://storage.azure.com"
ACCOUNT = "devstoreaccount1"  # Azurite's built-in account; the URL is path-style: https://host:port/ACCOUNT/…
REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "azurite.sh"
PID_FILE = "azurite.pid"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def storage_token(lifetime: timedelta = timedelta(days=2), tenant: str = DEFAULT_TENANT,
                  now: datetime | None = None) -> str:
    """An unsigned JWT shaped like an Entra ID access token for Azure Storage.

    Azurite's `--oauth basic` only decodes it (no signature check); the claims it checks are the ones
    set here. The lifetime outlives a test session or a working day of `devstack up`.
    """
    issued = int((now or datetime.now(UTC)).timestamp())
    header = {"typ": "JWT", "alg": "none"}
    claims = {
        "aud": STORAGE_RESOURCE,
        "iss": f"https://sts.windows.net/{tenant}/",
        "iat": issued - 60,
        "nbf": issued - 60,
        "exp": issued + int(lifetime.total_seconds()),
        "tid": tenant,
        "oid": "7f3c1a52-0d4e-4f7b-9a61-5b2c8e9d0a11",
        "sub": "7f3c1a52-0d4e-4f7b-9a61-5b2c8e9d0a11",
        "idtyp": "app",
        "uti": uuid.uuid4().hex[:22],
        "ver": "1.0",
    }
    return (f"{_b64url(json.dumps(header, separators=(',', ':')).encode())}."
            f"{_b64url(json.dumps(claims, separators=(',', ':')).encode())}.")


def jwt_claims(token: str) -> dict[str, object] | None:
    """The claims of a JWT (unverified), or None when `token` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


# --- the binary ---------------------------------------------------------------------------------------


def find_binary() -> str | None:
    """`$AZURITE_BLOB`, else the cache `scripts/azurite.sh` installs into; None when not installed."""
    explicit = os.environ.get("AZURITE_BLOB")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    cache = Path(os.environ.get("AZURITE_CACHE") or Path.home() / ".cache" / "apim-token-rotator" / "azurite")
    binary = cache / "node_modules" / ".bin" / "azurite-blob"
    return str(binary) if os.access(binary, os.X_OK) and (cache / f".installed-{VERSION}").exists() else None


def ensure_binary() -> str:
    """The azurite-blob binary, installed with npm on first use (by `scripts/azurite.sh`)."""
    found = find_binary()
    if found:
        return found
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"scripts/azurite.sh failed (exit {result.returncode}): {tail[:400]}")
    return lines[-1]


# --- the process --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Azurite:
    """A running azurite-blob: `url` is the account's blob endpoint (path-style)."""

    dir: Path
    pid: int
    port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/{ACCOUNT}"

    def container_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    def stop(self) -> bool:
        return stop(self.dir)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int, ca_path: str) -> bool:
    """Whether Azurite serves HTTPS on `port` (any HTTP answer counts: it needs no auth to say 400)."""
    ctx = ssl.create_default_context(cafile=ca_path)
    req = urllib.request.Request(f"https://127.0.0.1:{port}/{ACCOUNT}?comp=list", method="GET")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ssl.SSLError):
        return False


def start(directory: str | os.PathLike[str], ca: DevCA | None = None, *, timeout: float = 20.0,
          binary: str | None = None, fresh: bool = False) -> Azurite:
    """Start azurite-blob on a free loopback port, HTTPS + basic OAuth; returns once it answers.

    State (workspace, certificate, log) lives in `dir/azurite/`, the pid in `dir/azurite.pid`. `ca`
    defaults to the devstack CA in `dir` (created when missing). An Azurite still running from an earlier
    `start(dir)` is stopped first; `fresh` also empties the workspace it leaves.
    """
    d = Path(directory).resolve()
    work = d / "azurite"
    work.mkdir(parents=True, exist_ok=True)
    stop(d)
    if fresh:
        shutil.rmtree(work / "data", ignore_errors=True)
    ca = ca or DevCA.load_or_create(d)
    cert, key = ca.issue(work, "azurite-server")
    exe = binary or ensure_binary()
    last_error = "no attempt"
    for _ in range(3):  # a free port can be taken between probing and binding: try another one
        port = _free_port()
        argv = [exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--cert", cert, "--key", key,
                "--oauth", "basic", "--skipApiVersionCheck", "--disableTelemetry", "--silent",
                "--location", str(work / "data")]
        with open(work / "azurite.log", "ab") as log:
            proc = subprocess.Popen(argv, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        pidfile.write(d / PID_FILE, proc.pid)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if proc.poll() is not None:
                last_error = f"azurite-blob exited with code {proc.returncode}; see {work / 'azurite.log'}"
                break
            if _answers(port, ca.ca_path):
                return Azurite(d, proc.pid, port)
            time.sleep(0.05)
        else:
            last_error = f"azurite-blob did not answer within {timeout:.0f}s; see {work / 'azurite.log'}"
            stop(d)
            break
        (d / PID_FILE).unlink(missing_ok=True)
    raise RuntimeError(last_error)


def stop(directory: str | os.PathLike[str]) -> bool:
    """Stop the Azurite `start(dir)` started (idempotent); True when one was running.

    Only while the recorded pid still runs Azurite on this directory's workspace (its `--location`
    argument): a pid left from before a crash or reboot may be anybody's now.
    """
    d = Path(directory).resolve()
    return pidfile.stop(d / PID_FILE, ("--location", str(d / "azurite" / "data")))


# --- the token, on a stack whose identity endpoint does not hand it out yet --------------------------


def identity_token(endpoint: str, header: str, resource: str = STORAGE_RESOURCE) -> str:
    """What a managed-identity endpoint (App Service protocol) hands out for `resource`."""
    query = urllib.parse.urlencode({"api-version": "2019-08-01", "resource": resource})
    req = urllib.request.Request(f"{endpoint}?{query}", headers={"X-IDENTITY-HEADER": header})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["access_token"])


def serves_storage(endpoint: str, header: str) -> bool:
    """Whether the identity endpoint already hands out a token Azurite's basic OAuth accepts."""
    claims = jwt_claims(identity_token(endpoint, header))
    return bool(claims) and str(claims.get("aud", "")).rstrip("/") == STORAGE_RESOURCE  # type: ignore[union-attr]


class StorageIdentity(IdentityFake):
    """An identity endpoint answering `https://storage.azure.com` itself and forwarding the rest upstream.

    The stack's ARM and Key Vault fakes accept only tokens their own identity fake issued, so every other
    resource must still come from there; the storage token is `storage_token()`. Same header as upstream.
    """

    def __init__(self, upstream_endpoint: str, header: str, token: str | None = None) -> None:
        super().__init__(header=header, tokens={STORAGE_RESOURCE: token or storage_token()})
        self.upstream = upstream_endpoint

    def _token(self, request: Request) -> Response:
        resource = request.query.get("resource") or ""
        if normalize_resource(resource) == normalize_resource(STORAGE_RESOURCE):
            return super()._token(request)
        query = urllib.parse.urlencode(request.query)
        headers = {"X-IDENTITY-HEADER": request.header("X-IDENTITY-HEADER") or ""}
        forwarded = urllib.request.Request(f"{self.upstream}?{query}", headers=headers)
        try:
            with urllib.request.urlopen(forwarded, timeout=10) as resp:
                return Response(resp.status, resp.read(), {"Content-Type": "application/json"})
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.read(), {"Content-Type": "application/json"})

"""Per-gateway leases: Azure Blob Storage leases (shared by every instance), or an in-process fallback.

On Flex Consumption the Event Grid, HTTP and timer functions scale out independently and the
operator's CLI runs beside them, so an in-process lock serialises nothing that matters. A blob lease
is the primitive the Functions host itself uses for its singletons: one blob per gateway in the app's
own storage account, leased for 15-60 seconds, renewed while held, released at the end; a crashed
holder's lease simply expires.

SDK behaviour relied on (azure-sdk-for-python, sdk/storage/azure-storage-blob, 12.31):
- `azure/storage/blob/_lease.py` `BlobLeaseClient.acquire(lease_duration)`: "A non-infinite lease can
  be between 15 and 60 seconds"; the client proposes its own lease id (a uuid4) and the service
  answers 409 `LeaseAlreadyPresent` while another id holds it; `renew` works "even if it has expired
  as long as the container or blob has not been leased again since" (else 409 `LeaseIdMismatch...`).
- A lease needs an existing blob (404 `BlobNotFound` otherwise). `upload_blob(overwrite=False)` sends
  `If-None-Match: *` (`_upload_helpers.py`, `upload_block_blob`), so racing creators cannot clobber a
  blob another process has just leased: the loser gets 409 `BlobAlreadyExists` (or 412 with the lease).
- Blob REST "Lease Blob" (learn.microsoft.com/rest/api/storageservices/lease-blob) documents the
  same durations and error codes.
- Blob names ("Naming and Referencing Containers, Blobs, and Metadata", learn.microsoft.com/rest/api/
  storageservices/naming-and-referencing-containers--blobs--and-metadata): 1 to 1,024 characters, at
  most 254 path segments, avoid a trailing dot or slash. `check_name` refuses more (`..`, backslashes,
  control characters): the client normalises `../x` in the URL path, so such a name would lease a
  blob of ANOTHER container.
- azure-core's `BearerTokenCredentialPolicy` asks the credential for a storage token before sending,
  outside the per-call timeouts: every call runs under `token_deadline` (rotation.adapters.credential),
  so a stalled identity endpoint ends it within the caller's wait like any other request.

A holder can also lose its lease without noticing (a GC pause or frozen VM longer than the duration):
`check()` renews synchronously when the last confirmed renewal is older than half the duration, which
fails if another holder has leased the blob since. Writers call it right before each write.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rotation.adapters.credential import token_deadline
from rotation.core.errors import AccessDenied, InvalidInput, RotationError, SettingsError, UpstreamError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger("rotation.lease")

MIN_DURATION, MAX_DURATION = 15, 60
POLL_SECONDS = 0.25  # how often a waiter retries a held lease (Blob Storage has no blocking acquire)
REQUEST_TIMEOUT = 5.0  # client-side connect/read timeout of one lease call
MIN_ATTEMPT = 0.5  # an acquire makes one attempt of at least this long, even with no time to wait


def lease_duration(seconds: float) -> int:
    """The service accepts whole seconds between 15 and 60."""
    return int(min(MAX_DURATION, max(MIN_DURATION, round(seconds))))


MAX_NAME, MAX_SEGMENTS = 1024, 254


def check_name(name: str) -> str:
    """A lease name that stays a blob of the lease container (see the module docstring); InvalidInput
    otherwise, before any call."""
    shown = repr(name[:60]) + ("…" if len(name) > 60 else "")
    segments = name.split("/")
    why = None
    if not 1 <= len(name) <= MAX_NAME:
        why = f"must be 1 to {MAX_NAME} characters"
    elif len(segments) > MAX_SEGMENTS:
        why = f"has more than {MAX_SEGMENTS} path segments"
    elif any(seg in ("", ".", "..") for seg in segments) or name.endswith("."):
        why = "has an empty, '.' or '..' path segment, or ends with a dot or a slash"
    elif "\\" in name or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name):
        why = "contains a backslash or a control character"
    if why:
        raise InvalidInput(f"lease name {shown} {why}")
    return name


# --- in-process fallback -----------------------------------------------------------------------------


@dataclass
class _LocalEntry:
    holder: str
    expires: float


@dataclass
class LocalLease:
    """`Lease` within one process, with the blob lease's expiry semantics. NOT shared across instances:
    used only when LEASE_CONTAINER_URL is unset (local runs), and reported as such in health/status."""

    _entries: dict[str, _LocalEntry] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    clock: Callable[[], float] = time.monotonic  # when leases expire (tests pause a holder by moving it)

    @property
    def shared(self) -> bool:
        return False

    def acquire(self, name: str, *, duration: float, wait: float) -> _LocalHeld:
        seconds = lease_duration(duration)
        check_name(name)
        holder = uuid.uuid4().hex
        end = time.monotonic() + max(0.0, wait)  # the caller's wait is real time, whatever `clock` says
        with self._cond:
            while True:
                now = self.clock()
                entry = self._entries.get(name)
                if entry is None or entry.expires <= now:
                    self._entries[name] = _LocalEntry(holder, now + seconds)
                    return _LocalHeld(self, name, holder, seconds, now)
                left = end - time.monotonic()
                if left <= 0:
                    raise UpstreamError(f"lease {name}: another reconcile of this gateway holds it "
                                        f"(waited {wait:.1f}s); retry later")
                self._cond.wait(min(left, entry.expires - now))

    def _renew(self, name: str, holder: str, seconds: int) -> float:
        with self._cond:
            entry = self._entries.get(name)
            now = self.clock()
            if entry is None or entry.holder != holder:  # an expired lease nobody took renews, as in Blob Storage
                raise UpstreamError(f"lease {name} was lost (it expired and another holder took it)")
            entry.expires = now + seconds
            return now

    def _release(self, name: str, holder: str) -> None:
        with self._cond:
            entry = self._entries.get(name)
            if entry is not None and entry.holder == holder:
                del self._entries[name]
            self._cond.notify_all()


@dataclass
class _LocalHeld:
    owner: LocalLease
    name: str
    holder: str
    seconds: int
    renewed: float

    def renew(self) -> None:
        self.renewed = self.owner._renew(self.name, self.holder, self.seconds)

    def check(self) -> None:
        if self.owner.clock() - self.renewed > self.seconds / 2:
            self.renew()

    def release(self) -> None:
        self.owner._release(self.name, self.holder)


# --- Azure Blob Storage ------------------------------------------------------------------------------


def _code(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return str(code or "")


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


class BlobLease:
    """`Lease` over one blob per gateway in the container at LEASE_CONTAINER_URL (the app's identity
    needs Storage Blob Data Contributor on that container only: it creates the empty blobs)."""

    def __init__(self, container_url: str, credential: TokenCredential | Any, *,
                 poll_seconds: float = POLL_SECONDS) -> None:
        from azure.storage.blob import ContainerClient

        self.container_url = container_url
        self._poll = poll_seconds
        # Few, fast retries: the caller's deadline is seconds, and waiting is done here, not by the SDK.
        self._container = ContainerClient.from_container_url(
            container_url, credential=credential, connection_timeout=REQUEST_TIMEOUT,
            read_timeout=REQUEST_TIMEOUT, retry_total=1, retry_backoff_factor=0.2)

    @property
    def shared(self) -> bool:
        return True

    def acquire(self, name: str, *, duration: float, wait: float) -> _BlobHeld:
        from azure.core.exceptions import AzureError, ClientAuthenticationError, ResourceNotFoundError
        from azure.storage.blob import BlobLeaseClient

        seconds = lease_duration(duration)
        blob = self._container.get_blob_client(check_name(name))
        lease = BlobLeaseClient(blob)
        end = time.monotonic() + max(0.0, wait)
        what = f"lease {name} in {self.container_url}"
        created = False
        while True:
            try:
                # wait=0 (or a deadline about to pass) still gets one attempt, of at most MIN_ATTEMPT.
                with _bounded(max(end - time.monotonic(), MIN_ATTEMPT), what) as options:
                    lease.acquire(lease_duration=seconds, **options)
                return _BlobHeld(lease, what, seconds)
            except ResourceNotFoundError as exc:
                if _code(exc) == "ContainerNotFound":
                    raise SettingsError(f"{what}: the container does not exist (LEASE_CONTAINER_URL; "
                                        "infra creates it)") from None
                if created:
                    raise UpstreamError(f"{what}: the lease blob disappeared after it was created") from None
                self._create(blob, what, max(end, time.monotonic() + MIN_ATTEMPT))
                created = True
                continue  # acquire at once: the blob exists now
                raise UpstreamError(f"{what}: the lease blob could not be leased within {wait:.1f}s") from None
            except ClientAuthenticationError:
                raise AccessDenied(f"{what}: not authorised (the app's identity needs Storage Blob Data "
                                   "Contributor on the lease container)") from None
            except AzureError as exc:
                if _status(exc) == 403:
                    raise AccessDenied(f"{what}: 403 {_code(exc)} (the app's identity needs Storage Blob Data "
                                       "Contributor on the lease container)") from None
                if _status(exc) != 409:  # 409 LeaseAlreadyPresent: someone holds it; anything else is trouble
                    raise UpstreamError(f"{what}: {_status(exc)} {_code(exc) or type(exc).__name__}") from None
            if time.monotonic() + self._poll > end:
                raise UpstreamError(f"{what}: another reconcile of this gateway holds it (waited {wait:.1f}s); "
                                    "retry later")
            time.sleep(self._poll)

    @staticmethod
    def _create(blob: Any, what: str, end: float) -> None:
        from azure.core.exceptions import AzureError

        try:
            with _bounded(end - time.monotonic(), what) as options:
                blob.upload_blob(b"", overwrite=False, **options)  # If-None-Match: * (see the module docstring)
        except AzureError as exc:
            if _status(exc) in (409, 412):  # created (and maybe leased) by another process meanwhile
                return
            if _status(exc) == 403:
                raise AccessDenied(f"{what}: cannot create the lease blob: 403 {_code(exc)}") from None
            raise UpstreamError(f"{what}: cannot create the lease blob: {_status(exc)} "
                                f"{_code(exc) or type(exc).__name__}") from None

    def close(self) -> None:
        self._container.close()


@contextmanager
def _bounded(seconds: float, what: str) -> Iterator[dict[str, Any]]:
    """One lease call within `seconds`: each attempt (its storage token request included) at most
    REQUEST_TIMEOUT, and the SDK's one retry only when a second attempt still fits."""
    limit = min(REQUEST_TIMEOUT, seconds)
    if limit <= 0:
        raise UpstreamError(f"{what}: the deadline passed")
    options: dict[str, Any] = {"connection_timeout": limit, "read_timeout": limit}
    if seconds < 2 * limit:
        options["retry_total"] = 0  # per-call override read by the storage retry policy (configure_retries)
    with token_deadline(limit):
        yield options


class _BlobHeld:
    def __init__(self, lease: Any, what: str, seconds: int) -> None:
        self._lease = lease
        self._what = what
        self._seconds = seconds
        self._renewed = time.monotonic()

    def renew(self) -> None:
        from azure.core.exceptions import AzureError

        started = time.monotonic()
        try:
            with _bounded(2 * REQUEST_TIMEOUT, self._what) as options:
                self._lease.renew(**options)
        except AzureError as exc:
            raise UpstreamError(f"{self._what} was lost or could not be renewed: {_status(exc)} "
                                f"{_code(exc) or type(exc).__name__}") from None
        self._renewed = started  # the lease runs from (at the latest) when the request was sent

    def check(self) -> None:
        if time.monotonic() - self._renewed > self._seconds / 2:
            self.renew()

    def release(self) -> None:
        from azure.core.exceptions import AzureError

        try:
            with _bounded(REQUEST_TIMEOUT, self._what) as options:
                self._lease.release(**options)
        except (AzureError, RotationError) as exc:  # it expires on its own (the identity may fail too)
            log.warning("%s: release failed (it will expire): %s %s", self._what, _status(exc),
                        _code(exc) or type(exc).__name__)


def build_lease(container_url: str | None, credential: Any) -> BlobLease | LocalLease:
    if container_url:
        return BlobLease(container_url, credential)
    log.warning("LEASE_CONTAINER_URL is not set: per-gateway leases are IN-PROCESS only and do not "
                "serialise other instances or the CLI. Fine for local runs; never in Azure.")
    return LocalLease()


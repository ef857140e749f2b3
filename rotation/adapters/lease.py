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

Fencing (rotation.core.fencing) lives in the same blob's metadata: `fencinggeneration`, and the head
as `headversion`, `headfingerprint`, `headgeneration` (metadata names must be C# identifiers and are
case-insensitive: "Naming and Referencing Containers, Blobs, and Metadata"). What makes it a fence:
- Blob REST "Lease Blob", Remarks, "Outcomes of use attempts on blobs by lease state": a write using
  lease id (A) succeeds only while (A) is leased; it fails with 412 once (A) expired (even if nobody
  leased the blob since), was released or broken, and with 409/412 while another id holds it. So a
  head is recorded only by the current holder, decided by the service when the write arrives, however
  late the request is. Azurite 3.35 answers the same (412 LeaseNotPresentWithBlobOperation /
  LeaseIdMismatchWithBlobOperation; tests/adapters/test_lease_fencing.py).
- Blob REST "Set Blob Metadata" replaces all metadata and takes `x-ms-lease-id` and the conditional
  headers ("Specifying conditional headers for Blob service operations"); Lease Blob changes neither
  Last-Modified nor the ETag. On acquire the generation is read under the lease and written back + 1
  with the lease id AND `If-Match` of the ETag read, so an acquisition either advances the generation
  it read or fails: generations strictly increase across holders, including past a holder that
  crashed after advancing. azure-storage-blob: `_blob_client.py` `set_blob_metadata(metadata, lease=,
  etag=, match_condition=)`, `_blob_client_helpers.py` `_set_blob_metadata_options`.
- `heads` is one List Blobs (`list_blobs(name_starts_with=, include=['metadata'])`), no lease taken.
Deleting a lease blob restarts its generation at 1 (only someone with write access to the container can).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rotation.adapters.credential import token_deadline
from rotation.core.errors import AccessDenied, InvalidInput, RotationError, SettingsError, UpstreamError
from rotation.core.fencing import FenceHead

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


# --- fencing metadata --------------------------------------------------------------------------------

META_GENERATION = "fencinggeneration"
META_HEAD_VERSION = "headversion"
META_HEAD_FINGERPRINT = "headfingerprint"
META_HEAD_GENERATION = "headgeneration"
MAX_META_VALUE = 256  # far above a Key Vault version id (32 hex) or a fingerprint


def safety_margin(seconds: float) -> float:
    """How much earlier than its nominal end a holder stops counting on its lease: the service's clock
    and this process's may drift apart, and a request in flight needs time to arrive."""
    return max(2.0, seconds / 10)


def _meta_value(value: str, field: str) -> str:
    """Metadata travels as HTTP header values: printable ASCII, no surrounding blanks (trimmed)."""
    if not (0 < len(value) <= MAX_META_VALUE and value.isascii() and value.isprintable()
            and value == value.strip()):
        raise InvalidInput(f"fence head {field} is not a short printable ASCII value")
    return value


def fence_metadata(generation: int, head: FenceHead | None) -> dict[str, str]:
    """The whole metadata of a lease blob (Set Blob Metadata replaces all of it)."""
    metadata = {META_GENERATION: str(generation)}
    if head is not None:
        metadata |= {META_HEAD_VERSION: _meta_value(head.version, "version"),
                     META_HEAD_FINGERPRINT: _meta_value(head.fingerprint, "fingerprint"),
                     META_HEAD_GENERATION: str(head.generation)}
    return metadata


def _count(value: str | None) -> int | None:
    return int(value) if value is not None and value.isascii() and value.isdigit() and len(value) <= 18 else None


def parse_fence(metadata: Mapping[str, str] | None, what: str) -> tuple[int, FenceHead | None]:
    """(generation, head) from a lease blob's metadata; (0, None) for a blob never fenced. Anything else
    raises UpstreamError: counting again from 1 would make later writes look older than earlier ones."""
    meta = {key.lower(): value for key, value in (metadata or {}).items()}  # names are case-insensitive
    head_fields = (meta.get(META_HEAD_VERSION), meta.get(META_HEAD_FINGERPRINT), meta.get(META_HEAD_GENERATION))
    generation = _count(meta.get(META_GENERATION, "0"))
    head: FenceHead | None = None
    if all(head_fields) and generation is not None:
        version, fp, written = head_fields
        head_generation = _count(written)
        if version and fp and head_generation is not None:
            head = FenceHead(version, fp, head_generation)
    if generation is None or (head is None and any(f is not None for f in head_fields)):
        raise UpstreamError(f"{what}: malformed fencing metadata ({META_GENERATION}, {META_HEAD_VERSION}, "
                            f"{META_HEAD_FINGERPRINT}, {META_HEAD_GENERATION}); an operator must repair it")
    return generation, head


def _common_prefix(names: set[str]) -> str:
    """The longest string every name starts with (characters, not path segments: List Blobs' `prefix`)."""
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _lost(what: str, head: FenceHead, why: str) -> UpstreamError:
    return UpstreamError(f"{what} was lost ({why}): head {head.version} (fingerprint {head.fingerprint}, "
                         f"generation {head.generation}) was not recorded, so that write stays a fork")


# --- in-process fallback -----------------------------------------------------------------------------


@dataclass
class _LocalEntry:
    holder: str
    expires: float


@dataclass
class _LocalFence:
    generation: int = 0
    head: FenceHead | None = None


@dataclass
class LocalLease:
    """`Lease` within one process, with the blob lease's expiry and fencing semantics (see the module
    docstring: a commit needs the lease unexpired, as a write using an expired lease id fails with 412).
    NOT shared across instances: used only when LEASE_CONTAINER_URL is unset (local runs), and reported
    as such in health/status."""

    _entries: dict[str, _LocalEntry] = field(default_factory=dict)
    _fences: dict[str, _LocalFence] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    clock: Callable[[], float] = time.monotonic  # when leases expire (tests pause a holder by moving it)

    @property
    def shared(self) -> bool:
        return False

    def heads(self, names: Sequence[str], timeout: float | None = None) -> dict[str, FenceHead]:
        with self._cond:
            found = {name: self._fences[name].head for name in names if name in self._fences}
        return {name: head for name, head in found.items() if head is not None}

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
                    fence = self._fences.setdefault(name, _LocalFence())
                    fence.generation += 1
                    return _LocalHeld(self, name, holder, seconds, now, fence.generation, fence.head)
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

    def _commit(self, name: str, holder: str, head: FenceHead) -> None:
        with self._cond:
            entry = self._entries.get(name)
            if entry is None or entry.holder != holder:
                raise _lost(f"lease {name}", head, "released, or expired and taken by another holder")
            if entry.expires <= self.clock():
                raise _lost(f"lease {name}", head, "expired: renew first")
            self._fences[name].head = head

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
    generation: int
    head: FenceHead | None

    def commit(self, head: FenceHead, timeout: float | None = None) -> None:
        self.owner._commit(self.name, self.holder, head)
        self.head = head

    def remaining(self) -> float:
        return max(0.0, self.renewed + self.seconds - safety_margin(self.seconds) - self.owner.clock())

    def renew(self) -> None:
        self.renewed = self.owner._renew(self.name, self.holder, self.seconds)

    def check(self) -> None:
        if self.owner.clock() - self.renewed > self.seconds / 2:
            self.renew()

    def release(self, timeout: float | None = None) -> None:
        self.owner._release(self.name, self.holder)  # no I/O: always at once


# --- Azure Blob Storage ------------------------------------------------------------------------------


def _code(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return str(code or "")


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _failure(exc: Exception, what: str, doing: str) -> RotationError:
    """An SDK error of a call other than acquire, as a core error."""
    from azure.core.exceptions import ClientAuthenticationError

    if isinstance(exc, ClientAuthenticationError) or _status(exc) == 403:
        return AccessDenied(f"{what}: cannot {doing}: not authorised ({_status(exc)} {_code(exc)}; the app's "
                            "identity needs Storage Blob Data Contributor on the lease container)")
    return UpstreamError(f"{what}: cannot {doing}: {_status(exc)} {_code(exc) or type(exc).__name__}")


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

    def _missing_container(self, what: str) -> SettingsError:
        return SettingsError(f"{what}: the container does not exist (LEASE_CONTAINER_URL; infra creates it)")

    def heads(self, names: Sequence[str], timeout: float | None = None) -> dict[str, FenceHead]:
        """One listing of the lease blobs' metadata (paged under the same budget); a blob whose fencing
        metadata is malformed is left out, with a warning (status then reads its latest version unfenced,
        as it would had the blob been deleted)."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        wanted = {check_name(name) for name in names}
        if not wanted:
            return {}
        seconds = 2 * REQUEST_TIMEOUT if timeout is None else timeout
        end = time.monotonic() + seconds
        what = f"leases in {self.container_url}"
        found: dict[str, FenceHead] = {}
        try:
            with _bounded(seconds, what) as options:
                prefix = _common_prefix(wanted) or None
                for blob in self._container.list_blobs(name_starts_with=prefix, include=["metadata"], **options):
                    if time.monotonic() > end:
                        raise UpstreamError(f"{what}: listing the heads took longer than {seconds:.1f}s")
                    if blob.name not in wanted:
                        continue
                    try:
                        _, head = parse_fence(blob.metadata, f"lease {blob.name} in {self.container_url}")
                    except UpstreamError as exc:
                        log.warning("%s", exc)
                        continue
                    if head is not None:
                        found[blob.name] = head
        except ResourceNotFoundError as exc:
            if _code(exc) == "ContainerNotFound":
                raise self._missing_container(what) from None
            raise _failure(exc, what, "list the lease blobs") from None
        except AzureError as exc:
            raise _failure(exc, what, "list the lease blobs") from None
        return found

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
                sent = time.monotonic()  # the lease runs from (at the latest) when the request was sent
                # wait=0 (or a deadline about to pass) still gets one attempt, of at most MIN_ATTEMPT.
                with _bounded(max(end - sent, MIN_ATTEMPT), what) as options:
                    lease.acquire(lease_duration=seconds, **options)
                return self._fence(blob, lease, what, seconds, sent, end)
            except ResourceNotFoundError as exc:
                if _code(exc) == "ContainerNotFound":
                    raise self._missing_container(what) from None
                if created:
                    raise UpstreamError(f"{what}: the lease blob disappeared after it was created") from None
                self._create(blob, what, max(end, time.monotonic() + MIN_ATTEMPT))
                created = True
                continue  # acquire at once: the blob exists now
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
    def _fence(blob: Any, lease: Any, what: str, seconds: int, sent: float, end: float) -> _BlobHeld:
        """Advances the generation under the new lease: read, then write + 1 with the lease id and If-Match
        on the ETag read (see the module docstring). Without that the lease is no use: released, and
        the acquire fails."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError

        try:
            with _bounded(max(end - time.monotonic(), MIN_ATTEMPT), what) as options:
                props = blob.get_blob_properties(lease=lease, **options)
            generation, head = parse_fence(props.metadata, what)
            with _bounded(max(end - time.monotonic(), MIN_ATTEMPT), what) as options:
                blob.set_blob_metadata(fence_metadata(generation + 1, head), lease=lease, etag=props.etag,
                                       match_condition=MatchConditions.IfNotModified, **options)
        except (AzureError, RotationError) as exc:
            _BlobHeld(blob, lease, what, seconds, sent, 0, None).release(REQUEST_TIMEOUT)
            if isinstance(exc, RotationError):
                raise
            raise _failure(exc, what, "advance the fencing generation") from None
        log.debug("%s: acquired, fencing generation %d", what, generation + 1)
        return _BlobHeld(blob, lease, what, seconds, sent, generation + 1, head)

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
    def __init__(self, blob: Any, lease: Any, what: str, seconds: int, sent: float, generation: int,
                 head: FenceHead | None) -> None:
        self._blob = blob
        self._lease = lease
        self._what = what
        self._seconds = seconds
        self._renewed = sent
        self._generation = generation
        self._head = head

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def head(self) -> FenceHead | None:
        return self._head

    def commit(self, head: FenceHead, timeout: float | None = None) -> None:
        """Set Blob Metadata with the lease id: the service refuses it unless this lease is still active
        when the request arrives (see the module docstring), whatever this process believes."""
        from azure.core.exceptions import AzureError

        metadata = fence_metadata(self._generation, head)
        try:
            with _bounded(2 * REQUEST_TIMEOUT if timeout is None else timeout, self._what) as options:
                self._blob.set_blob_metadata(metadata, lease=self._lease, **options)
        except AzureError as exc:
            if _status(exc) in (409, 412):  # LeaseIdMismatch…, LeaseNotPresent…, LeaseLost, ConditionNotMet
                raise _lost(self._what, head, f"{_status(exc)} {_code(exc)}") from None
            raise _failure(exc, self._what, f"record head {head.version}") from None
        self._head = head

    def remaining(self) -> float:
        return max(0.0, self._renewed + self._seconds - safety_margin(self._seconds) - time.monotonic())

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

    def release(self, timeout: float | None = None) -> None:
        """Within `timeout` (the caller's time left; None: REQUEST_TIMEOUT) all told: the token request,
        the connection and the answer get a third each. No time left: no call (the lease expires)."""
        from azure.core.exceptions import AzureError

        budget = REQUEST_TIMEOUT if timeout is None else min(timeout, REQUEST_TIMEOUT)
        if budget <= 0:
            log.info("%s: not released, no time left (it expires within %ds)", self._what, self._seconds)
            return
        try:
            with _bounded(budget / 3, self._what) as options:
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

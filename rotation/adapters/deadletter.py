"""Dead-lettered Event Grid events, read from their blob container with azure-storage-blob.

When Event Grid gives up on a delivery (retries exhausted, or a 4xx it does not retry) and the
subscription has a dead-letter destination, it writes the event into a blob under
`{container}/{TOPIC}/{SUBSCRIPTION}/{yyyy}/{MM}/{dd}/{HH}/{guid}.json`. A blob holds a JSON array:
- Event Grid schema: each item is the original event plus `deadLetterReason`, `deliveryAttempts`,
  `lastDeliveryOutcome`, `lastHttpStatusCode`, `publishTime`, `lastDeliveryAttemptTime`;
- CloudEvents 1.0: the original event with the same metadata as lower-case extension attributes
  (`deadletterreason`, …), or wrapped as `{"event": {…}, "deadletterproperties": {…}}`. Both forms are
  accepted because the docs show both and the replay must not drop events over a spelling.

This adapter only reads and deletes blobs; deciding what to replay is `rotation.replay`'s job. A blob
that cannot be read or parsed is reported in its `DeadLetter.error` instead of failing the whole
listing, so one bad blob cannot block the replay of the rest. The SDK is imported lazily.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from rotation.adapters.credential import scrub, translate
from rotation.core.errors import InvalidInput, NotFound, RotationError, SettingsError
from rotation.core.events import parse_time

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

MAX_BLOB_BYTES = 4 * 1024 * 1024  # Event Grid events are ≤ 1 MB; a bigger blob is not a dead letter
_META = {
    "deadletterreason": "reason",
    "deliveryattempts": "attempts",
    "lastdeliveryoutcome": "last_outcome",
    "lasthttpstatuscode": "last_status",
    "publishtime": "published",
    "lastdeliveryattempttime": "last_attempt",
}


def redact_url(url: str) -> str:
    """The URL without its query: a SAS token there is a credential and must not be printed."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


@dataclass(frozen=True, slots=True)
class DeadLetteredEvent:
    """One event as the trigger would have received it, plus what Event Grid said about its delivery."""

    payload: Mapping[str, Any]
    reason: str | None = None
    delivery_attempts: int | None = None
    last_outcome: str | None = None
    last_status: int | None = None
    published_at: datetime | None = None

    @property
    def event_id(self) -> str | None:
        value = self.payload.get("id") if isinstance(self.payload, Mapping) else None
        return value[:128] if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-letter blob: its events, or why they could not be read."""

    name: str
    last_modified: datetime | None
    size: int | None = None
    events: tuple[DeadLetteredEvent, ...] = field(default_factory=tuple)
    error: str | None = None  # the blob could not be read or is not a dead-letter array
    transient: bool = False  # the error may heal (download failed), as opposed to bad content


def _meta(item: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for source in (item, extra or {}):
        for key, value in source.items():
            name = _META.get(str(key).lower())
            if name is not None and name not in found:
                found[name] = value
    return found


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _time(value: object) -> datetime | None:
    try:
        return parse_time(value)
    except RotationError:
        return None


def parse_item(item: object) -> DeadLetteredEvent:
    """One array element of a dead-letter blob → the original event and its delivery metadata.

    The payload is handed on untouched (metadata keys included: the event parser ignores unknown
    keys), except that a wrapped CloudEvent is unwrapped. A non-object item becomes a payload the event
    parser rejects with a clear reason, so it is reported like any malformed event.
    """
    if not isinstance(item, Mapping):
        return DeadLetteredEvent(payload={"_invalid": type(item).__name__})
    payload: Mapping[str, Any] = item
    extra: Mapping[str, Any] | None = None
    wrapped = item.get("event")
    if isinstance(wrapped, Mapping) and "id" not in item:
        payload = wrapped
        props = next((v for k, v in item.items() if str(k).lower() == "deadletterproperties"), None)
        extra = props if isinstance(props, Mapping) else None
    meta = _meta(item, extra)
    reason = meta.get("reason")
    outcome = meta.get("last_outcome")
    return DeadLetteredEvent(
        payload=payload,
        reason=scrub(str(reason)) if reason not in (None, "") else None,
        delivery_attempts=_int(meta.get("attempts")),
        last_outcome=scrub(str(outcome)) if outcome not in (None, "") else None,
        last_status=_int(meta.get("last_status")),
        published_at=_time(meta.get("published")),
    )


def parse_blob(data: bytes) -> tuple[DeadLetteredEvent, ...]:
    """A dead-letter blob's content → its events. Raises InvalidInput when it is not one.

    Event Grid writes a JSON array; a single object is accepted too (some tools re-upload one event).
    """
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InvalidInput("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if isinstance(doc, Mapping):
        doc = [doc]
    if not isinstance(doc, list):
        raise InvalidInput(f"expected a JSON array of events, got {type(doc).__name__}")
    return tuple(parse_item(item) for item in doc)


class DeadLetterSource:
    """The dead-letter blob container of the Event Grid subscription (one container URL)."""

    def __init__(self, container_url: str, credential: TokenCredential | None, *, retry_total: int | None = None,
                 connection_verify: str | bool | None = None, timeout: float | None = 30.0) -> None:
        """`credential` is the app's identity (role Storage Blob Data Contributor on the container). A URL
        that carries a SAS (`sig=`) authenticates with it instead, and then the identity is not used."""
        parts = urlsplit(container_url)
        if parts.scheme != "https" or not parts.netloc or parts.path.strip("/") == "":
            raise SettingsError(f"dead-letter container URL must be https://ACCOUNT.blob…/CONTAINER, got "
                                f"{redact_url(container_url)[:120]!r}")
        self._url = container_url
        self._credential = None if "sig=" in parts.query else credential
        self._retry_total = retry_total
        self._connection_verify = connection_verify
        self._timeout = timeout
        self._client_instance: Any = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The container URL without its query (safe to print)."""
        return redact_url(self._url)

    def _client(self) -> Any:
        with self._lock:
            if self._client_instance is None:
                from azure.storage.blob import ContainerClient

                kwargs: dict[str, Any] = {}
                if self._retry_total is not None:
                    kwargs["retry_total"] = self._retry_total
                if self._connection_verify is not None:
                    kwargs["connection_verify"] = self._connection_verify
                if self._timeout:
                    kwargs["connection_timeout"] = self._timeout
                    kwargs["read_timeout"] = self._timeout
                try:
                    self._client_instance = ContainerClient.from_container_url(
                        self._url, credential=self._credential, **kwargs)
                except ValueError as exc:
                    raise SettingsError(f"dead-letter container URL {self.url!r}: {scrub(str(exc))}") from None
            return self._client_instance

    def _options(self) -> dict[str, Any]:
        """Per-operation `timeout`: for azure-storage-blob the server-side limit, in whole seconds."""
        return {"timeout": max(1, int(self._timeout))} if self._timeout else {}

    @staticmethod
    def _fail(exc: Exception, what: str) -> RotationError:
        return exc if isinstance(exc, RotationError) else translate(exc, what)

    def list(self, since: date | None = None) -> list[DeadLetter]:
        """Every dead-letter blob (last modified on or after `since`, UTC), oldest first, with its events.

        Listing failures raise (translated); a blob that cannot be downloaded or parsed is returned with
        `error` set, so the caller reports it and carries on.
        """
        what = f"listing dead-letter blobs in {self.url}"
        try:
            blobs = [b for b in self._client().list_blobs(**self._options())
                     if since is None or b.last_modified is None or _utc(b.last_modified).date() >= since]
        except (RotationError, _azure_error()) as exc:
            error = self._fail(exc, what)
            if isinstance(error, NotFound):
                raise NotFound(f"{what} failed: the container does not exist") from None
            raise error from None
        blobs.sort(key=lambda b: (_utc(b.last_modified) if b.last_modified else datetime.min.replace(tzinfo=UTC),
                                  b.name))
        return [self._read(b.name, _utc(b.last_modified) if b.last_modified else None, b.size) for b in blobs]

    def _read(self, name: str, last_modified: datetime | None, size: int | None) -> DeadLetter:
        if size is not None and size > MAX_BLOB_BYTES:
            return DeadLetter(name, last_modified, size,
                              error=f"{size} bytes is larger than a dead-letter blob can be ({MAX_BLOB_BYTES})")
        what = f"download of dead-letter blob {name!r}"
        try:
            data = self._client().download_blob(name, **self._options()).readall()
        except (RotationError, _azure_error()) as exc:
            error = self._fail(exc, what)
            return DeadLetter(name, last_modified, size, error=str(error), transient=not isinstance(error, NotFound))
        try:
            events = parse_blob(bytes(data))
        except InvalidInput as exc:
            return DeadLetter(name, last_modified, size, error=str(exc))
        return DeadLetter(name, last_modified, size, events)

    def delete(self, name: str) -> None:
        """Delete one blob (after its events were replayed). Already gone is fine: another replay won."""
        what = f"delete of dead-letter blob {name!r}"
        try:
            self._client().delete_blob(name, **self._options())
        except (RotationError, _azure_error()) as exc:
            error = self._fail(exc, what)
            if isinstance(error, NotFound):
                return
            raise error from None

    def close(self) -> None:
        with self._lock:
            client, self._client_instance = self._client_instance, None
        if client is not None:
            client.close()


def _azure_error() -> type[Exception]:
    """azure-core's base exception, imported only when an exception is being matched."""
    from azure.core.exceptions import AzureError

    return AzureError


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)

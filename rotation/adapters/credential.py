"""The app's Azure identity, and the azure-core plumbing the ARM and Key Vault adapters share.

Every SDK import is lazy: importing this module imports no Azure package (an import error at load
time would hide every function of the app).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from rotation.core.errors import (
    AccessDenied,
    NotFound,
    PermanentError,
    RotationError,
    UpstreamError,
    UpstreamRejected,
)
from rotation.core.redact import redact

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, AccessTokenInfo, TokenCredential, TokenRequestOptions

T = TypeVar("T")

_MAX_DETAIL = 300
# Without a deadline in scope (e.g. a status page), a token request still ends after this long.
DEFAULT_TOKEN_SECONDS = 20.0
# msal/managed_identity.py `_obtain_token_on_app_service` turns the endpoint's error body
# `{"statusCode", "message"}` into "(invalid_scope) {statusCode}, {message}"; azure-identity 1.27 raises
# it as CredentialUnavailableError, so the status is only in the text.
_IDENTITY_STATUS = re.compile(r"Token request error: \([a-z_]+\) (\d{3}),")
_token_deadline: ContextVar[float | None] = ContextVar("rotation_token_deadline", default=None)


def build_credential(client_id: str | None = None, *, developer: bool = False,
                     authority: str | None = None, retry_total: int | None = None,
                     request_timeout: float = DEFAULT_TOKEN_SECONDS) -> TokenCredential:
    """The app's identity, with every token request bounded by the caller's deadline.

    By default `ManagedIdentityCredential` (user-assigned when `client_id` is given, which settings take
    from `AZURE_CLIENT_ID`): in Azure nothing else may answer, and `DefaultAzureCredential` would, when
    the identity endpoint fails, walk developer credentials (CLI, PowerShell, azd subprocesses).
    `developer=True` is for the CLI on an operator's machine only: `DefaultAzureCredential` without the
    interactive and shared-cache credentials; `authority` is the cloud's login host. `retry_total`:
    azure-core retries of the identity request (default: its own; the deadline bounds them anyway).
    `request_timeout`: connect and read timeout of each attempt. The caller stops waiting at its
    deadline, but the abandoned request keeps its thread until the socket gives up: azure-core's default
    read timeout (300 s) would leave a thread behind for minutes per call during an endpoint stall.
    """
    inner: Any
    options: dict[str, Any] = {"connection_timeout": request_timeout, "read_timeout": request_timeout}
    if retry_total is not None:
        options["retry_total"] = retry_total
    if developer:
        from azure.identity import DefaultAzureCredential

        kwargs: dict[str, Any] = {
            "exclude_interactive_browser_credential": True,
            "exclude_shared_token_cache_credential": True,
            "exclude_visual_studio_code_credential": True,
        }
        if client_id:
            kwargs["managed_identity_client_id"] = client_id
        if authority:
            kwargs["authority"] = authority
        inner = DefaultAzureCredential(**kwargs, **options)
    else:
        from azure.identity import ManagedIdentityCredential

        inner = ManagedIdentityCredential(client_id=client_id, **options)
    return BoundedCredential(inner)


@contextmanager
def token_deadline(timeout: float | None) -> Iterator[None]:
    """Token requests made (by azure-core or the Kubernetes refresher) in this block end within
    `timeout` seconds: the SDK call's own timeout does not cover its credential."""
    if timeout is None:
        yield
        return
    reset = _token_deadline.set(time.monotonic() + max(timeout, 0.0))
    try:
        yield
    finally:
        _token_deadline.reset(reset)


class BoundedCredential:
    """A `TokenCredential` whose requests end by the deadline in scope (`token_deadline`).

    azure-identity gives a managed-identity request no overall timeout (MSAL retries 5xx and 429 with
    backoff; a stalled endpoint holds the caller for as long as the socket allows), and azure-core asks
    the credential outside the per-call `timeout`. The request runs on its own daemon thread and the
    caller stops waiting at the deadline; an abandoned request finishes in the background (filling
    MSAL's cache for the next caller).
    Failures become core errors: endpoint 5xx/429/timeouts are transient (`UpstreamError`), a 4xx or a
    host without any identity is `AccessDenied`.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    @property
    def inner(self) -> Any:
        return self._inner

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        def request() -> AccessToken:
            return self._inner.get_token(*scopes, **kwargs)  # type: ignore[no-any-return]

        return self._bounded(request, scopes)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        if hasattr(self._inner, "get_token_info"):
            def request() -> AccessTokenInfo:
                return self._inner.get_token_info(*scopes, options=options)  # type: ignore[no-any-return]

            return self._bounded(request, scopes)
        from azure.core.credentials import AccessTokenInfo

        token = self.get_token(*scopes, **dict(options or {}))
        return AccessTokenInfo(token.token, token.expires_on)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()

    def _bounded(self, request: Callable[[], T], scopes: tuple[str, ...]) -> T:
        end = _token_deadline.get()
        limit = DEFAULT_TOKEN_SECONDS if end is None else end - time.monotonic()
        what = f"could not get a token for {', '.join(scopes)[:120]} from the app's identity"
        if limit <= 0:
            raise UpstreamError(f"{what}: the deadline has passed")
        call = _Call(request)
        # A daemon thread: an abandoned request must not hold the worker process at exit either.
        # Bound to the invocation like every pool thread (azure-identity logs its failures there).
        from rotation.runtime.attribution import attributed

        threading.Thread(target=attributed(call.run), name="identity-token", daemon=True).start()
        if not call.done.wait(limit):
            raise UpstreamError(f"{what}: no answer within {limit:.1f}s (the deadline)")
        if call.error is not None:
            if isinstance(call.error, RotationError):
                raise call.error
            raise identity_error(call.error, what) from None
        return call.result  # type: ignore[return-value]


class _Call:
    """One token request run on its own thread; the caller waits on `done` for as long as it may."""

    def __init__(self, request: Callable[[], object]) -> None:
        self._request = request
        self.done = threading.Event()
        self.result: object = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.result = self._request()
        except Exception as exc:  # noqa: BLE001 - handed to the waiting caller
            self.error = exc
        finally:
            self.done.set()


def identity_error(exc: Exception, what: str) -> RotationError:
    """A credential's exception as a core error (never its token; messages scrubbed)."""
    name = type(exc).__name__
    text = scrub(str(exc))
    match = _IDENTITY_STATUS.search(str(exc))
    status = int(match.group(1)) if match else getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        if status in (408, 429) or status >= 500:
            return UpstreamError(f"{what}: identity endpoint answered {status} ({text})")
        return AccessDenied(f"{what}: identity endpoint answered {status} ({text})")
    cause = exc.__cause__ or exc.__context__
    transient = ("ServiceRequestError", "ServiceResponseError", "ConnectionError", "Timeout", "ReadTimeout")
    if any(type(c).__name__ in transient for c in (exc, cause) if c is not None):
        return UpstreamError(f"{what}: identity endpoint unreachable ({name})")
    if name == "CredentialUnavailableError":
        return AccessDenied(f"{what}: no managed identity is available here ({text})")
    return UpstreamError(f"{what} ({name}: {text})")


def call_options(timeout: float | None, what: str) -> dict[str, Any]:
    """Per-call azure-core options bounding one SDK call (retries included) by `timeout` seconds.
    The credential is asked outside them: wrap the call in `token_deadline(timeout)` as well."""
    if timeout is None:
        return {}
    if timeout <= 0:
        raise UpstreamError(f"{what} not attempted: the deadline has passed")
    return {"connection_timeout": timeout, "read_timeout": timeout, "timeout": timeout}


def scrub(text: str) -> str:
    """An upstream message made safe for logs: token-shaped text removed, length bounded (only a head
    of a long message is read: the rest would be cut anyway)."""
    cleaned = redact(" ".join(text[: _MAX_DETAIL * 16].split()))
    return cleaned if len(cleaned) <= _MAX_DETAIL else cleaned[: _MAX_DETAIL - 1] + "…"


def _detail(exc: Exception) -> tuple[int | None, str | None, str | None]:
    """(status, error code, error message) of an azure-core exception, as far as it knows them."""
    status = getattr(exc, "status_code", None)
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    if code is None:
        response = getattr(exc, "response", None)
        reason = getattr(response, "reason", None)
        code = str(reason).replace(" ", "") if reason else None
    return (int(status) if isinstance(status, int) else None,
            str(code) if code else None,
            str(message) if message else None)


def translate(exc: Exception, what: str) -> RotationError:
    """Maps an azure-core / azure-identity exception to a core error; `what` names the operation and
    object ("ARM generateToken for apim-x/gw-1"). Never includes a token value."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    status, code, message = _detail(exc)
    text = _head(what, status, code) + _tail(message)
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return NotFound(text)
    if isinstance(exc, ClientAuthenticationError) and status is None:
        # Raised by the credential itself (no HTTP status of the target service).
        return AccessDenied(f"{what} failed: could not get a token for the app's identity "
                            f"({scrub(str(exc))})")
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return AccessDenied(text)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        kind = type(exc).__name__
        return UpstreamError(f"{what} failed: {kind} ({scrub(str(exc))})")
    if isinstance(exc, HttpResponseError) and status is not None:
        return _by_status(status, text)
    return UpstreamError(f"{what} failed: {type(exc).__name__} ({scrub(str(exc))})")


def _head(what: str, status: int | None, code: str | None) -> str:
    code = scrub(str(code))[:80] if code else code  # upstream text too (an error code may echo the request)
    head = f"{what} failed: {status} {code}" if status is not None else f"{what} failed"
    if status is None and code:
        head = f"{what} failed: {code}"
    return head


def _tail(message: str | None) -> str:
    return f" ({scrub(message)})" if message else ""


def _by_status(status: int, text: str) -> RotationError:
    """An HTTP error response the SDK has no narrower exception for."""
    if status in (408, 409, 423, 429) or status >= 500:
        return UpstreamError(text)
    if status in (400, 422):
        # The request came from the registry and stored state, not the caller: a server-side problem.
        return UpstreamRejected(text)
    return PermanentError(text)


def is_azure_error(exc: BaseException) -> bool:
    from azure.core.exceptions import AzureError

    return isinstance(exc, AzureError)

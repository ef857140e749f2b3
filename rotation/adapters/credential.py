"""The app's Azure identity, and the azure-core plumbing the ARM and Key Vault adapters share.

Every SDK import is lazy: importing this module imports no Azure package (an import error at load
time would hide every function of the app).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rotation.core.errors import (
    AccessDenied,
    InvalidInput,
    NotFound,
    PermanentError,
    RotationError,
    UpstreamError,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

# Anything shaped like a gateway token (or its portal form) is cut out of upstream error texts.
_TOKENISH = re.compile(r"(GatewayKey\s+)?[^&\s\"']{1,256}&\d{12}&[A-Za-z0-9+/=_-]{8,}")
_MAX_DETAIL = 300


def build_credential(client_id: str | None = None) -> TokenCredential:
    """`DefaultAzureCredential`: inside Functions this is the managed identity (`IDENTITY_ENDPOINT`).

    `client_id` selects a user-assigned identity; None keeps azure-identity's own convention
    (`AZURE_CLIENT_ID`, else the system-assigned identity). Interactive and developer-tool credentials
    that can prompt or pick up a workstation login by surprise are excluded.
    """
    from azure.identity import DefaultAzureCredential

    kwargs: dict[str, Any] = {
        "exclude_interactive_browser_credential": True,
        "exclude_shared_token_cache_credential": True,
        "exclude_visual_studio_code_credential": True,
    }
    if client_id:
        kwargs["managed_identity_client_id"] = client_id
    return DefaultAzureCredential(**kwargs)


def call_options(timeout: float | None, what: str) -> dict[str, Any]:
    """Per-call azure-core options bounding one SDK call (retries included) by `timeout` seconds."""
    if timeout is None:
        return {}
    if timeout <= 0:
        raise UpstreamError(f"{what} not attempted: the deadline has passed")
    return {"connection_timeout": timeout, "read_timeout": timeout, "timeout": timeout}


def scrub(text: str) -> str:
    """An upstream message made safe for logs: token-shaped text removed, length bounded."""
    cleaned = _TOKENISH.sub("<redacted>", " ".join(text.split()))
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
    head = f"{what} failed: {status} {code}" if status is not None else f"{what} failed"
    if status is None and code:
        head = f"{what} failed: {code}"
    tail = f" ({scrub(message)})" if message else ""
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return NotFound(head + tail)
    if isinstance(exc, ClientAuthenticationError) and status is None:
        # Raised by the credential itself (no HTTP status of the target service).
        return AccessDenied(f"{what} failed: could not get a token for the app's identity "
                            f"({scrub(str(exc))})")
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return AccessDenied(head + tail)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        kind = type(exc).__name__
        return UpstreamError(f"{what} failed: {kind} ({scrub(str(exc))})")
    if isinstance(exc, HttpResponseError) and status is not None:
        if status in (408, 409, 423, 429) or status >= 500:
            return UpstreamError(head + tail)
        if status in (400, 422):
            return InvalidInput(head + tail)
        return PermanentError(head + tail)
    return UpstreamError(f"{what} failed: {type(exc).__name__} ({scrub(str(exc))})")


def is_azure_error(exc: BaseException) -> bool:
    from azure.core.exceptions import AzureError

    return isinstance(exc, AzureError)

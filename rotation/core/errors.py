"""Error taxonomy: what went wrong, in terms each entry point maps to its own answer.

*Permanent* means retrying the same input cannot succeed by itself; *transient* means a later retry
may. Adapters translate SDK exceptions into these so the service never imports an SDK. Messages must
never contain a token value.

What each entry point does with them (rotation/triggers.py, rotation/cli.py):
- The Event Grid handler acknowledges (logs and returns) only what no redelivery can change: an event
  it cannot parse or does not act on, `InvalidInput`, and `SettingsError`. Every other failure is
  raised so Event Grid redelivers and finally dead-letters the event, permanent ones included
  (`AccessDenied`, `NotFound`, `UpstreamRejected`, ...): an operator fixes the role assignment or the
  object, then a redelivery or the dead-letter replay succeeds. `SettingsPending` is raised too, and so
  is a reconcile that ran but left a target failed.
- HTTP: `UnknownGateway` 404, `InvalidInput` 400, `SettingsPending` and other transient errors 503 with
  `Retry-After`, `SettingsError` 500, any other permanent error 502.
- CLI: permanent errors exit 2, transient ones 1.
"""

from __future__ import annotations


class RotationError(Exception):
    """Base of every error the rotator raises on purpose."""


class PermanentError(RotationError):
    """Retrying the same input cannot succeed."""


class TransientError(RotationError):
    """Retrying later may succeed (5xx, 429, timeouts, connection failures, conflicts)."""


class InvalidInput(PermanentError):
    """A value from outside (id, name, event, request body) is malformed or hostile."""


class InvalidGatewayId(InvalidInput):
    """Not a well-formed ARM id of an APIM self-hosted gateway."""


class InvalidToken(InvalidInput):
    """Not a gateway token of the form `{gateway}&{yyyyMMddHHmm}&{signature}`."""


class InvalidEvent(InvalidInput):
    """An Event Grid / CloudEvents payload that cannot be understood."""


class RegistryError(PermanentError):
    """The registry document is invalid; the message names the JSON path and the bad value."""


class SettingsError(PermanentError):
    """An app setting is missing or invalid; the message names the setting."""


class SettingsPending(SettingsError, TransientError):
    """A setting the platform has not resolved yet (a Key Vault reference right after a deployment):
    wrong now, likely right soon. Unhealthy like any SettingsError, but the event path lets Event Grid
    redeliver instead of acknowledging the event."""


class UnknownGateway(PermanentError):
    """The gateway is not in the registry, so the rotator has no business touching it."""


class NotFound(PermanentError):
    """An upstream object (gateway, Secret, workload) does not exist."""


class AccessDenied(PermanentError):
    """The app's identity is not allowed to do this (401/403): a deployment problem, not a blip."""


class UpstreamRejected(PermanentError):
    """ARM or Key Vault refused a request as invalid (400/422). Its content came from the registry and
    the stored state, not from the caller: a server-side problem (HTTP 502), not a bad request (400)."""


class UnusableSecret(PermanentError):
    """A token secret holds something that is not a gateway token (someone else wrote it). Server-side
    state: reported (never echoed); a forced rotation overwrites it with a fresh token."""


class SoftDeletedSecret(PermanentError):
    """The token secret is deleted but recoverable (Key Vault soft delete): its name cannot be reused
    until an operator recovers or purges it, so retrying cannot help."""


class UpstreamError(TransientError):
    """An upstream service failed in a way that may heal (5xx, 429, timeout, unreachable)."""


class Conflict(TransientError):
    """An optimistic-concurrency precondition failed (Kubernetes 409 on resourceVersion)."""


class IgnoredEvent(PermanentError):
    """A well-formed event this app does not act on (another event type)."""

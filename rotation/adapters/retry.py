"""azure-core's retry policy, made to give up instead of sleeping past the caller's deadline.

azure-core's `RetryPolicy` honours a per-call `timeout` only between attempts: it first sleeps the
whole `Retry-After` of a 429/503 (ARM sends values of tens of seconds) or its exponential backoff, and
only then notices the time is up. An event handler must answer Event Grid within its deadline, so a
retry whose wait would end after the deadline is not attempted: the last response (or error) is
returned at once, and the adapter turns it into a transient error that Event Grid redelivers.

Imported only by the adapters, inside their lazy client builders (it imports azure-core).
"""

from __future__ import annotations

import time
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import RetryPolicy

_DEADLINE = "apim_token_rotator_deadline"


class DeadlineRetryPolicy(RetryPolicy[Any, Any]):
    """`RetryPolicy` that never starts a wait it cannot finish before the call's `timeout` runs out."""

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings = super().configure_retries(options)
        settings[_DEADLINE] = time.monotonic() + float(settings["timeout"])
        return settings

    def increment(self, settings: dict[str, Any],
                  response: PipelineRequest[Any] | PipelineResponse[Any, Any] | None = None,
                  error: Exception | None = None) -> bool:
        if not super().increment(settings, response=response, error=error):
            return False
        wait = self.get_retry_after(response) if isinstance(response, PipelineResponse) else None
        if wait is None:
            wait = self.get_backoff_time(settings)
        deadline: float = settings[_DEADLINE]
        return time.monotonic() + wait < deadline


def retry_policy(retry_total: int | None = None) -> DeadlineRetryPolicy:
    """azure-core's defaults (3 retries, exponential backoff, Retry-After honoured) bounded by the deadline."""
    return DeadlineRetryPolicy() if retry_total is None else DeadlineRetryPolicy(retry_total=retry_total)

"""Outcome events: CloudEvents to an Event Grid topic, so other systems can react to rotations.

Publishing is best effort by contract: a rotation that reached every cluster must not be reported
as failed, or retried, because a notification could not be sent.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from rotation.adapters.credential import token_deadline
from rotation.boundary import clean_tree
from rotation.core.model import RotationReport
from rotation.runtime.attribution import Executor

log = logging.getLogger("rotation.outcomes")

TOKEN_ROTATED = "ApimTokenRotator.TokenRotated"  # noqa: S105 - an event type name
ROTATION_FAILED = "ApimTokenRotator.RotationFailed"
SOURCE = "/apim-token-rotator"
# The handler waits for the publish, inside its deadline: the send runs on its own thread and the
# handler waits at most what is left (capped here); connect and read share that budget, and nothing
# is retried (azure-core's RetryPolicy would sleep a whole Retry-After first). azure-eventgrid's
# basic-topic client drops constructor options, so they go with each call.
PUBLISH_TIMEOUT_SECONDS = 5.0
MIN_PUBLISH_SECONDS = 0.5
_CALL_OPTIONS: dict[str, Any] = {"retry_total": 0, "connection_timeout": PUBLISH_TIMEOUT_SECONDS / 2,
                                 "read_timeout": PUBLISH_TIMEOUT_SECONDS / 2}
# That client also hands a call's options to its CloudEvent model, which logs a warning for each one
# ("retry_total is not a known attribute ... and will be ignored"); only those records are dropped.
_MODEL_LOGGER = "azure.eventgrid._legacy._generated._serialization"


class _DropOptionWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.args and isinstance(record.args, tuple) and record.args[0] in _CALL_OPTIONS
                    and "is not a known attribute" in str(record.msg))


_DROP_OPTION_WARNINGS = _DropOptionWarnings()


class EventGridOutcomePublisher:
    def __init__(self, endpoint: str, credential: Any) -> None:
        self._endpoint = endpoint
        self._credential = credential
        self._client: Any = None
        self._pool: Executor | None = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from azure.eventgrid import EventGridPublisherClient

                logging.getLogger(_MODEL_LOGGER).addFilter(_DROP_OPTION_WARNINGS)  # once: same instance
                self._client = EventGridPublisherClient(self._endpoint, self._credential)
            return self._client

    def publish(self, report: RotationReport, timeout: float | None = None) -> None:
        budget = PUBLISH_TIMEOUT_SECONDS if timeout is None else min(timeout, PUBLISH_TIMEOUT_SECONDS)
        if budget < MIN_PUBLISH_SECONDS:
            log.warning("outcome event for %s not published: the deadline has passed", report.gateway_id)
            return
        with self._lock:
            if self._pool is None:
                self._pool = Executor(max_workers=2, thread_name_prefix="outcome")
        future = self._pool.submit(self._send, report, budget)
        try:
            future.result(timeout=budget)
        except TimeoutError:
            log.warning("outcome event for %s not published within %.1f s (the deadline)", report.gateway_id,
                        budget)
        except Exception as exc:  # noqa: BLE001 - best effort by contract
            log.warning("could not publish the outcome event for %s: %s", report.gateway_id,
                        type(exc).__name__)

    def _send(self, report: RotationReport, budget: float) -> None:
        from azure.core.messaging import CloudEvent

        event_type = TOKEN_ROTATED if report.ok else ROTATION_FAILED
        # Leaves the process: upstream text in the report (target errors) goes through the boundary.
        event = CloudEvent(source=SOURCE, type=event_type, subject=report.gateway_id,
                           data=clean_tree(report.to_dict()))
        options = {**_CALL_OPTIONS, "connection_timeout": budget / 2, "read_timeout": budget / 2}
        # azure-core asks the credential outside the call's timeouts: the same budget bounds it, or a
        # stalled identity endpoint would hold this thread (and the next events queued behind it) for
        # the credential's own default instead of the caller's remaining time.
        with token_deadline(budget):
            self._get_client().send([event], **options)


def build_publisher(endpoint: str | None, credential: Any) -> EventGridOutcomePublisher | None:
    return EventGridOutcomePublisher(endpoint, credential) if endpoint else None

"""An HTTPS Event Grid custom-topic fake, for the outcome events the app publishes with azure-eventgrid.

`EventGridPublisherClient(endpoint, credential)` POSTs a JSON array to the topic endpoint
(`https://<host:port>/api/events?api-version=…`) with `Content-Type:
application/cloudevents-batch+json` (CloudEvents 1.0) or `application/json` (Event Grid schema), and a
bearer token for `https://eventgrid.azure.net/.default` (or an `aeg-sas-key` / `aeg-sas-token`
header). The fake checks the auth, checks the shape (required CloudEvents / Event Grid fields, 400
otherwise) and keeps the events.

Control (no auth, not in the call log): `GET /_devstack/events` → `[{"schema": "cloudevents" |
"eventgrid", "event": {…}}]`; `DELETE /_devstack/events`; plus the common faults/calls routes.
"""

from __future__ import annotations

import secrets
import ssl
import threading
from collections.abc import Callable
from typing import Any

from devstack.httpfake import FakeServer, HttpError, Request, Response, empty_response, json_response

EVENTGRID_RESOURCE = "https://eventgrid.azure.net"
TOPIC_PATH = "/api/events"
_CLOUDEVENT_REQUIRED = ("specversion", "id", "source", "type")
_EVENTGRID_REQUIRED = ("id", "subject", "eventType", "eventTime", "data", "dataVersion")

Authorizer = Callable[[str | None], bool]


class EventGridFake(FakeServer):
    def __init__(self, ssl_context: ssl.SSLContext, *, authorize: Authorizer | None = None,
                 access_key: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__("eventgrid", host=host, port=port, ssl_context=ssl_context)
        self._authorize = authorize
        self.access_key = access_key or secrets.token_urlsafe(32)
        self._events: list[dict[str, Any]] = []
        self._state = threading.Lock()
        self.route("POST", TOPIC_PATH, self._publish)
        self.control("GET", "/_devstack/events", lambda r: json_response(200, self.events()))
        self.control("DELETE", "/_devstack/events", self._clear)

    @property
    def endpoint(self) -> str:
        """The topic endpoint (`OUTCOME_TOPIC_ENDPOINT`)."""
        return self.url + TOPIC_PATH

    def events(self) -> list[dict[str, Any]]:
        with self._state:
            return [dict(e) for e in self._events]

    def _clear(self, request: Request) -> Response:
        with self._state:
            self._events.clear()
        return empty_response(204)

    def _authenticate(self, request: Request) -> None:
        if request.header("aeg-sas-key") == self.access_key:
            return
        token = request.bearer
        ok = bool(token) if self._authorize is None else self._authorize(token)
        if not ok:
            raise HttpError(401, "Unauthorized", "The request authorization is missing or invalid.")

    def _publish(self, request: Request) -> Response:
        self._authenticate(request)
        content_type = (request.header("Content-Type") or "").lower()
        schema = "cloudevents" if "cloudevents" in content_type else "eventgrid"
        batch = request.json()
        if not isinstance(batch, list) or not batch:
            raise HttpError(400, "BadRequest", "the body must be a non-empty JSON array of events")
        required = _CLOUDEVENT_REQUIRED if schema == "cloudevents" else _EVENTGRID_REQUIRED
        for index, event in enumerate(batch):
            if not isinstance(event, dict):
                raise HttpError(400, "BadRequest", f"event [{index}] is not an object")
            missing = [name for name in required if name not in event]
            if missing:
                raise HttpError(400, "BadRequest", f"event [{index}] lacks required field(s) {missing}")
        with self._state:
            self._events.extend({"schema": schema, "event": event} for event in batch)
        return empty_response(200)


def identity_authorizer(identity: Any) -> Authorizer:
    """Accept tokens the identity fake issued for `https://eventgrid.azure.net`."""
    def authorize(token: str | None) -> bool:
        return bool(identity.accepts(token, EVENTGRID_RESOURCE))
    return authorize

"""An HTTPS fake of the Application Insights ingestion endpoint (Breeze), for the exporter's real output.

azure-monitor-opentelemetry-exporter (1.0.0b58; Azure/azure-sdk-for-python sdk/monitor) sends every
signal with one operation: `POST {IngestionEndpoint}/v2.1/track` (`_generated/exporter/_client.py`:
base URL `{host}/{apiVersion}`, api version `v2.1`; `_operations.py` `build_azure_monitor_track_request`:
path `/track`), body a JSON array of TelemetryItem envelopes (`models`: `name`, `time`, `iKey`, `tags`
such as `ai.operation.id` / `ai.cloud.role`, `data.baseType` = MessageData | RemoteDependencyData |
MetricsData | RequestData | ExceptionData, `data.baseData`), and reads back a TrackResponse
(`itemsReceived`, `itemsAccepted`, `errors`). Gzip bodies and JSON lines are accepted too (the
classic SDKs' form).

The fake keeps every envelope; `GET /_devstack/telemetry` returns them, `DELETE` clears them. The
connection string to give the exporter is `connection_string`; with Entra ID auth on (the deployed
app), a bearer token is also accepted, but the fake does not require one.
"""

from __future__ import annotations

import gzip
import json
import ssl
import threading
from typing import Any

from devstack.httpfake import FakeServer, HttpError, Request, Response, empty_response, json_response

TRACK_PATH = "/v2.1/track"
INSTRUMENTATION_KEY = "00000000-0000-4000-8000-00000000a1b2"


class AppInsightsFake(FakeServer):
    def __init__(self, ssl_context: ssl.SSLContext, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__("appinsights", host=host, port=port, ssl_context=ssl_context)
        self._items: list[dict[str, Any]] = []
        self._state = threading.Lock()
        self._arrived = threading.Condition(self._state)
        self.route("POST", TRACK_PATH, self._track)
        self.control("GET", "/_devstack/telemetry", lambda r: json_response(200, self.items()))
        self.control("DELETE", "/_devstack/telemetry", self._clear)

    @property
    def connection_string(self) -> str:
        return f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint={self.url}/;LiveEndpoint={self.url}/"

    def items(self) -> list[dict[str, Any]]:
        with self._state:
            return [dict(i) for i in self._items]

    def wait_for(self, predicate: Any, timeout: float) -> list[dict[str, Any]]:
        """Block until `predicate(items)` holds (the exporters batch: seconds apart); returns the items."""
        with self._arrived:
            self._arrived.wait_for(lambda: predicate(self._items), timeout=timeout)
            return [dict(i) for i in self._items]

    def _clear(self, request: Request) -> Response:
        with self._state:
            self._items.clear()
        return empty_response(204)

    def _track(self, request: Request) -> Response:
        body = request.body
        if (request.header("Content-Encoding") or "").lower() == "gzip":
            body = gzip.decompress(body)
        text = body.decode("utf-8").strip()
        try:
            parsed = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()
                                                                     if line.strip()]
        except ValueError:
            raise HttpError(400, "BadRequest", "the body must be a JSON array (or JSON lines) of envelopes") from None
        errors = [{"index": i, "statusCode": 400, "message": "missing name, time, iKey or data"}
                  for i, item in enumerate(parsed)
                  if not isinstance(item, dict) or not {"name", "time", "iKey", "data"} <= item.keys()]
        with self._arrived:
            self._items.extend(item for i, item in enumerate(parsed) if i not in {e["index"] for e in errors})
            self._arrived.notify_all()
        return json_response(200 if not errors else 206, {
            "itemsReceived": len(parsed), "itemsAccepted": len(parsed) - len(errors), "errors": errors})

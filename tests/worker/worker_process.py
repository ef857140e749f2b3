"""The worker side of the worker tier: Microsoft's worker library driven by the host's protocol messages.

Run as `python -m tests.worker.worker_process PROTO_OUT APP_DIR`. It reads base64 `StreamingMessage`
bytes from stdin, one a line (what the host sends over gRPC), hands each to
`azure_functions_runtime` (the worker library the Python worker loads: `worker_init_request`,
`functions_metadata_request`, `function_load_request`, `invocation_request`) and writes every
message the worker would send back, base64 a line: the response and each `RpcLog`.

The log handler is the worker's own rule for attribution, which the library leaves to the process
that loads it. A record gets `invocation_id` only from the logging thread's state: the classic
worker (Azure/azure-functions-python-worker, azure_functions_worker/dispatcher.py `on_logging` →
`get_current_invocation_id`) reads the thread-local `_invocation_id_local` (the object
`context.thread_local_storage` returns); the proxy worker reads the library's context variable
`invocation_id_cv` first and the thread-local after it. A log is written under the classic rule,
the stricter one (no context variable); `propertiesMap["proxy_invocation_id"]` carries what the
proxy rule finds, so the test can assert both.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def _protos(out: Path) -> SimpleNamespace:
    sys.path.insert(0, str(out))
    import FunctionRpc_pb2
    from shared import NullableTypes_pb2

    names = {**vars(NullableTypes_pb2), **vars(FunctionRpc_pb2)}
    return SimpleNamespace(**{k: v for k, v in names.items() if not k.startswith("__")})


class _Wire:
    """stdout as the gRPC stream back to the host; nothing else may write to it."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # prints go to stderr, not into the stream
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        line = base64.b64encode(message.SerializeToString()).decode()
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


class RpcLogHandler(logging.Handler):
    def __init__(self, wire: _Wire, protos: SimpleNamespace, request_id: str) -> None:
        super().__init__(logging.DEBUG)
        self.wire, self.protos, self.request_id = wire, protos, request_id
        from azure_functions_runtime import invocation_id_cv
        from azure_functions_runtime.bindings.context import _invocation_id_local

        self.local, self.cv = _invocation_id_local, invocation_id_cv

    def emit(self, record: logging.LogRecord) -> None:
        p = self.protos
        classic = getattr(self.local, "invocation_id", None)
        proxy = self.cv.get() or classic
        level = (p.RpcLog.Error if record.levelno >= logging.ERROR else p.RpcLog.Warning
                 if record.levelno >= logging.WARNING else p.RpcLog.Information
                 if record.levelno >= logging.INFO else p.RpcLog.Debug)
        system = record.name.startswith(("azure_functions_runtime", "azure.functions"))
        log = p.RpcLog(level=level, message=self.format(record), category=record.name,
                       log_category=p.RpcLog.System if system else p.RpcLog.User,
                       propertiesMap={"thread": p.TypedData(string=threading.current_thread().name),
                                       "proxy_invocation_id": p.TypedData(string=proxy or "")})
        if classic:
            log.invocation_id = classic
        self.wire.send(p.StreamingMessage(request_id=self.request_id, rpc_log=log))


def main(out: str, app_dir: str) -> None:
    wire = _Wire()
    protos = _protos(Path(out))
    import azure_functions_runtime as runtime

    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(RpcLogHandler(wire, protos, "worker-tier"))
    logging.getLogger("rotation").setLevel(logging.DEBUG)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    properties = {"host": "127.0.0.1", "protos": protos}
    for line in sys.stdin:
        message = protos.StreamingMessage.FromString(base64.b64decode(line))
        kind = message.WhichOneof("content")
        request = SimpleNamespace(name=kind, request=message, properties=properties)
        if kind == "worker_init_request":
            runtime.start_threadpool_executor()
        response = loop.run_until_complete(getattr(runtime, kind)(request))
        field = kind.replace("_request", "_response")
        if kind == "functions_metadata_request":
            field = "function_metadata_response"
        wire.send(protos.StreamingMessage(request_id=message.request_id, **{field: response}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

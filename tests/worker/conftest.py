"""Worker tier: the app run by Microsoft's Python worker library, as the Functions host drives it.

The host's side of the gRPC stream lives here: the protocol messages are compiled at test time from
the host's own .proto files (Azure/azure-functions-language-worker-protobuf, MIT; the copy in
tests/data/functions-rpc) with grpcio-tools; no generated code is vendored. The worker side (tests/worker/worker_process.py) is a separate
process, as on Azure: `azure_functions_runtime` indexes and imports the app there, and OpenTelemetry
configured there cannot leak into other tests. The backend is the devstack (tests/e2e fixtures).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from devstack import stack as devstack
from tests.e2e.conftest import World, stack  # noqa: F401 - the e2e tier's session devstack, reused

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "tests" / "data" / "functions-rpc"
PROTO_FILES = ("FunctionRpc.proto", "identity/ClaimsIdentityRpc.proto", "shared/NullableTypes.proto")


def proto_dir() -> Path:
    return PROTO_DIR


@pytest.fixture(scope="session")
def proto_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("grpc_tools", reason="the worker tier needs grpcio-tools (make venv installs it)")
    pytest.importorskip("azure_functions_runtime", reason="the worker tier needs azure-functions-runtime")
    out = tmp_path_factory.mktemp("functions-rpc")
    source = proto_dir()
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{source}", f"--python_out={out}",
                    *PROTO_FILES], check=True, cwd=source, capture_output=True, timeout=120)
    for package in ("identity", "shared"):
        (out / package / "__init__.py").touch()
    return out


@pytest.fixture(scope="session")
def rpc(proto_out: Path) -> SimpleNamespace:
    """The host's message classes (FunctionRpc_pb2 and the types it imports), as one namespace."""
    sys.path.insert(0, str(proto_out))
    try:
        import FunctionRpc_pb2
        from shared import NullableTypes_pb2
    finally:
        sys.path.remove(str(proto_out))
    modules: tuple[ModuleType, ...] = (NullableTypes_pb2, FunctionRpc_pb2)
    return SimpleNamespace(**{k: v for m in modules for k, v in vars(m).items() if not k.startswith("__")})


class Worker:
    """The host's end of one worker process's stream."""

    def __init__(self, rpc: SimpleNamespace, proto_out: Path, env: Mapping[str, str]) -> None:
        self.rpc = rpc
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.worker.worker_process", str(proto_out), str(ROOT)],
            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.functions: dict[str, Any] = {}

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def call(self, **content: Any) -> tuple[Any, list[Any]]:
        """Send one StreamingMessage; return the worker's response and the RpcLogs sent before it."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request_id = uuid.uuid4().hex
        message = self.rpc.StreamingMessage(request_id=request_id, **content)
        self.proc.stdin.write(base64.b64encode(message.SerializeToString()).decode() + "\n")
        self.proc.stdin.flush()
        logs = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("the worker exited:\n" + "".join(self.stderr[-40:]))
            reply = self.rpc.StreamingMessage.FromString(base64.b64decode(line))
            kind = reply.WhichOneof("content")
            if kind == "rpc_log":
                logs.append(reply.rpc_log)
                continue
            return getattr(reply, kind), logs

    def start(self) -> tuple[Any, Any]:
        """What the host does first: init (the library indexes the app there), metadata, one load each."""
        init, _ = self.call(worker_init_request=self.rpc.WorkerInitRequest(
            host_version="4.1040.0", function_app_directory=str(ROOT),
            capabilities={"RpcHttpBodyOnly": "true", "TypedDataCollection": "true"}))
        metadata, _ = self.call(functions_metadata_request=self.rpc.FunctionsMetadataRequest(
            function_app_directory=str(ROOT)))
        for meta in metadata.function_metadata_results:
            self.functions[meta.name] = meta
            loaded, _ = self.call(function_load_request=self.rpc.FunctionLoadRequest(
                function_id=meta.function_id, metadata=meta))
            assert loaded.result.status == self.rpc.StatusResult.Success, loaded.result.exception.message
        return init, metadata

    def invoke(self, function: str, inputs: Mapping[str, Any], *,
               trace_parent: str = "") -> tuple[str, Any, list[Any]]:
        """One InvocationRequest as the host sends it; returns (invocation id, response, logs)."""
        invocation_id = str(uuid.uuid4())
        request = self.rpc.InvocationRequest(
            invocation_id=invocation_id, function_id=self.functions[function].function_id,
            input_data=[self.rpc.ParameterBinding(name=name, data=data) for name, data in inputs.items()],
            trace_context=self.rpc.RpcTraceContext(trace_parent=trace_parent))
        response, logs = self.call(invocation_request=request)
        return invocation_id, response, logs

    def json_input(self, value: Any) -> Any:
        return self.rpc.TypedData(json=json.dumps(value))

    def http_input(self, method: str, path: str, params: Mapping[str, str] | None = None,
                   body: bytes = b"") -> Any:
        return self.rpc.TypedData(http=self.rpc.RpcHttp(
            method=method, url=f"https://rotator.example/api/{path}",
            headers={"content-type": "application/json"}, params=dict(params or {}),
            body=self.rpc.TypedData(bytes=body)))

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def started(rpc: SimpleNamespace, proto_out: Path, env: Mapping[str, str]) -> Iterator[Worker]:
    worker = Worker(rpc, proto_out, env)
    try:
        yield worker
    finally:
        worker.stop()


def stack_env(running: devstack.Stack, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "APPLICATIONINSIGHTS", "PYTHON_"))}
    return {**base, **running.settings, **extra}


@pytest.fixture
def world(stack: devstack.Stack) -> World:  # noqa: F811 - the imported fixture
    return World(stack)

"""`ClusterClient` / `Clusters` over the official `kubernetes` client (regenerated, v37).

Two ways to reach a cluster (registry `auth`):
- `aks`: an Entra ID token of the app's identity for the AKS server application, one for every
  cluster, renewed before it expires and put on each request by `refresh_api_key_hook`; the cluster
  CA comes from the registry's `caData` (kept in memory, no temp file).
- `kubeconfig`: the kubeconfig text kept in Key Vault (the configuration vault), read by the
  cluster's first call, accepted only in the safe shape of `rotation.adapters.kubeconfig` and turned
  into a client from that shape alone.

One client per cluster lives as long as the worker (`KubernetesClusters`), so a reconcile finds its
connections open. Every call ends within its `timeout`, whatever it has to do first (build the
client, read the kubeconfig, get the token) and however its connect fails (`KubernetesClusterClient._call`).

The app's identity is least-privilege (infra/k8s/role.yaml): `get`/`patch` on one Secret and on the
workloads it restarts. So every operation is a single-object GET or PATCH; nothing lists. Responses
are read as JSON, not as the client's models (see `_json`).

Errors become `rotation.core.errors` types whose messages name the cluster, verb and object. Secret
values and tokens never reach a message: request bodies are never echoed, and server messages are
scrubbed of the value being written.

`kubernetes` is imported lazily, inside functions, so importing this module stays cheap and the
Functions worker can index the app without loading the Kubernetes client.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rotation import known_secrets
from rotation.adapters.credential import token_deadline
from rotation.core.consumption import secret_uses, template_of
from rotation.core.errors import (
    AccessDenied,
    Conflict,
    NotFound,
    PermanentError,
    RotationError,
    UpstreamError,
)
from rotation.core.model import (
    FINGERPRINT_PATTERN,
    TOKEN_FINGERPRINT_ANNOTATION,
    AksAuth,
    Cluster,
    KubeconfigAuth,
    RolloutState,
    SecretState,
    Workload,
    WorkloadKind,
)
from rotation.core.rollout import rollout_status
from rotation.runtime.attribution import attributed

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)
T = TypeVar("T")
V = TypeVar("V")

AKS_SCOPE = "6dae42f8-4368-4678-94ff-3960e28e3630/.default"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# Refresh the Entra token this long before it expires (AKS rejects an expired token with 401).
REFRESH_MARGIN_SECONDS = 300
# Connections kept per cluster: rotation.app.fanout's MAX_FANOUT (targets of one reconcile run in parallel).
CONNECTION_POOL_SIZE = 128
# A kubeconfig read from Key Vault is used this long, then read again (an operator replaces a
# kubeconfig whose token or certificate was rotated); a 401 drops it at once.
KUBECONFIG_TTL_SECONDS = 3600.0
# After a failed re-read, a kubeconfig past its time is used this long before the next attempt.
STALE_RETRY_SECONDS = 60.0
# A connection that failed before anything was sent is tried once more, if this much time is left.
MIN_RETRY_SECONDS = 0.2

_PLURAL = {
    WorkloadKind.DEPLOYMENT: "deployments",
    WorkloadKind.STATEFULSET: "statefulsets",
    WorkloadKind.DAEMONSET: "daemonsets",
}


def _rfc3339(at: datetime) -> str:
    """`kubectl rollout restart` style: seconds precision, UTC with `Z` (naive means UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(text: object) -> datetime | None:
    """A restartedAt annotation (kubectl writes RFC 3339); None when absent or not a time."""
    if not isinstance(text, str) or not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _status_message(body: object) -> str:
    """The `message` of a Kubernetes `Status` response body, if there is one."""
    if not isinstance(body, str | bytes) or not body:
        return ""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    msg = doc.get("message") if isinstance(doc, dict) else None
    return msg if isinstance(msg, str) else ""


_MAX_MESSAGE = 1000  # of a server's message, kept in an error (the head tells what went wrong)


def _scrub(text: str, *secrets: str | None) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "<redacted>")
    return text


class _Cached(Generic[V]):
    """A value many threads want, built once at a time and kept until it expires.

    The build runs on its own daemon thread and every caller (the one that started it included)
    waits no longer than its own deadline: a slow Key Vault or identity endpoint holds no lock, and a
    build a caller gave up on still completes and serves the next caller. The build runs in a copy of
    the starting caller's context, so `token_deadline` bounds the identity requests it makes.
    """

    def __init__(self, name: str, build: Callable[[], tuple[V, float]], late: str = "",
                 serve_stale: bool = False) -> None:
        self._name = name
        self._serve_stale = serve_stale  # an expired value still works: hand it out while rebuilding
        self._late = late or f"{name}: not ready within the time left"
        self._build = build  # returns the value and how many seconds it may be used
        self._lock = threading.Lock()
        self._value: V | None = None
        self._until = 0.0
        self._flight: Future[V] | None = None

    def get(self, timeout: float | None) -> V:
        with self._lock:
            if self._value is not None and time.monotonic() < self._until:
                return self._value
            flight = self._flight
            if flight is None:
                flight = self._flight = Future()
                context = contextvars.copy_context()
                # Its records belong to the invocation that started it (the worker's thread-local id).
                run = attributed(lambda: self._run(flight, context))
                threading.Thread(target=run, daemon=True, name=f"kube-{self._name}").start()
            if self._serve_stale and self._value is not None:
                return self._value
        try:
            return flight.result(timeout=None if timeout is None else max(timeout, 0.0))
        except FutureTimeout:
            raise UpstreamError(self._late + (f" ({timeout:.1f}s)" if timeout is not None else "")) from None

    def peek(self) -> V | None:
        """The value if one was built (expired or not), without building one."""
        with self._lock:
            return self._value

    def drop(self, value: V) -> None:
        """Forget `value` (e.g. credentials the server rejected) so that the next caller builds anew."""
        with self._lock:
            if self._value is value:
                self._value = None

    def _run(self, flight: Future[V], context: contextvars.Context) -> None:
        try:
            value, ttl = context.run(self._build)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter as it is
            with self._lock:
                self._flight = None
                if self._serve_stale and self._value is not None:
                    self._until = time.monotonic() + STALE_RETRY_SECONDS  # not one rebuild per call
            flight.set_exception(exc)
            return
        with self._lock:
            self._value, self._until, self._flight = value, time.monotonic() + ttl, None
        flight.set_result(value)


class _AksTokens:
    """The Entra ID token for the AKS server application, shared by every `aks` cluster: one identity
    request per token lifetime for the whole fleet, renewed REFRESH_MARGIN_SECONDS before it expires
    (AKS rejects an expired token with 401)."""

    def __init__(self, credential: TokenCredential) -> None:
        self._credential = credential
        self._cache: _Cached[str] = _Cached("Entra ID token for AKS", self._fetch,
                                            late=f"could not get a token for {AKS_SCOPE} within the time left")

    def get(self, cluster: str, timeout: float | None) -> str:
        try:
            return self._cache.get(timeout)
        except RotationError as exc:
            raise type(exc)(f"cluster {cluster}: {exc}") from None

    def latest(self) -> str | None:
        """The token fetched last, even if due for renewal: the one `get` just returned to the call
        about to be made (within the margin it is still valid)."""
        return self._cache.peek()

    def _fetch(self) -> tuple[str, float]:
        try:
            access = self._credential.get_token(AKS_SCOPE)
        except Exception as exc:  # noqa: BLE001 - any credential failure, translated below
            raise _translate_credential_error(exc) from None
        return access.token, float(access.expires_on) - time.time() - REFRESH_MARGIN_SECONDS


def _translate_credential_error(exc: Exception) -> RotationError:
    name = type(exc).__name__
    if isinstance(exc, RotationError):
        return exc
    if name == "CredentialUnavailableError":
        return AccessDenied(f"no managed identity available to get an Entra ID token for AKS ({name})")
    return UpstreamError(f"could not get an Entra ID token for AKS ({name})")


class _BearerHook:
    """`refresh_api_key_hook`: puts the shared AKS token on each request (fetched beforehand, within
    the call's deadline, by `KubernetesClusterClient._call`)."""

    def __init__(self, cluster: str, tokens: _AksTokens) -> None:
        self._cluster = cluster
        self._tokens = tokens

    def __call__(self, configuration: Any) -> None:
        configuration.api_key["BearerToken"] = self._tokens.latest() or self._tokens.get(self._cluster, None)
        configuration.api_key_prefix["BearerToken"] = "Bearer"


def _configuration() -> Any:
    import urllib3
    from kubernetes import client

    conf = client.Configuration()
    # No retries inside urllib3: it gives each attempt a fresh copy of `Timeout(total=…)`, so one
    # retried connect took twice the call's timeout. `KubernetesClusterClient._call` retries a connect
    # that sent nothing itself, within what is left of the same deadline. Never a read, a status or a
    # redirect: PATCHes carry preconditions and the caller's deadline decides about retrying.
    conf.retries = urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0, other=0,
                                 raise_on_redirect=True)
    # One pool per cluster serves every target of a fan-out at once. The client's default
    # (cpu_count * 5: 10 on a 2-core Functions worker) makes urllib3 open the 11th..100th
    # connection anyway and then discard it ("Connection pool is full"), so every reconcile would
    # pay a fresh TLS handshake per target. Keep as many as the service fans out to.
    conf.connection_pool_maxsize = CONNECTION_POOL_SIZE
    return conf


class _Connection:
    """A built client of one cluster: the SDK's ApiClient (its urllib3 pool) and API objects made
    once, reused by every call and every invocation of the worker."""

    def __init__(self, api_client: Any, tokens: _AksTokens | None) -> None:
        from kubernetes import client

        self.api = api_client
        self.tokens = tokens  # None: the kubeconfig's own token or client certificate
        self.core = client.CoreV1Api(api_client)
        apps = client.AppsV1Api(api_client)
        self.patch = {WorkloadKind.DEPLOYMENT: apps.patch_namespaced_deployment,
                      WorkloadKind.STATEFULSET: apps.patch_namespaced_stateful_set,
                      WorkloadKind.DAEMONSET: apps.patch_namespaced_daemon_set}
        self.read = {WorkloadKind.DEPLOYMENT: apps.read_namespaced_deployment,
                     WorkloadKind.STATEFULSET: apps.read_namespaced_stateful_set,
                     WorkloadKind.DAEMONSET: apps.read_namespaced_daemon_set}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.close()


def _pointer(*parts: str) -> str:
    """An RFC 6901 JSON Pointer (`~` and `/` escaped in each reference token)."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _conditional_ops(key: str, value: str, expected: str | None, annotations: Mapping[str, str | None],
                     present: tuple[bool, bool, frozenset[str]] | None) -> list[dict[str, Any]]:
    """The JSON Patch of `write_secret_key_if`. `present` is (data exists, annotations exist, the
    annotation keys there) when the Secret was read; None assumes both maps exist (the usual case).

    A `test` of null passes when the member is absent (RFC 6902 compares with null; evanphx/json-patch,
    which the apiserver applies, returns success for a missing key tested against null), so "the key
    is absent" needs no read either. `add` on a member replaces it, so it serves both cases.
    """
    data_exists, annotations_exist, annotation_keys = present or (True, True, frozenset())
    ops: list[dict[str, Any]] = []
    if data_exists:
        ops.append({"op": "test", "path": _pointer("data", key), "value": None if expected is None else _b64(expected)})
        ops.append({"op": "add", "path": _pointer("data", key), "value": _b64(value)})
    else:  # only reachable for expected None (a read found no data at all)
        ops.append({"op": "test", "path": _pointer("data"), "value": None})
        ops.append({"op": "add", "path": _pointer("data"), "value": {key: _b64(value)}})
    if annotations:
        if annotations_exist:
            for name, text in annotations.items():
                path = _pointer("metadata", "annotations", name)
                if text is not None:
                    ops.append({"op": "add", "path": path, "value": text})
                elif present is None:  # not known whether it is there: make sure, then remove
                    ops.extend(({"op": "add", "path": path, "value": ""}, {"op": "remove", "path": path}))
                elif name in annotation_keys:
                    ops.append({"op": "remove", "path": path})
        else:
            added = {k: v for k, v in annotations.items() if v is not None}
            if added:
                ops.append({"op": "test", "path": _pointer("metadata", "annotations"), "value": None})
                ops.append({"op": "add", "path": _pointer("metadata", "annotations"), "value": added})
    return ops


def _status_causes(body: object) -> str:
    """The `details.causes[].message` of a Kubernetes `Status` response body, joined."""
    if not isinstance(body, str | bytes) or not body:
        return ""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    details = doc.get("details") if isinstance(doc, dict) else None
    causes = details.get("causes") if isinstance(details, dict) else None
    if not isinstance(causes, list):
        return ""
    return " ".join(str(c.get("message") or "") for c in causes if isinstance(c, dict))


class KubernetesClusterClient:
    """One cluster, as the app's least-privilege identity. Thread-safe; built once per cluster and kept
    across invocations: its pooled, kept-alive TLS connections serve every later reconcile.

    The SDK client is made on first use (for `kubeconfig` clusters that means reading the kubeconfig
    from Key Vault), inside the first call and within its timeout.
    """

    def __init__(self, name: str, connect: Callable[[], tuple[_Connection, float]]) -> None:
        self.name = name
        # A kubeconfig past its time is still used while it is read again (a 401 drops it at once).
        self._connection: _Cached[_Connection] = _Cached(f"cluster {name}: client", connect, serve_stale=True)

    @property
    def _api(self) -> Any:
        """The SDK's ApiClient (built now if it was not yet)."""
        return self._connection.get(None).api

    # --- ClusterClient --------------------------------------------------------------------------

    def read_secret(self, namespace: str, name: str, key: str, timeout: float | None = None) -> SecretState:
        secret = self._call("get", f"secrets {namespace}/{name}", timeout, lambda c, t: _json(
            c.core.read_namespaced_secret(name, namespace, _request_timeout=t, _preload_content=False)))
        return _secret_state(secret, key)

    def write_secret_key(self, namespace: str, name: str, key: str, value: str, resource_version: str,
                         timeout: float | None = None,
                         annotations: Mapping[str, str | None] | None = None) -> str:
        if not resource_version:
            raise PermanentError(f"cluster {self.name}: refusing to patch secrets {namespace}/{name} "
                                 "without a resourceVersion precondition")
        metadata: dict[str, Any] = {"resourceVersion": resource_version}
        if annotations:
            metadata["annotations"] = dict(annotations)  # None deletes a key in a strategic merge patch
        body = {"metadata": metadata, "stringData": {key: value}}
        return self._call("patch", f"secrets {namespace}/{name}", timeout, lambda c, t: _version(
            c.core.patch_namespaced_secret(name, namespace, body, _content_type=STRATEGIC_MERGE,
                                           _request_timeout=t, _preload_content=False)), value)

    def write_secret_key_if(self, namespace: str, name: str, key: str, value: str, expected: str | None,
                            timeout: float | None = None,
                            annotations: Mapping[str, str | None] | None = None) -> str:
        """One JSON Patch (RFC 6902): `test` that the key holds `expected` (null: absent), then `add` the
        new value, so a writer that expects what is there needs no read first. The apiserver applies the
        operations atomically to the object it stores (its patch handler retries on a storage conflict)
        and answers 422 when an operation fails.

        A 422 says which operation failed only on newer apiservers (kube-apiserver 1.20 answers a bare
        "Invalid"), and it is also the answer when a map the patch adds to is missing (a Secret without
        `data` or without annotations). So a 422 costs one read: a value other than `expected` is a
        Conflict; otherwise the exact patch for the Secret as read is sent, guarded by its
        resourceVersion as well, and a 422 to that is a Conflict too (it changed meanwhile).
        """
        what = f"secrets {namespace}/{name}"
        wanted = dict(annotations or {})
        end = None if timeout is None else time.monotonic() + timeout
        ops = _conditional_ops(key, value, expected, wanted, None)
        try:
            return self._patch_secret(what, namespace, name, ops, timeout, value, expected)
        except _PatchRejected:
            pass
        conflict = Conflict(f"cluster {self.name}: conflict on patch {what}: the key does not hold the expected "
                            "value")
        raw = self._call("get", what, None if end is None else end - time.monotonic(), lambda c, t: _json(
            c.core.read_namespaced_secret(name, namespace, _request_timeout=t, _preload_content=False)))
        if _secret_state(raw, key).value != expected:
            raise conflict
        meta = raw.get("metadata") or {}
        found = meta.get("annotations")
        present = (isinstance(raw.get("data"), dict), isinstance(found, dict), frozenset(found or {}))
        ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": str(meta.get("resourceVersion") or "")},
               *_conditional_ops(key, value, expected, wanted, present)]
        try:
            return self._patch_secret(what, namespace, name, ops,
                                      None if end is None else end - time.monotonic(), value, expected)
        except _PatchRejected:
            raise conflict from None

    def _patch_secret(self, what: str, namespace: str, name: str, ops: list[dict[str, Any]],
                      timeout: float | None, value: str, expected: str | None) -> str:
        return self._call("patch", what, timeout, lambda c, t: _version(
            c.core.patch_namespaced_secret(name, namespace, ops, _content_type=JSON_PATCH,
                                           _request_timeout=t, _preload_content=False)), value, expected,
            json_patch=True)

    def annotate_secret(self, namespace: str, name: str, annotations: Mapping[str, str | None],
                        timeout: float | None = None, resource_version: str | None = None) -> None:
        metadata: dict[str, Any] = {"annotations": dict(annotations)}
        if resource_version:
            metadata["resourceVersion"] = resource_version  # precondition: 409 if changed meanwhile
        body = {"metadata": metadata}
        self._call("patch", f"secrets {namespace}/{name}", timeout, lambda c, t: _discard(
            c.core.patch_namespaced_secret(name, namespace, body, _content_type=STRATEGIC_MERGE,
                                           _request_timeout=t, _preload_content=False)))

    def restart(self, namespace: str, workload: Workload, at: datetime, timeout: float | None = None,
                fingerprint: str | None = None) -> None:
        """`kubectl rollout restart`: one PATCH of the pod template's `restartedAt`, and with it the
        fingerprint of the token the workload is restarted for (any change of the pod template rolls
        the pods; both annotations in one write, so there is nothing to clear afterwards).

        kubectl reads a Deployment first and refuses a paused one. Here the PATCH answers with the
        object, so a paused Deployment is found afterwards: the annotations are set (its pods roll with
        the new token as soon as it is resumed) and the restart is reported as not done, so the target
        fails. One call per workload instead of two.
        """
        if fingerprint is not None and not FINGERPRINT_PATTERN.match(fingerprint):
            # Whatever is passed here lands in a pod template anyone who can read it sees.
            raise PermanentError(f"cluster {self.name}: refusing to annotate a pod template with a value "
                                 "that is not a 12-hex-digit token fingerprint")
        what = f"{_PLURAL[workload.kind]} {namespace}/{workload.name}"
        marks = {RESTARTED_AT: _rfc3339(at)}
        if fingerprint is not None:
            marks[TOKEN_FINGERPRINT_ANNOTATION] = fingerprint
        body = {"spec": {"template": {"metadata": {"annotations": marks}}}}
        patched = self._call("patch", what, timeout, lambda c, t: _json(c.patch[workload.kind](
            workload.name, namespace, body, _content_type=STRATEGIC_MERGE, _request_timeout=t,
            _preload_content=False)))
        if workload.kind is WorkloadKind.DEPLOYMENT and (patched.get("spec") or {}).get("paused"):
            raise PermanentError(f"cluster {self.name}: paused deployment {namespace}/{workload.name} "
                                 "does not roll: restartedAt is set, its pods pick up the token once it "
                                 "is resumed (kubectl rollout resume)")

    def rollout(self, namespace: str, workload: Workload, timeout: float | None = None) -> RolloutState:
        what = f"{_PLURAL[workload.kind]} {namespace}/{workload.name}"
        obj = self._call("get", what, timeout, lambda c, t: _json(c.read[workload.kind](
            workload.name, namespace, _request_timeout=t, _preload_content=False)))
        ready, detail = rollout_status(workload.kind, obj)
        template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
        annotations = template.get("annotations") or {}
        mark = annotations.get(TOKEN_FINGERPRINT_ANNOTATION)
        # The same GET tells which Secrets the pod template reads (the consumption check).
        return RolloutState(workload=workload, ready=ready, detail=detail,
                            restarted_at=_parse_rfc3339(annotations.get(RESTARTED_AT)),
                            uses=secret_uses(template_of(obj)),
                            token_fingerprint=mark if isinstance(mark, str) and FINGERPRINT_PATTERN.match(mark)
                            else None)

    def close(self) -> None:
        conn = self._connection.peek()
        if conn is not None:
            conn.close()

    # --- one call -------------------------------------------------------------------------------

    def _call(self, verb: str, what: str, timeout: float | None, request: Callable[[_Connection, float | None], T],
              secret: str | None = None, expected: str | None = None, *, json_patch: bool = False) -> T:
        """Runs `request` with the client and the seconds left, all of it within `timeout`: building
        the client, the AKS token, the request and its one retry share one deadline (urllib3 would give
        each attempt the whole timeout again)."""
        import urllib3

        if timeout is not None and timeout <= 0:
            raise UpstreamError(f"cluster {self.name}: no time left to {verb} {what}")
        end = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            if end is None:
                return None
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise UpstreamError(f"cluster {self.name} unreachable: {verb} {what} timed out after {timeout:g}s")
            return remaining

        for attempt in (1, 2):
            with self._errors(verb, what, timeout, secret, expected, json_patch=json_patch):
                conn = self._connection.get(left())
                if conn.tokens is not None:
                    with token_deadline(left()):
                        conn.tokens.get(self.name, left())
                t = left()
                try:
                    with token_deadline(t):
                        return request(conn, t)
                except urllib3.exceptions.MaxRetryError as exc:
                    # Nothing was sent (a refused or timed-out connect): once more if time allows.
                    unsent = isinstance(exc.reason, urllib3.exceptions.NewConnectionError)
                    if attempt == 1 and unsent and (end is None or end - time.monotonic() >= MIN_RETRY_SECONDS):
                        continue
                    raise
                except Exception as exc:
                    if conn.tokens is None and getattr(exc, "status", None) == 401:
                        self._connection.drop(conn)  # a replaced kubeconfig: read it again next time
                    raise
        raise AssertionError("unreachable")  # pragma: no cover - the second attempt returns or raises

    def _errors(self, verb: str, what: str, timeout: float | None, secret: str | None = None,
                expected: str | None = None, *, json_patch: bool = False) -> contextlib.AbstractContextManager[
                    float | None]:
        return api_errors(f"cluster {self.name}", verb, what, timeout, secret, expected, json_patch=json_patch)


# --- errors: the one translation of the kubernetes client's exceptions ------------------------------


@contextlib.contextmanager
def api_errors(where: str, verb: str, what: str, timeout: float | None, secret: str | None = None,
               expected: str | None = None, *, json_patch: bool = False) -> Iterator[float | None]:
    """Yields the request timeout; translates whatever the call raises into `rotation.core.errors`.

    `where` names the cluster in each message ("cluster east", or "context east" for the operator's
    kubeconfig); `secret` is a value being written and `expected` the value a conditional write
    expected, both scrubbed (and their base64) from any server message.
    """
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if timeout is not None and timeout <= 0:
        raise UpstreamError(f"{where}: no time left to {verb} {what}")
    known_secrets.remember(secret, expected)  # a denial (an admission webhook) may quote them in any encoding
    try:
        with token_deadline(timeout):  # the AKS token refresh happens inside the call
            yield timeout
    except RotationError:
        raise
    except ApiException as exc:
        raise _api_error(where, exc, verb, what, (secret, expected), json_patch) from None
    except urllib3.exceptions.NewConnectionError as exc:
        raise UpstreamError(f"{where} unreachable: {verb} {what}: {_short_reason(exc)}") from None
    except urllib3.exceptions.TimeoutError:
        raise UpstreamError(f"{where} unreachable: {verb} {what} timed out"
                            + (f" after {timeout:g}s" if timeout is not None else "")) from None
    except urllib3.exceptions.MaxRetryError as exc:
        reason = exc.reason
        if isinstance(reason, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError subclass
            detail = _short_reason(reason)
        elif isinstance(reason, urllib3.exceptions.TimeoutError):
            detail = "timed out" + (f" after {timeout:g}s" if timeout is not None else "")
        elif isinstance(reason, urllib3.exceptions.SSLError):
            detail = f"TLS error: {reason}"
        else:
            detail = _short_reason(reason)
        raise UpstreamError(f"{where} unreachable: {verb} {what}: {detail}") from None
    except (urllib3.exceptions.HTTPError, ssl.SSLError, OSError) as exc:
        raise UpstreamError(f"{where} unreachable: {verb} {what}: {type(exc).__name__}") from None
    except (TypeError, ValueError) as exc:
        # Client-side validation (pydantic) of arguments; its text may include the request body.
        raise PermanentError(f"{where}: invalid request to {verb} {what} ({type(exc).__name__})") from None


def _api_error(where: str, exc: Any, verb: str, what: str, secrets: tuple[str | None, str | None],
               json_patch: bool) -> RotationError:
    from rotation.boundary import clean

    status = int(exc.status or 0)
    hidden = [s for s in secrets if s] + [_b64(s) for s in secrets if s]
    # The server's message may quote the request in any encoding (an admission webhook echoing `data`):
    # the values written and expected are cut out as known secrets, then anything secret-shaped.
    message = clean(_scrub(_status_message(exc.body), *hidden)[:_MAX_MESSAGE * 4])[:_MAX_MESSAGE]
    suffix = f": {message}" if message else ""
    if json_patch and status == 422:
        return _patch_error(where, verb, what, exc.body)
    if status == 0:  # the client's wrapping of an SSL error
        return _tls_error(where, verb, what, exc.reason, hidden)
    return _status_error(where, verb, what, status, suffix)


def _patch_error(where: str, verb: str, what: str, body: Any) -> RotationError:
    """staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go (applyJSPatch): an operation
    that fails to apply is answered 422; newer apiservers name the failed operation in
    details.causes ("testing value … failed": evanphx/json-patch's ErrTestFailed)."""
    if "testing value" in _status_causes(body):
        return Conflict(f"{where}: conflict on {verb} {what}: the key does not hold the expected value")
    raise _PatchRejected


def _tls_error(where: str, verb: str, what: str, exc_reason: Any, hidden: list[str]) -> RotationError:
    from rotation.boundary import clean

    reason = clean(_scrub(str(exc_reason or ""), *hidden)[:_MAX_MESSAGE * 4]).splitlines()
    return UpstreamError(f"{where} unreachable: {verb} {what}: {' '.join(reason)[:300] or 'TLS error'}")


def _status_error(where: str, verb: str, what: str, status: int, suffix: str) -> RotationError:
    if status == 404:
        return NotFound(f"{where}: {what} not found")
    if status == 401:
        return AccessDenied(f"{where}: unauthorized to {verb} {what} (credentials rejected)")
    if status == 403:
        return AccessDenied(f"{where}: forbidden to {verb} {what}")
    if status == 409:
        return Conflict(f"{where}: conflict on {verb} {what}{suffix}")
    if status in (400, 422):
        return PermanentError(f"{where}: {verb} {what} rejected ({status}){suffix}")
    if status == 429 or status >= 500:
        return UpstreamError(f"{where}: {verb} {what} failed ({status}){suffix}")
    return PermanentError(f"{where}: {verb} {what} failed ({status}){suffix}")


class _PatchRejected(Exception):
    """A JSON Patch the apiserver answered with 422: a failed `test`, or a map the patch assumed."""


def _secret_state(secret: Mapping[str, Any], key: str) -> SecretState:
    data = secret.get("data") or {}
    raw = data.get(key)
    value: str | None = None
    if isinstance(raw, str):
        try:
            value = base64.b64decode(raw, validate=True).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            value = None  # not base64: treat as no token (never echo it)
    known_secrets.remember(value)
    meta = secret.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return SecretState(resource_version=str(meta.get("resourceVersion") or ""), value=value,
                       annotations={str(k): str(v) for k, v in annotations.items()},
                       labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()})


def _version(response: Any) -> str:
    """The resourceVersion a write answered with: the caller's next precondition without a read; an
    answer that is not JSON only costs that read ("")."""
    try:
        answer = _json(response)
    except UpstreamError:
        return ""
    return str((answer.get("metadata") or {}).get("resourceVersion") or "")


def _short_reason(reason: object) -> str:
    text = str(reason)
    # urllib3: "<urllib3.connection.HTTPSConnection object at 0x…>: Failed to establish a new
    # connection: [Errno 111] Connection refused" -> keep what follows the object repr.
    if ">: " in text:
        text = text.split(">: ", 1)[1]
    return text[:300] or type(reason).__name__


def _discard(response: Any) -> None:
    """Reads a raw response to its end (so its connection goes back to the pool) without parsing it."""
    try:
        response.read()
    finally:
        response.release_conn()


def _json(response: Any) -> dict[str, Any]:
    """The body of a raw (`_preload_content=False`) response, as JSON.

    The client's pydantic models cost about 0.5 ms of CPU per Deployment; a fan-out to 100 targets
    on a 2-core worker pays that on the critical path, for fields this adapter reads by name anyway.
    """
    try:
        data = response.data
    finally:
        response.release_conn()
    try:
        doc = json.loads(data) if data else {}
    except ValueError:
        raise UpstreamError("the API server answered with a body that is not JSON") from None
    return doc if isinstance(doc, dict) else {}


class KubernetesClusters:
    """`Clusters`: one `KubernetesClusterClient` per registry cluster, kept for the life of the worker.

    Every `aks` cluster shares one Entra ID token (`_AksTokens`); a `kubeconfig` cluster's kubeconfig
    is read from Key Vault by its first call, within that call's timeout, and again after
    KUBECONFIG_TTL_SECONDS or a 401.
    """

    def __init__(self, credential: TokenCredential | None,
                 read_kubeconfig: Callable[[str], str]) -> None:
        self._credential = credential
        self._tokens = _AksTokens(credential) if credential is not None else None
        self._read_kubeconfig = read_kubeconfig
        self._lock = threading.Lock()
        self._clients: dict[Cluster, KubernetesClusterClient] = {}
        self._temp_dirs: list[str] = []

    def client(self, cluster: Cluster) -> KubernetesClusterClient:
        with self._lock:
            found = self._clients.get(cluster)
            if found is not None:
                return found
        connect = self._connector(cluster)  # validates what needs no network, raising here
        with self._lock:
            return self._clients.setdefault(cluster, KubernetesClusterClient(cluster.name, connect))

    def close(self) -> None:
        import shutil

        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            dirs, self._temp_dirs = self._temp_dirs, []
        for c in clients:
            c.close()
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)

    def _connector(self, cluster: Cluster) -> Callable[[], tuple[_Connection, float]]:
        auth = cluster.auth
        if isinstance(auth, AksAuth):
            tokens = self._tokens
            if tokens is None:
                raise PermanentError(f"cluster {cluster.name}: auth 'aks' needs the app's Azure credential")
            try:
                ca = base64.b64decode(auth.ca_data, validate=True).decode("ascii")
            except (binascii.Error, ValueError):
                raise PermanentError(f"cluster {cluster.name}: caData is not base64") from None
            if "-----BEGIN CERTIFICATE-----" not in ca:
                raise PermanentError(f"cluster {cluster.name}: caData is not a base64 PEM certificate")
            return lambda: (self._aks_connection(cluster.name, auth, ca, tokens), float("inf"))
        if isinstance(auth, KubeconfigAuth):
            return lambda: (self._kubeconfig_connection(cluster.name, auth), KUBECONFIG_TTL_SECONDS)
        raise PermanentError(f"cluster {cluster.name}: unsupported auth {type(auth).__name__}")

    def _aks_connection(self, name: str, auth: AksAuth, ca: str, tokens: _AksTokens) -> _Connection:
        from kubernetes import client

        conf = _configuration()
        conf.host = auth.server.rstrip("/")
        conf.ca_cert_data = ca
        conf.api_key = {"BearerToken": ""}
        conf.api_key_prefix = {"BearerToken": "Bearer"}
        conf.refresh_api_key_hook = _BearerHook(name, tokens)
        log.debug("kubernetes client for cluster %s built (auth aks)", name)
        return _Connection(client.ApiClient(conf), tokens)

    def _kubeconfig_connection(self, name: str, auth: KubeconfigAuth) -> _Connection:
        """A client from the validated shape only (`rotation.adapters.kubeconfig`): the Kubernetes
        client's own loader would honour exec plugins, file paths, proxies and TLS switches."""
        from kubernetes import client

        from rotation.adapters.kubeconfig import parse_kubeconfig

        safe = parse_kubeconfig(self._read_kubeconfig(auth.secret_name), cluster=name, secret=auth.secret_name)
        conf = _configuration()
        conf.host = safe.server
        if safe.ca_pem is not None:
            conf.ca_cert_data = safe.ca_pem
        if safe.token is not None:
            conf.api_key = {"BearerToken": safe.token}
            conf.api_key_prefix = {"BearerToken": "Bearer"}
        else:
            # urllib3 loads a client certificate only from files: private ones, removed on close.
            conf.cert_file, conf.key_file = self._client_cert_files(name, safe.client_cert_pem or "",
                                                                    safe.client_key_pem or "")
        log.debug("kubernetes client for cluster %s built (auth kubeconfig)", name)
        return _Connection(client.ApiClient(conf), None)

    def _client_cert_files(self, name: str, cert: str, key: str) -> tuple[str, str]:
        import os
        import tempfile

        directory = tempfile.mkdtemp(prefix="rotation-kube-")  # mode 0700
        self._temp_dirs.append(directory)
        paths = []
        for filename, content in (("client.crt", cert), ("client.key", key)):
            path = os.path.join(directory, filename)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(content)
            paths.append(path)
        log.debug("client certificate of cluster %s kept in a private temporary directory", name)
        return paths[0], paths[1]

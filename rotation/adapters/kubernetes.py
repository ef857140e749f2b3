"""`ClusterClient` / `Clusters` over the official `kubernetes` client (regenerated, v37).

Two ways to reach a cluster (registry `auth`):
- `aks`: an Entra ID token of the app's identity for the AKS server application, put in
  `Configuration.api_key["BearerToken"]` and refreshed before expiry by `refresh_api_key_hook`;
  the cluster CA comes from the registry's `caData` (kept in memory, no temp file).
- `kubeconfig`: the kubeconfig text kept in Key Vault (the configuration vault), accepted only in the
  safe shape of `rotation.adapters.kubeconfig` and turned into a client from that shape alone.

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
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
    AksAuth,
    Cluster,
    KubeconfigAuth,
    RolloutState,
    SecretState,
    Workload,
    WorkloadKind,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)

AKS_SCOPE = "6dae42f8-4368-4678-94ff-3960e28e3630/.default"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
# Refresh the Entra token this long before it expires (AKS rejects an expired token with 401).
REFRESH_MARGIN_SECONDS = 300
# Connections kept per cluster: the service's MAX_FANOUT (targets of one reconcile run in parallel).
CONNECTION_POOL_SIZE = 128

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


class _BearerRefresher:
    """`refresh_api_key_hook` for AKS: fetches a token for the AKS scope, renews it before expiry."""

    def __init__(self, cluster: str, credential: TokenCredential) -> None:
        self._cluster = cluster
        self._credential = credential
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_on = 0.0

    def __call__(self, configuration: Any) -> None:
        with self._lock:
            if self._token is None or self._expires_on - REFRESH_MARGIN_SECONDS <= time.time():
                try:
                    access = self._credential.get_token(AKS_SCOPE)
                except Exception as exc:  # noqa: BLE001 - any credential failure, translated below
                    raise self._translate(exc) from None
                self._token, self._expires_on = access.token, float(access.expires_on)
            configuration.api_key["BearerToken"] = self._token
            configuration.api_key_prefix["BearerToken"] = "Bearer"

    def _translate(self, exc: Exception) -> RotationError:
        name = type(exc).__name__
        if isinstance(exc, RotationError):
            return exc
        if name == "CredentialUnavailableError":
            return AccessDenied(f"cluster {self._cluster}: no managed identity available to get an "
                                f"Entra ID token for AKS ({name})")
        return UpstreamError(f"cluster {self._cluster}: could not get an Entra ID token for AKS ({name})")


def _configuration() -> Any:
    import urllib3
    from kubernetes import client

    conf = client.Configuration()
    # Retry a failed connect once (nothing was sent); never a read, a status or a redirect: PATCHes
    # carry preconditions and the caller's deadline decides about retrying.
    conf.retries = urllib3.Retry(total=1, connect=1, read=0, redirect=0, status=0, other=0,
                                 backoff_factor=0.05)
    # One pool per cluster serves every target of a fan-out at once. The client's default
    # (cpu_count * 5: 10 on a 2-core Functions worker) makes urllib3 open the 11th..100th
    # connection anyway and then discard it ("Connection pool is full"), so every reconcile would
    # pay a fresh TLS handshake per target. Keep as many as the service fans out to.
    conf.connection_pool_maxsize = CONNECTION_POOL_SIZE
    return conf


class KubernetesClusterClient:
    """One cluster, as the app's least-privilege identity. Thread-safe (one urllib3 pool)."""

    def __init__(self, name: str, api_client: Any) -> None:
        self.name = name
        self._api = api_client

    # --- ClusterClient --------------------------------------------------------------------------

    def read_secret(self, namespace: str, name: str, key: str, timeout: float | None = None) -> SecretState:
        from kubernetes import client

        with self._errors("get", f"secrets {namespace}/{name}", timeout) as t:
            secret = _json(client.CoreV1Api(self._api).read_namespaced_secret(
                name, namespace, _request_timeout=t, _preload_content=False))
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

    def write_secret_key(self, namespace: str, name: str, key: str, value: str, resource_version: str,
                         timeout: float | None = None,
                         annotations: Mapping[str, str | None] | None = None) -> str:
        from kubernetes import client

        if not resource_version:
            raise PermanentError(f"cluster {self.name}: refusing to patch secrets {namespace}/{name} "
                                 "without a resourceVersion precondition")
        metadata: dict[str, Any] = {"resourceVersion": resource_version}
        if annotations:
            metadata["annotations"] = dict(annotations)  # None deletes a key in a strategic merge patch
        body = {"metadata": metadata, "stringData": {key: value}}
        known_secrets.remember(value)  # a denial (an admission webhook) may quote it in any encoding
        with self._errors("patch", f"secrets {namespace}/{name}", timeout, value) as t:
            response = client.CoreV1Api(self._api).patch_namespaced_secret(
                name, namespace, body, _content_type=STRATEGIC_MERGE, _request_timeout=t,
                _preload_content=False)
            # The new resourceVersion lets the restart marker be cleared without reading the Secret
            # again; an answer that is not JSON only costs that read ("").
            try:
                answer = _json(response)
            except UpstreamError:
                return ""
        return str((answer.get("metadata") or {}).get("resourceVersion") or "")

    def annotate_secret(self, namespace: str, name: str, annotations: Mapping[str, str | None],
                        timeout: float | None = None, resource_version: str | None = None) -> None:
        from kubernetes import client

        metadata: dict[str, Any] = {"annotations": dict(annotations)}
        if resource_version:
            metadata["resourceVersion"] = resource_version  # precondition: 409 if changed meanwhile
        body = {"metadata": metadata}
        with self._errors("patch", f"secrets {namespace}/{name}", timeout) as t:
            _discard(client.CoreV1Api(self._api).patch_namespaced_secret(
                name, namespace, body, _content_type=STRATEGIC_MERGE, _request_timeout=t,
                _preload_content=False))

    def restart(self, namespace: str, workload: Workload, at: datetime, timeout: float | None = None) -> None:
        """`kubectl rollout restart`: one PATCH of the pod template's `restartedAt`.

        kubectl reads a Deployment first and refuses a paused one. Here the PATCH answers with the
        object, so a paused Deployment is found afterwards: the annotation is set (its pods roll with
        the new token as soon as it is resumed) and the restart is reported as not done, so the target
        fails and keeps its restart marker. One call per workload instead of two.
        """
        from kubernetes import client

        apps = client.AppsV1Api(self._api)
        what = f"{_PLURAL[workload.kind]} {namespace}/{workload.name}"
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: _rfc3339(at)}}}}}
        patch = {WorkloadKind.DEPLOYMENT: apps.patch_namespaced_deployment,
                 WorkloadKind.STATEFULSET: apps.patch_namespaced_stateful_set,
                 WorkloadKind.DAEMONSET: apps.patch_namespaced_daemon_set}[workload.kind]
        with self._errors("patch", what, timeout) as t:
            patched = _json(patch(workload.name, namespace, body, _content_type=STRATEGIC_MERGE,
                                  _request_timeout=t, _preload_content=False))
        if workload.kind is WorkloadKind.DEPLOYMENT and (patched.get("spec") or {}).get("paused"):
            raise PermanentError(f"cluster {self.name}: paused deployment {namespace}/{workload.name} "
                                 "does not roll: restartedAt is set, its pods pick up the token once it "
                                 "is resumed (kubectl rollout resume)")

    def rollout(self, namespace: str, workload: Workload, timeout: float | None = None) -> RolloutState:
        from kubernetes import client

        apps = client.AppsV1Api(self._api)
        what = f"{_PLURAL[workload.kind]} {namespace}/{workload.name}"
        read = {WorkloadKind.DEPLOYMENT: apps.read_namespaced_deployment,
                WorkloadKind.STATEFULSET: apps.read_namespaced_stateful_set,
                WorkloadKind.DAEMONSET: apps.read_namespaced_daemon_set}[workload.kind]
        with self._errors("get", what, timeout) as t:
            obj = _json(read(workload.name, namespace, _request_timeout=t, _preload_content=False))
        ready, detail = _rollout_status(workload.kind, obj)
        template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
        restarted = (template.get("annotations") or {}).get(RESTARTED_AT)
        # The same GET tells which Secrets the pod template reads (the consumption check, issue 14).
        return RolloutState(workload=workload, ready=ready, detail=detail, restarted_at=_parse_rfc3339(restarted),
                            uses=secret_uses(template_of(obj)))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._api.close()

    # --- errors ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, verb: str, what: str, timeout: float | None,
                secret: str | None = None) -> Iterator[float | None]:
        """Yields the request timeout; translates whatever the call raises."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        if timeout is not None and timeout <= 0:
            raise UpstreamError(f"cluster {self.name}: no time left to {verb} {what}")
        try:
            with token_deadline(timeout):  # the AKS token refresh happens inside the call
                yield timeout
        except RotationError:
            raise
        except ApiException as exc:
            raise self._api_error(exc, verb, what, secret) from None
        except urllib3.exceptions.NewConnectionError as exc:
            raise UpstreamError(f"cluster {self.name} unreachable: {verb} {what}: "
                                f"{_short_reason(exc)}") from None
        except urllib3.exceptions.TimeoutError:
            raise UpstreamError(f"cluster {self.name} unreachable: {verb} {what} timed out"
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
            raise UpstreamError(f"cluster {self.name} unreachable: {verb} {what}: {detail}") from None
        except (urllib3.exceptions.HTTPError, ssl.SSLError, OSError) as exc:
            raise UpstreamError(f"cluster {self.name} unreachable: {verb} {what}: "
                                f"{type(exc).__name__}") from None
        except (TypeError, ValueError) as exc:
            # Client-side validation (pydantic) of arguments; its text may include the request body.
            raise PermanentError(f"cluster {self.name}: invalid request to {verb} {what} "
                                 f"({type(exc).__name__})") from None

    def _api_error(self, exc: Any, verb: str, what: str, secret: str | None) -> RotationError:
        from rotation.boundary import clean

        status = int(exc.status or 0)
        # The server's message may quote the request (an admission webhook echoing `data`): the value
        # written is cut out in any encoding, then anything secret-shaped.
        message = clean(_scrub(_status_message(exc.body), secret)[:_MAX_MESSAGE * 4])[:_MAX_MESSAGE]
        suffix = f": {message}" if message else ""
        if status == 0:  # the client's wrapping of an SSL error
            reason = clean(_scrub(str(exc.reason or ""), secret)[:_MAX_MESSAGE * 4]).splitlines()
            return UpstreamError(f"cluster {self.name} unreachable: {verb} {what}: "
                                 f"{' '.join(reason)[:300] or 'TLS error'}")
        if status == 404:
            return NotFound(f"cluster {self.name}: {what} not found")
        if status == 401:
            return AccessDenied(f"cluster {self.name}: unauthorized to {verb} {what} "
                                "(credentials rejected)")
        if status == 403:
            return AccessDenied(f"cluster {self.name}: forbidden to {verb} {what}")
        if status == 409:
            return Conflict(f"cluster {self.name}: conflict on {verb} {what}{suffix}")
        if status in (400, 422):
            return PermanentError(f"cluster {self.name}: {verb} {what} rejected ({status}){suffix}")
        if status == 429 or status >= 500:
            return UpstreamError(f"cluster {self.name}: {verb} {what} failed ({status}){suffix}")
        return PermanentError(f"cluster {self.name}: {verb} {what} failed ({status}){suffix}")


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


def _rollout_status(kind: WorkloadKind, obj: Mapping[str, Any]) -> tuple[bool, str]:
    """kubectl rollout status semantics, from the object's spec, metadata and status (API JSON)."""

    def n(value: object) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status")
    if not isinstance(status, dict) or n(status.get("observedGeneration")) < n(meta.get("generation")):
        return False, "waiting for the new spec to be observed"

    if kind is WorkloadKind.DAEMONSET:
        desired = n(status.get("desiredNumberScheduled"))
        updated = n(status.get("updatedNumberScheduled"))
        available = n(status.get("numberAvailable"))
        if updated < desired:
            return False, f"{updated}/{desired} updated"
        if available < desired:
            return False, f"{available}/{desired} available"
        return True, f"rolled out ({available}/{desired} available)"

    desired = n(spec.get("replicas")) if spec.get("replicas") is not None else 1
    updated = n(status.get("updatedReplicas"))
    ready = n(status.get("readyReplicas"))
    total = n(status.get("replicas"))
    if kind is WorkloadKind.DEPLOYMENT:
        for cond in status.get("conditions") or []:
            if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                return False, "progress deadline exceeded"
        available = n(status.get("availableReplicas"))
        if updated < desired:
            return False, f"{updated}/{desired} updated"
        if total > updated:
            old = total - updated
            return False, f"{old} old replica{'s' if old != 1 else ''} pending termination"
        if ready < desired:
            return False, f"{ready}/{desired} ready"
        if available < desired:
            return False, f"{available}/{desired} available"
        return True, f"rolled out ({available}/{desired} available)"

    # StatefulSet
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") == "OnDelete":
        return False, "updateStrategy OnDelete: pods change only when deleted"
    partition = n((strategy.get("rollingUpdate") or {}).get("partition"))
    if updated < desired - partition:
        return False, f"{updated}/{desired - partition} updated"
    if ready < desired:
        return False, f"{ready}/{desired} ready"
    update_revision = status.get("updateRevision")
    if partition == 0 and update_revision and status.get("currentRevision") != update_revision:
        return False, f"{updated}/{desired} updated (rolling update in progress)"
    return True, f"rolled out ({ready}/{desired} ready)"


class KubernetesClusters:
    """`Clusters`: one cached `KubernetesClusterClient` per registry cluster, built on first use."""

    def __init__(self, credential: TokenCredential | None,
                 read_kubeconfig: Callable[[str], str]) -> None:
        self._credential = credential
        self._read_kubeconfig = read_kubeconfig
        self._lock = threading.Lock()
        self._clients: dict[Cluster, KubernetesClusterClient] = {}
        self._building: dict[Cluster, threading.Lock] = {}
        self._temp_dirs: list[str] = []

    def client(self, cluster: Cluster) -> KubernetesClusterClient:
        with self._lock:
            found = self._clients.get(cluster)
            if found is not None:
                return found
            building = self._building.setdefault(cluster, threading.Lock())
        # Build outside the shared lock (a kubeconfig comes from Key Vault over the network), once
        # per cluster: concurrent callers for the same cluster wait for the first one.
        with building:
            with self._lock:
                found = self._clients.get(cluster)
            if found is not None:
                return found
            made = KubernetesClusterClient(cluster.name, self._api_client(cluster))
            log.debug("kubernetes client for cluster %s built (auth %s)", cluster.name,
                      "aks" if isinstance(cluster.auth, AksAuth) else "kubeconfig")
            with self._lock:
                self._clients[cluster] = made
            return made

    def close(self) -> None:
        import shutil

        with self._lock:
            for c in self._clients.values():
                c.close()
            self._clients.clear()
            dirs, self._temp_dirs = self._temp_dirs, []
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)

    def _api_client(self, cluster: Cluster) -> Any:
        from kubernetes import client

        auth = cluster.auth
        if isinstance(auth, AksAuth):
            if self._credential is None:
                raise PermanentError(f"cluster {cluster.name}: auth 'aks' needs the app's Azure credential")
            try:
                ca = base64.b64decode(auth.ca_data, validate=True).decode("ascii")
            except (binascii.Error, ValueError):
                raise PermanentError(f"cluster {cluster.name}: caData is not base64") from None
            if "-----BEGIN CERTIFICATE-----" not in ca:
                raise PermanentError(f"cluster {cluster.name}: caData is not a base64 PEM certificate")
            conf = _configuration()
            conf.host = auth.server.rstrip("/")
            conf.ca_cert_data = ca
            conf.api_key = {"BearerToken": ""}
            conf.api_key_prefix = {"BearerToken": "Bearer"}
            conf.refresh_api_key_hook = _BearerRefresher(cluster.name, self._credential)
            return client.ApiClient(conf)
        if isinstance(auth, KubeconfigAuth):
            return self._kubeconfig_client(cluster.name, auth)
        raise PermanentError(f"cluster {cluster.name}: unsupported auth {type(auth).__name__}")

    def _kubeconfig_client(self, name: str, auth: KubeconfigAuth) -> Any:
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
        return client.ApiClient(conf)

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

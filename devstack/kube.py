"""Real Kubernetes for the local stack: one etcd and one kube-apiserver per cluster, on loopback.

There is no kube-apiserver package in Debian, so `scripts/kube-apiserver.sh` builds one (once) from
Debian's `kubernetes` source package and caches it outside the repository. Every cluster is a
kube-apiserver on the same etcd under its own `--etcd-prefix`, so clusters are isolated from each
other while costing one etcd. RBAC is on and authentication is a static token file, so the app can
be tested as its least-privilege identity with the Role shipped in `infra/k8s/`.

Processes are detached (own session) and recorded in `dir/pids/*.pid`, so `stop(dir)` works from
another process (e.g. `python -m devstack down`). Ports are always picked free; nothing
relies on etcd's or Kubernetes' default ports.

There is no controller-manager, scheduler or kubelet: Deployments are stored (their generation
bumps on a template change) but no pods appear. Tests that need a rollout state write the status.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "kube-apiserver.sh"
K8S_MANIFESTS = REPO / "infra" / "k8s"
KUBE_VERSION = "1.20.2"
ADMIN_USER = "devstack-admin"
ADMIN_GROUPS = ("system:masters",)
APP_USER = "apim-token-rotator"  # the kubeconfig identity's user name (infra/k8s/rolebinding-kubeconfig.yaml)
AKS_SERVER_SCOPE = "6dae42f8-4368-4678-94ff-3960e28e3630"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")


class KubeStackError(RuntimeError):
    """The real-Kubernetes part of the devstack cannot be built or started."""


# --- binaries ---------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("KUBE_CACHE") or Path.home() / ".cache" / "apim-token-rotator")


@dataclass(frozen=True, slots=True)
class KubeBinaries:
    kube_apiserver: Path
    etcd: Path


def find_binaries() -> KubeBinaries | None:
    """The cached kube-apiserver and the installed etcd, or None when either is missing."""
    apiserver = cache_dir() / f"kube-apiserver-{KUBE_VERSION}" / "kube-apiserver"
    etcd = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if etcd is None or not os.access(apiserver, os.X_OK):
        return None
    return KubeBinaries(kube_apiserver=apiserver, etcd=Path(etcd))


def ensure_binaries(*, build: bool = True, timeout: float = 1800) -> KubeBinaries:
    """The binaries, building kube-apiserver (minutes, once) via scripts/kube-apiserver.sh if missing.

    The script's progress goes to this process's stderr. Raises KubeStackError when it cannot.
    """
    found = find_binaries()
    if found is not None:
        return found
    if not build:
        raise KubeStackError(
            f"kube-apiserver {KUBE_VERSION} is not cached in {cache_dir()} (or etcd is not installed); "
            f"run `sudo {SCRIPT}` once (builds it from Debian's kubernetes source package, ~3-5 min)"
        )
    try:
        with subprocess.Popen(["bash", str(SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True,
                              stdin=subprocess.DEVNULL) as proc:
            assert proc.stdout is not None
            started = time.monotonic()
            for line in proc.stdout:  # progress, streamed; the last line is the binary's path
                print(line.rstrip("\n"), file=sys.stderr, flush=True)
                if time.monotonic() - started > timeout:
                    proc.kill()
                    raise KubeStackError(f"{SCRIPT} took longer than {timeout:.0f}s")
            code = proc.wait()
    except OSError as exc:
        raise KubeStackError(f"{SCRIPT} could not run: {exc}") from exc
    if code != 0:
        raise KubeStackError(f"{SCRIPT} failed (exit {code}); see its output above")
    found = find_binaries()
    if found is None:
        raise KubeStackError(f"{SCRIPT} finished but no kube-apiserver/etcd binary was found")
    return found


# --- processes --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServingTLS:
    """PEM files the caller made (e.g. with trustme): the CA, and a cert/key for 127.0.0.1 + localhost."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    name: str
    server: str  # https://127.0.0.1:PORT
    admin_token: str = ""  # a system:masters token; never logged
    ca_pem: Path = Path()

    def __repr__(self) -> str:  # keep the admin token out of reprs and test output
        return f"ClusterInfo(name={self.name!r}, server={self.server!r}, ca_pem={str(self.ca_pem)!r})"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(directory: Path, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
    logs = directory / "logs"
    pids = directory / "pids"
    logs.mkdir(parents=True, exist_ok=True)
    pids.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        # A more eager Go GC: ~25% less resident memory per kube-apiserver, same start-up time.
        env = {**os.environ, "GOGC": os.environ.get("GOGC", "40")}
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=directory, env=env)
    (pids / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc


def _log_tail(directory: Path, name: str, lines: int = 15) -> str:
    try:
        text = (directory / "logs" / f"{name}.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _service_account_keys(directory: Path) -> tuple[Path, Path]:
    """An EC P-256 key pair for signing service-account tokens (cheap to make, ES256 is supported)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = directory / "sa.key", directory / "sa.pub"
    _write_private(priv, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _csv_field(value: str) -> str:
    if any(c in value for c in ',"\n\r'):
        if "\n" in value or "\r" in value:
            raise ValueError("token-file values cannot contain newlines")
        return '"' + value.replace('"', '""') + '"'
    return value


def _token_file(path: Path, tokens: Mapping[str, tuple[str, Sequence[str]]]) -> None:
    """kube-apiserver --token-auth-file: `token,user,uid,"group1,group2"`."""
    lines = []
    for token, (user, groups) in tokens.items():
        if not token or any(c in token for c in ',"\n\r '):
            raise ValueError(f"token for user {user!r} has characters a token file cannot hold")
        row = [token, _csv_field(user), _csv_field(user)]
        if groups:
            row.append('"' + ",".join(groups).replace('"', '""') + '"')
        lines.append(",".join(row))
    _write_private(path, ("\n".join(lines) + "\n").encode())


def _etcd_argv(etcd: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [
        str(etcd), "--name=devstack", f"--data-dir={data_dir}",
        f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=devstack={peer}", "--initial-cluster-state=new",
        "--quota-backend-bytes=268435456",  # 256 MiB is plenty for a few test clusters
        "--snapshot-count=5000", "--max-wals=2", "--max-snapshots=2",
        "--auto-compaction-mode=revision", "--auto-compaction-retention=1000",
        "--logger=zap", "--log-level=warn",
    ]


def _apiserver_argv(binary: Path, cdir: Path, name: str, port: int, etcd_url: str, tls: ServingTLS,
                    sa_key: Path, sa_pub: Path, token_file: Path) -> list[str]:
    return [
        str(binary),
        f"--etcd-servers={etcd_url}", f"--etcd-prefix=/{name}",
        "--bind-address=127.0.0.1", f"--secure-port={port}",
        f"--cert-dir={cdir}", f"--tls-cert-file={tls.cert}", f"--tls-private-key-file={tls.key}",
        f"--token-auth-file={token_file}", "--anonymous-auth=false",
        "--authorization-mode=RBAC",
        f"--service-account-key-file={sa_pub}", f"--service-account-signing-key-file={sa_key}",
        "--service-account-issuer=https://kubernetes.default.svc",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--disable-admission-plugins=ServiceAccount",
        # Smaller and quieter: nothing here needs these.
        "--profiling=false", "--enable-priority-and-fairness=false", "--watch-cache=false",
        "--endpoint-reconciler-type=none", "--event-ttl=5m", "--v=1",
    ]


def _readyz(info: ClusterInfo, context: ssl.SSLContext) -> bool:
    req = urllib.request.Request(f"{info.server}/readyz",
                                 headers={"Authorization": f"Bearer {info.admin_token}"})
    try:
        with urllib.request.urlopen(req, context=context, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def start_clusters(directory: Path | str, names: Sequence[str], tls: ServingTLS,
                   tokens: Mapping[str, tuple[str, Sequence[str]]], *,
                   binaries: KubeBinaries | None = None, timeout: float = 60.0) -> list[ClusterInfo]:
    """Starts one etcd and one kube-apiserver per name; returns once every `/readyz` answers 200.

    `tokens` maps a bearer token to (user, groups) for every non-admin identity (the app's users);
    each cluster also gets its own generated admin token (group `system:masters`). `tls` is the
    caller's CA and a serving cert for 127.0.0.1/localhost. On failure everything started is stopped.
    """
    d = Path(directory).resolve()
    if not names or len(set(names)) != len(names) or not all(_NAME.match(n) for n in names):
        raise ValueError(f"cluster names must be unique DNS labels, got {list(names)!r}")
    running = running_processes(d)
    if running:
        raise KubeStackError(f"{d} already runs {', '.join(running)}; stop({str(d)!r}) first")
    bins = binaries or ensure_binaries()
    d.mkdir(parents=True, exist_ok=True)
    (d / "kube").mkdir(exist_ok=True)
    etcd_port, peer_port = free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        data_dir = d / "kube" / "etcd"
        if data_dir.exists():
            shutil.rmtree(data_dir)
        procs["etcd"] = _spawn(d, "etcd", _etcd_argv(bins.etcd, data_dir, etcd_port, peer_port))
        infos: list[ClusterInfo] = []
        for name in names:
            cdir = d / "kube" / name
            cdir.mkdir(parents=True, exist_ok=True)
            sa_key, sa_pub = _service_account_keys(cdir)
            admin = secrets.token_urlsafe(32)
            token_file = cdir / "tokens.csv"
            _token_file(token_file, {admin: (ADMIN_USER, ADMIN_GROUPS), **tokens})
            port = free_port()
            procs[f"apiserver-{name}"] = _spawn(
                d, f"apiserver-{name}",
                _apiserver_argv(bins.kube_apiserver, cdir, name, port, etcd_url, tls, sa_key, sa_pub,
                                token_file))
            infos.append(ClusterInfo(name=name, server=f"https://127.0.0.1:{port}", admin_token=admin,
                                     ca_pem=Path(tls.ca_cert).resolve()))
        context = ssl.create_default_context(cafile=str(tls.ca_cert))
        pending = {i.name: i for i in infos}
        deadline = time.monotonic() + timeout
        while pending:
            for proc_name, proc in procs.items():
                if proc.poll() is not None:
                    raise KubeStackError(f"{proc_name} exited with {proc.returncode}:\n"
                                         f"{_log_tail(d, proc_name)}")
            for name, info in list(pending.items()):
                if _readyz(info, context):
                    del pending[name]
            if pending and time.monotonic() > deadline:
                first = next(iter(pending))
                raise KubeStackError(f"kube-apiserver {first} not ready after {timeout:.0f}s:\n"
                                     f"{_log_tail(d, f'apiserver-{first}')}")
            if pending:
                time.sleep(0.1)
        (d / "kube" / "clusters.json").write_text(json.dumps(
            [{"name": i.name, "server": i.server, "caPem": str(i.ca_pem)} for i in infos], indent=2))
        return infos
    except BaseException:
        stop(d)
        raise


def _is_ours(pid: int) -> bool:
    """The pid still runs etcd or kube-apiserver (not a recycled pid of something else)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return os.path.basename(cmd) in (b"etcd", b"kube-apiserver")


def running_processes(directory: Path | str) -> list[str]:
    """Names of the processes recorded in `dir/pids` that still run."""
    found = []
    for f in sorted((Path(directory) / "pids").glob("*.pid")):
        try:
            pid = int(f.read_text().strip())
        except (OSError, ValueError):
            continue
        if _is_ours(pid) and _alive(pid):
            found.append(f.stem)
    return found


def stop(directory: Path | str, *, grace: float = 5.0) -> list[str]:
    """Stops every process recorded in `dir/pids` (apiservers first, etcd last); returns their names."""
    pids_dir = Path(directory) / "pids"
    if not pids_dir.is_dir():
        return []
    files = sorted(pids_dir.glob("*.pid"), key=lambda p: (p.stem == "etcd", p.stem))
    stopped: list[str] = []
    for phase in (False, True):  # apiservers, then etcd
        waiting: list[tuple[int, Path]] = []
        for f in files:
            if (f.stem == "etcd") != phase:
                continue
            try:
                pid = int(f.read_text().strip())
            except (OSError, ValueError):
                f.unlink(missing_ok=True)
                continue
            if _is_ours(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)
                waiting.append((pid, f))
                stopped.append(f.stem)
            else:
                f.unlink(missing_ok=True)
        deadline = time.monotonic() + grace
        for pid, f in waiting:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                while _alive(pid) and time.monotonic() < deadline + 5:
                    time.sleep(0.05)
            if not _alive(pid):
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, 0)  # reap it if it is our child (no-op otherwise)
            f.unlink(missing_ok=True)
    return stopped


def _alive(pid: int) -> bool:
    # Reap our own child if it is one (otherwise it lingers as a zombie and looks alive).
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --- kubeconfig -------------------------------------------------------------------------------------


def kubeconfig_dict(clusters: Sequence[ClusterInfo], tokens: Mapping[str, str] | None = None, *,
                    user_prefix: str = "admin") -> dict[str, Any]:
    """A self-contained kubeconfig (CA embedded): one context per cluster, named after the cluster.

    `tokens` maps a cluster name to the bearer token of its user; default: the cluster's admin token.
    """
    entries_c, entries_u, entries_x = [], [], []
    for c in clusters:
        if tokens is not None and c.name not in tokens:
            continue
        token = tokens[c.name] if tokens is not None else c.admin_token
        user = f"{user_prefix}@{c.name}"
        entries_c.append({"name": c.name, "cluster": {
            "server": c.server,
            "certificate-authority-data": base64.b64encode(Path(c.ca_pem).read_bytes()).decode()}})
        entries_u.append({"name": user, "user": {"token": token}})
        entries_x.append({"name": c.name, "context": {"cluster": c.name, "user": user}})
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": entries_c, "users": entries_u, "contexts": entries_x,
        "current-context": entries_x[0]["name"] if entries_x else "",
    }


def kubeconfig_text(cluster: ClusterInfo, token: str, *, user: str = APP_USER) -> str:
    """A one-cluster kubeconfig for `token` (what the app keeps in Key Vault for `kubeconfig` auth)."""
    return yaml.safe_dump(kubeconfig_dict([cluster], {cluster.name: token}, user_prefix=user),
                          sort_keys=False)


def write_kubeconfig(path: Path | str, clusters: Sequence[ClusterInfo],
                     tokens: Mapping[str, str] | None = None) -> Path:
    """Writes `kubeconfig_dict(...)` (mode 0600: it holds tokens); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _write_private(p, yaml.safe_dump(kubeconfig_dict(clusters, tokens), sort_keys=False).encode())
    return p


# --- objects ----------------------------------------------------------------------------------------

# kind -> (API class, method suffix, namespaced)
_KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("CoreV1Api", "namespace", False),
    "Secret": ("CoreV1Api", "namespaced_secret", True),
    "ConfigMap": ("CoreV1Api", "namespaced_config_map", True),
    "ServiceAccount": ("CoreV1Api", "namespaced_service_account", True),
    "Deployment": ("AppsV1Api", "namespaced_deployment", True),
    "StatefulSet": ("AppsV1Api", "namespaced_stateful_set", True),
    "DaemonSet": ("AppsV1Api", "namespaced_daemon_set", True),
    "Role": ("RbacAuthorizationV1Api", "namespaced_role", True),
    "RoleBinding": ("RbacAuthorizationV1Api", "namespaced_role_binding", True),
    "ClusterRole": ("RbacAuthorizationV1Api", "cluster_role", False),
    "ClusterRoleBinding": ("RbacAuthorizationV1Api", "cluster_role_binding", False),
}


def api_client(cluster: ClusterInfo, token: str | None = None) -> Any:
    """A `kubernetes.client.ApiClient` for the cluster as admin (or as the bearer `token`)."""
    from kubernetes import client

    conf = client.Configuration()
    conf.host = cluster.server
    conf.ssl_ca_cert = str(cluster.ca_pem)
    conf.api_key = {"BearerToken": token if token is not None else cluster.admin_token}
    conf.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(conf)


def apply(cluster: ClusterInfo, docs: Iterable[Mapping[str, Any]], *, api: Any = None) -> list[Any]:
    """Server-side applies each manifest as admin (creates or updates); returns the objects.

    Supports the kinds in `_KINDS`; a document without `metadata.namespace` in a namespaced kind
    goes to `default`.
    """
    from kubernetes import client

    own = api is None
    cli = api if api is not None else api_client(cluster)
    out: list[Any] = []
    try:
        for doc in docs:
            if not doc:
                continue
            kind = doc.get("kind")
            if kind not in _KINDS:
                raise ValueError(f"apply: unsupported kind {kind!r} (supported: {', '.join(_KINDS)})")
            cls_name, suffix, namespaced = _KINDS[kind]
            api_obj = getattr(client, cls_name)(cli)
            meta = doc.get("metadata") or {}
            args: list[str] = [meta["name"]]
            if namespaced:
                args.append(meta.get("namespace") or "default")
            body = json.loads(json.dumps(dict(doc)))  # plain JSON types
            out.append(getattr(api_obj, f"patch_{suffix}")(
                *args, body, field_manager="devstack", force=True,
                _content_type="application/apply-patch+yaml", _request_timeout=30))
    finally:
        if own:
            cli.close()
    return out


def load_yaml(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


# --- RBAC from infra/k8s ----------------------------------------------------------------------------


def _flow_list(names: Iterable[str]) -> str:
    return ", ".join(json.dumps(n) for n in names)


def rbac_variables(namespace: str, secret: str, workloads: Sequence[str], principal: str) -> dict[str, str]:
    """The `${VAR}` values of the infra/k8s templates (what a user exports before `envsubst`)."""
    by_kind: dict[str, list[str]] = {"deployment": [], "statefulset": [], "daemonset": []}
    for w in workloads:
        kind, _, name = str(w).partition("/")
        if kind.lower() not in by_kind or not name:
            raise ValueError(f"workload must be deployment/NAME, statefulset/NAME or daemonset/NAME: {w!r}")
        by_kind[kind.lower()].append(name)
    return {
        "NAMESPACE": namespace,
        "SECRET_NAME": secret,
        "DEPLOYMENTS": _flow_list(by_kind["deployment"]),
        "STATEFULSETS": _flow_list(by_kind["statefulset"]),
        "DAEMONSETS": _flow_list(by_kind["daemonset"]),
        "PRINCIPAL": principal,
    }


def render_template(text: str, variables: Mapping[str, str]) -> str:
    """`envsubst` semantics for `${VAR}`: unknown variables are an error here (envsubst blanks them)."""
    missing = sorted({m for m in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text) if m not in variables})
    if missing:
        raise KeyError(f"template variables without a value: {', '.join(missing)}")
    return string.Template(text).substitute(variables)


def render_rbac(namespace: str, secret: str, workloads: Sequence[str], principal: str,
                kind: str) -> list[dict[str, Any]]:
    """The Role and RoleBinding from `infra/k8s/` for one target, exactly as a user renders them.

    `kind` is the cluster's auth (`aks`: `principal` is the managed identity's object id;
    `kubeconfig`: the user name in the kubeconfig's credentials, e.g. `apim-token-rotator`).
    """
    if kind not in ("aks", "kubeconfig"):
        raise ValueError(f"kind must be 'aks' or 'kubeconfig', got {kind!r}")
    variables = rbac_variables(namespace, secret, workloads, principal)
    docs: list[dict[str, Any]] = []
    for file in ("role.yaml", f"rolebinding-{kind}.yaml"):
        docs.extend(load_yaml(render_template((K8S_MANIFESTS / file).read_text(), variables)))
    return docs

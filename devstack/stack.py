"""The whole local stack: fake Azure endpoints + real kube-apiservers, seeded with near-expiry tokens.

`up(dir)` starts everything detached and returns once it is ready, leaving behind:
- `dir/settings.json`: the app settings (flat JSON) that point the real app at the stack;
- `dir/kubeconfig`: an admin context per cluster, named after the registry's cluster names;
- `dir/stack.json`: what tests and `down` need (cluster servers, admin tokens, control URLs).
`down(dir)` stops it. `up` on a directory that held a stack before (stopped, crashed, killed, or left
over from before a reboot) first stops whatever of it still runs, by its recorded pids (`devstack.pidfile`),
and starts from fresh state: new etcd data, new fakes, an empty Azurite workspace. The registry has
three gateways over two clusters (`east` with `aks` auth, `west` with `kubeconfig` auth); `gw-shared`
has targets in both.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devstack import kube, pidfile
from devstack.tls import DevCA

SUBSCRIPTION = "00000000-0000-4000-8000-000000000001"
SERVICE_ID = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-devstack/providers/"
              "Microsoft.ApiManagement/service/apim-devstack")
APP_PRINCIPAL = "7f3c1a52-0d4e-4f7b-9a61-5b2c8e9d0a11"  # the managed identity's object id on `aks` clusters
CLUSTERS = ("east", "west")
SEED_EXPIRES_IN = timedelta(days=3)  # inside RENEW_BEFORE_DAYS: the first event or sweep has work to do


def gateway_id(name: str) -> str:
    return f"{SERVICE_ID}/gateways/{name}"


def targets() -> dict[str, list[dict[str, Any]]]:
    """gateway name → its targets, in registry form.

    Each target has the shape of one way gateways are deployed, so `discover` and the consumption
    check have something real to find: `gw-east` as in Microsoft's token-rotation doc (key
    `config.service.auth.key`), `gw-shared` in `east` as the portal's deployment YAML (key `value`,
    `GatewayKey …`) and in `west` as a raw token read through a volume, `gw-west` as the Helm
    chart's Secret (key `gateway-key`, label `app.kubernetes.io/managed-by: Helm`).
    """
    return {
        "gw-east": [{"cluster": "east", "namespace": "apim", "secret": "gw-east-token",
                     "restart": ["deployment/gw-east"]}],
        "gw-shared": [
            {"cluster": "east", "namespace": "apim", "secret": "gw-shared-token", "key": "value",
             "restart": ["deployment/gw-shared"]},
            {"cluster": "west", "namespace": "gateways", "secret": "gw-shared-token", "key": "value",
             "format": "{token}", "restart": ["statefulset/gw-shared"]},
        ],
        "gw-west": [{"cluster": "west", "namespace": "gateways", "secret": "gw-west-token", "key": "gateway-key",
                     "restart": ["daemonset/gw-west"]}],
    }


# A gateway APIM has but no cluster runs (discover reports it), and a token of one APIM no longer has.
UNUSED_GATEWAY = "gw-unused"
RETIRED_GATEWAY = "gw-retired"
HELM_LABELS = {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/name": "azure-api-management-gateway",
               "app.kubernetes.io/instance": "gw-west"}


def secret_labels(target: dict[str, Any]) -> dict[str, str]:
    """The Helm-shaped target's Secret carries the chart's labels (the chart's key is `gateway-key`)."""
    return dict(HELM_LABELS) if target.get("key") == "gateway-key" else {}


@dataclass(frozen=True)
class Stack:
    """A running stack, as recorded in `dir/stack.json`."""

    dir: Path
    settings: dict[str, str]
    clusters: list[kube.ClusterInfo]
    arm_url: str
    keyvault_url: str
    identity_url: str
    ca: str
    eventgrid_url: str = ""

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Stack:
        d = Path(directory)
        raw = json.loads((d / "stack.json").read_text())
        return cls(
            dir=d, settings=json.loads((d / "settings.json").read_text()),
            clusters=[kube.ClusterInfo(c["name"], c["server"], c["adminToken"], Path(c["ca"]))
                      for c in raw["clusters"]],
            arm_url=raw["arm"], keyvault_url=raw["keyvault"], identity_url=raw["identity"], ca=raw["ca"],
            eventgrid_url=raw.get("eventgrid", ""),
        )

    def cluster(self, name: str) -> kube.ClusterInfo:
        return next(c for c in self.clusters if c.name == name)

    def admin(self, name: str) -> Any:
        """A kubernetes ApiClient with cluster-admin rights (for seeding and checking, not the app)."""
        return kube.api_client(self.cluster(name))

    # --- control planes of the fakes --------------------------------------------------------------

    def control(self, base: str, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        ctx = ssl.create_default_context(cafile=self.ca) if base.startswith("https") else None
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def arm(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self.control(self.arm_url, method, path, body)

    def keyvault(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self.control(self.keyvault_url, method, path, body)

    def outcome_events(self) -> list[dict[str, Any]]:
        """The CloudEvents the app published to the outcome topic."""
        return [e["event"] for e in self.control(self.eventgrid_url, "GET", "/_devstack/events")]

    def verify(self, gateway: str, token: str) -> dict[str, Any]:
        return self.arm("POST", "/_devstack/verify", {"gatewayId": gateway_id(gateway), "token": token})  # type: ignore[no-any-return]

    def sign(self, gateway: str, expiry: datetime, key_type: str = "primary") -> str:
        return str(self.arm("POST", "/_devstack/sign", {"gatewayId": gateway_id(gateway), "keyType": key_type,
                                                        "expiry": expiry.isoformat()})["value"])


def _registry(ca_pem: bytes, east: kube.ClusterInfo) -> dict[str, Any]:
    return {
        "clusters": [
            {"name": "east", "auth": "aks", "server": east.server, "caData": base64.b64encode(ca_pem).decode()},
            {"name": "west", "auth": "kubeconfig", "kubeconfigSecret": "kubeconfig-west"},
        ],
        "gateways": [{"id": gateway_id(name), "targets": t} for name, t in targets().items()],
    }


def _workload(kind: str, name: str, namespace: str, target: dict[str, Any] | None = None) -> dict[str, Any]:
    """A workload reading its target's Secret key the way its deployment shape does: the env var
    `config.service.auth` from a `secretKeyRef` (portal YAML, Helm chart, rotation doc), or, for the
    StatefulSet, a `secret` volume. Without a target: every key of Secret `{name}-token` (envFrom)."""
    api_kind = {"deployment": "Deployment", "statefulset": "StatefulSet", "daemonset": "DaemonSet"}[kind]
    labels = {"app": name}
    container: dict[str, Any] = {"name": "gateway", "image": "mcr.microsoft.com/azure-api-management/gateway:v2"}
    pod: dict[str, Any] = {"containers": [container]}
    if target is None:
        container["envFrom"] = [{"secretRef": {"name": f"{name}-token"}}]
    elif kind == "statefulset":
        container["volumeMounts"] = [{"name": "gateway-token", "mountPath": "/etc/gateway", "readOnly": True}]
        pod["volumes"] = [{"name": "gateway-token", "secret": {"secretName": target["secret"]}}]
    else:
        container["env"] = [{"name": "config.service.auth", "valueFrom": {
            "secretKeyRef": {"name": target["secret"], "key": target.get("key", "config.service.auth.key")}}}]
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if kind != "daemonset":
        spec["replicas"] = 1
    if kind == "statefulset":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": api_kind, "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def _spawn(d: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """A detached helper process; its pid goes to `d/NAME.pid` (not pids/: that folder is kube.stop()'s)."""
    with open(d / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=Path(__file__).resolve().parent.parent, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    pidfile.write(d / f"{name}.pid", proc.pid)
    return proc


def _marks(d: Path, name: str) -> tuple[str, ...]:
    """What `_spawn`'s argv for `name` in `d` holds: a pid running anything else is not ours to stop."""
    return (f"devstack.{name}", str(d))


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the fake Azure endpoints exited early (code {proc.returncode}); "
                               f"see {path.parent}/fakes.log")
        if time.monotonic() > end:
            raise RuntimeError(f"the fake Azure endpoints did not start within {timeout:.0f}s")
        time.sleep(0.05)


def up(directory: str | os.PathLike[str], *, say: Any = print, with_azurite: bool = False) -> Stack:
    """Start and seed the stack; returns once everything answers.

    `with_azurite` also starts Azurite (blob, HTTPS, OAuth) with a `gateway-leases` container
    (LEASE_CONTAINER_URL) and a `deadletter` container and puts
    its URL in `DEADLETTER_BLOB_URL`, so `replay-deadletter` can be tried locally.
    """
    from devstack import azurite

    d = Path(directory).resolve()
    # Unconditionally: an `up` killed before it wrote stack.json leaves processes (and pid files) too.
    down(d)
    d.mkdir(parents=True, exist_ok=True)
    if kube.find_binaries() is None:
        say("building kube-apiserver 1.20.2 from Debian's source package (first run only, a few minutes)…")
    binaries = kube.ensure_binaries()
    ca = DevCA.load_or_create(d)
    kube_cert, kube_key = ca.issue(d, "kube-apiserver")

    aks_token = "aks-" + secrets.token_urlsafe(24)        # what the identity endpoint hands out for AKS
    kubeconfig_token = "kc-" + secrets.token_urlsafe(24)  # the app's user in the west kubeconfig
    config = {"identity": {"tokens": {kube.AKS_SERVER_SCOPE: aks_token,
                                      azurite.STORAGE_RESOURCE: azurite.storage_token()}},
              "arm": {"gateways": [gateway_id(n) for n in (*targets(), UNUSED_GATEWAY)]}}
    (d / "fakes-config.json").write_text(json.dumps(config))
    (d / "fakes.json").unlink(missing_ok=True)
    proc = _spawn(d, "fakes", [sys.executable, "-m", "devstack.fakes", "--dir", str(d),
                                "--config", str(d / "fakes-config.json")])
    try:
        _wait_for(d / "fakes.json", proc, 30)
        fakes = json.loads((d / "fakes.json").read_text())
        say("starting etcd and two kube-apiservers (RBAC on)…")
        clusters = kube.start_clusters(
            d, CLUSTERS, kube.ServingTLS(Path(ca.ca_path), Path(kube_cert), Path(kube_key)),
            {aks_token: (APP_PRINCIPAL, ()), kubeconfig_token: (kube.APP_USER, ())}, binaries=binaries)
        by_name = {c.name: c for c in clusters}
        registry = _registry(ca.ca_pem, by_name["east"])
        settings = {
            "ROTATION_REGISTRY": json.dumps(registry),
            "KEY_VAULT_URL": fakes["keyvault"]["url"],
            "ARM_ENDPOINT": fakes["arm"]["url"],
            "TOKEN_LIFETIME_DAYS": "29",
            "RENEW_BEFORE_DAYS": "7",
            "ROTATION_DEADLINE_SECONDS": "20",
            "SWEEP_SCHEDULE": "0 0 * * * *",
            "ROTATION_LOCAL_EMULATORS": "true",
            "OUTCOME_TOPIC_ENDPOINT": fakes["eventgrid"]["endpoint"],
            **fakes["env"],
        }
        stack = Stack(d, settings, clusters, fakes["arm"]["url"], fakes["keyvault"]["url"],
                      fakes["identity"]["url"], fakes["ca"], fakes["eventgrid"]["url"])
        _private(d / "settings.json", json.dumps(settings, indent=2))
        _private(d / "stack.json", json.dumps({
            "clusters": [{"name": c.name, "server": c.server, "adminToken": c.admin_token, "ca": str(c.ca_pem)}
                         for c in clusters],
            "arm": stack.arm_url, "keyvault": stack.keyvault_url, "identity": stack.identity_url,
            "eventgrid": stack.eventgrid_url,
            "ca": stack.ca, "createdAt": datetime.now(UTC).isoformat(),
        }, indent=2))
        kube.write_kubeconfig(d / "kubeconfig", clusters)
        say("seeding gateways, Secrets, workloads and least-privilege RBAC from infra/k8s/…")
        _seed(stack, kubeconfig_token)
        _spawn(d, "controller", [sys.executable, "-m", "devstack.controller", "--dir", str(d)])
        if with_azurite:
            say("starting Azurite (blob, HTTPS, OAuth) for the gateway leases and dead letters…")
            blob = azurite.start(d, ca, fresh=True)  # an earlier stack's leases and dead letters are stale
            container = blob.container_url("deadletter")
            _create_container(container, ca.ca_path)
            settings["DEADLETTER_BLOB_URL"] = container
            # The per-gateway leases live in the app's storage account in Azure (infra: gateway-leases).
            leases = blob.container_url("gateway-leases")
            _create_container(leases, ca.ca_path)
            settings["LEASE_CONTAINER_URL"] = leases
            _private(d / "settings.json", json.dumps(settings, indent=2))
        return stack
    except BaseException:
        down(d)
        raise


def _seed(stack: Stack, kubeconfig_token: str) -> None:
    """Once per stack: the west kubeconfig in Key Vault, namespaces, RBAC from infra/k8s/, a decoy Secret."""
    stack.keyvault("POST", "/_devstack/secrets", {
        "name": "kubeconfig-west", "value": kube.kubeconfig_text(stack.cluster("west"), kubeconfig_token),
        "contentType": "application/yaml"})
    docs: dict[str, list[dict[str, Any]]] = {name: [] for name in CLUSTERS}
    namespaces: dict[str, set[str]] = {name: set() for name in CLUSTERS}
    for gateway_targets in targets().values():
        for t in gateway_targets:
            cluster, ns = t["cluster"], t["namespace"]
            if ns not in namespaces[cluster]:
                namespaces[cluster].add(ns)
                docs[cluster].append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            auth = "aks" if cluster == "east" else "kubeconfig"
            principal = APP_PRINCIPAL if auth == "aks" else kube.APP_USER
            docs[cluster].extend(kube.render_rbac(ns, t["secret"], t.get("restart", []), principal, auth))
    # Decoys in the same namespace: the app must get 403 on them (tests check least privilege), and
    # discover must not take them for targets: a token of a gateway APIM does not have, and a value
    # that starts like a portal token but is not one.
    stamp = (datetime.now(UTC) + timedelta(days=20)).strftime("%Y%m%d%H%M")
    retired = f"GatewayKey {RETIRED_GATEWAY}&{stamp}&{base64.b64encode(secrets.token_bytes(64)).decode()}"
    docs["east"].extend([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated-secret", "namespace": "apim"},
         "stringData": {"password": "not-for-the-rotator"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "legacy-gateway-token", "namespace": "apim"},
         "stringData": {"value": retired}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "looks-like-a-token", "namespace": "apim"},
         "stringData": {"value": "GatewayKey gw-east&in-twenty-days&see-the-portal",
                        "notes": "gw-east&202612312359&"}},
    ])
    for name in CLUSTERS:
        kube.apply(stack.cluster(name), docs[name])
    seed_tokens(stack)


def seed_tokens(stack: Stack, expires_in: timedelta = SEED_EXPIRES_IN) -> dict[str, str]:
    """Every gateway's token, expiring in `expires_in`, in Key Vault and in every target; workloads reset.

    Returns gateway name → the seeded token (tests register these with their leak check).
    """
    from rotation.core.model import GatewayRef, KeyType, TokenRecord
    from rotation.core.registry import default_secret_name
    from rotation.core.tags import CONTENT_TYPE, tags_for
    from rotation.core.token import GatewayToken

    expiry = (datetime.now(UTC) + expires_in).replace(second=0, microsecond=0)
    docs: dict[str, list[dict[str, Any]]] = {name: [] for name in CLUSTERS}
    seeded: dict[str, str] = {}
    for gateway, gateway_targets in targets().items():
        token = GatewayToken.parse(stack.sign(gateway, expiry))
        seeded[gateway] = token.value
        record = TokenRecord(token, KeyType.PRIMARY, gateway_id(gateway))
        stack.keyvault("POST", "/_devstack/secrets", {
            "name": default_secret_name(GatewayRef.parse(gateway_id(gateway))), "value": token.value,
            "contentType": CONTENT_TYPE, "tags": tags_for(record), "expires": token.expires_at.isoformat()})
        for t in gateway_targets:
            docs[t["cluster"]].append({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": t["secret"], "namespace": t["namespace"], "labels": secret_labels(t)},
                "stringData": {t.get("key", "config.service.auth.key"):
                               token.formatted(t.get("format", "GatewayKey {token}"))}})
            for w in t.get("restart", []):
                kind, _, name = w.partition("/")
                docs[t["cluster"]].append(_workload(kind, name, t["namespace"], t))
    for name in CLUSTERS:
        kube.apply(stack.cluster(name), docs[name])
    return seeded


def _create_container(url: str, ca_path: str) -> None:
    """Create Container answers 409 ContainerAlreadyExists when it exists (Blob service REST reference,
    "Create Container"): an existing container is what this step wants, so that is fine too."""
    from azure.core.credentials import AccessToken
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import ContainerClient

    from devstack import azurite

    class _Static:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken(azurite.storage_token(), int(time.time()) + 3600)

    with (ContainerClient.from_container_url(url, credential=_Static(), connection_verify=ca_path) as client,
          contextlib.suppress(ResourceExistsError)):
        client.create_container()


def _private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def down(directory: str | os.PathLike[str]) -> list[str]:
    """Stop everything `up` started in `dir` (idempotent); returns what was still running.

    Only by the pids the stack recorded, and only while each still runs what was started there
    (`pidfile`): after a reboot those pids may be anybody's. Stale pid files are dropped.
    """
    d = Path(directory).resolve()
    stopped = [name for name in ("controller", "fakes") if pidfile.stop(d / f"{name}.pid", _marks(d, name))]
    stopped += kube.stop(d)
    from devstack import azurite

    if azurite.stop(d):
        stopped.append("azurite")
    (d / "stack.json").unlink(missing_ok=True)
    (d / "controller.paused").unlink(missing_ok=True)
    return stopped


def env_of(stack_dir: str | os.PathLike[str]) -> dict[str, str]:
    return dict(json.loads((Path(stack_dir) / "settings.json").read_text()))



"""`python -m rotation discover`: propose a registry from what already runs, with the operator's access.

The thin I/O half of onboarding (the decisions are `rotation.core.discovery`): ARM lists each APIM
service's self-hosted gateways (`client.gateway.list_by_service`, with `DefaultAzureCredential`:
the operator's `az login`, environment or managed identity), and each kubeconfig context given is
scanned for Secrets and for the Deployments, StatefulSets and DaemonSets that read them.

This is the operator's kubeconfig on the operator's machine, loaded with the kubernetes client's own
loader: it is trusted like `kubectl` is. The app never runs this path and never gets list rights
(its Role in infra/k8s has get/patch on named objects only), so an app identity fails here clearly.

Secret values are decoded in memory to recognise tokens and dropped; output carries fingerprints.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from rotation.cloud import OperatorCloud, operator_cloud
from rotation.core.consumption import SecretUse, secret_uses, template_of
from rotation.core.discovery import (
    ALL_NAMESPACES,
    ClusterScan,
    Proposal,
    ScannedSecret,
    cluster_entry,
    distinct_contexts,
    parse_service_id,
    propose,
)
from rotation.core.errors import AccessDenied, InvalidInput, PermanentError, RotationError, UpstreamError
from rotation.core.model import GatewayRef, Workload, WorkloadKind

# Secret types that never hold a gateway token and can be large (Helm keeps whole releases in them).
SKIPPED_TYPES = frozenset({"helm.sh/release.v1", "kubernetes.io/service-account-token",
                           "kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg", "kubernetes.io/tls"})
MAX_VALUE = 4096  # a token is a few hundred characters
PAGE = 500
_KINDS = ((WorkloadKind.DEPLOYMENT, "deployment"), (WorkloadKind.STATEFULSET, "stateful_set"),
          (WorkloadKind.DAEMONSET, "daemon_set"))


# --- ARM --------------------------------------------------------------------------------------------


def list_gateways(service_ids: Sequence[str], credential: Any, endpoint: str, scope: str) -> list[GatewayRef]:
    """The self-hosted gateways of each service, in ARM's order."""
    from azure.mgmt.apimanagement import ApiManagementClient

    from rotation.adapters.credential import is_azure_error, translate
    from rotation.adapters.retry import retry_policy

    endpoint = endpoint.rstrip("/")
    found: list[GatewayRef] = []
    clients: dict[str, Any] = {}
    try:
        for service_id in service_ids:
            probe = GatewayRef.parse(f"{service_id}/gateways/probe")
            client = clients.get(probe.subscription)
            if client is None:
                client = clients[probe.subscription] = ApiManagementClient(
                    credential, probe.subscription, base_url=endpoint, retry_policy=retry_policy(None),
                    credential_scopes=[scope])
            what = f"ARM list gateways of {probe.service}"
            try:
                for item in client.gateway.list_by_service(probe.resource_group, probe.service):
                    ref = GatewayRef.parse(str(item.id))
                    if ref.service_id.lower() == service_id.lower():
                        found.append(ref)
            except RotationError:
                raise
            except Exception as exc:
                if is_azure_error(exc):
                    raise translate(exc, what) from None
                raise
    finally:
        for c in clients.values():
            c.close()
    return found


# --- Kubernetes -------------------------------------------------------------------------------------


def kubeconfig_path(given: str | None) -> str:
    if given:
        return given
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return env or str(Path.home() / ".kube" / "config")


def _load_kubeconfig(path: str) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise InvalidInput(f"--kubeconfig {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise InvalidInput(f"--kubeconfig {path}: not valid YAML") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"--kubeconfig {path}: not a kubeconfig")
    return doc


def _named(doc: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    for item in doc.get(section) or []:
        if isinstance(item, dict) and item.get("name") == name:
            body = item.get(section[:-1])
            return body if isinstance(body, dict) else {}
    return {}


def context_entry(doc: dict[str, Any], context: str, *, aks: bool, base: Path) -> dict[str, Any]:
    """The registry cluster entry for `context`, with server and CA taken from the kubeconfig."""
    ctx = _named(doc, "contexts", context)
    if not ctx:
        known = ", ".join(str(c.get("name")) for c in doc.get("contexts") or [] if isinstance(c, dict))
        raise InvalidInput(f"context {context!r} is not in the kubeconfig (contexts: {known or 'none'})")
    cluster = _named(doc, "clusters", str(ctx.get("cluster")))
    ca = cluster.get("certificate-authority-data")
    if not ca and aks and cluster.get("certificate-authority"):
        ca_path = Path(str(cluster["certificate-authority"]))
        try:
            ca = base64.b64encode((ca_path if ca_path.is_absolute() else base / ca_path).read_bytes()).decode()
        except OSError as exc:
            raise InvalidInput(f"context {context}: certificate-authority {ca_path}: {exc.strerror}") from None
    return cluster_entry(context, server=cluster.get("server"), ca_data=ca, aks=aks)


def _api_client(path: str, context: str) -> Any:
    from kubernetes import config

    new_client: Any = config.new_client_from_config
    try:
        return new_client(config_file=path, context=context, persist_config=False)
    except Exception as exc:  # noqa: BLE001 - ConfigException and whatever a broken kubeconfig raises
        raise InvalidInput(f"context {context}: the kubeconfig cannot be used ({type(exc).__name__}: "
                           f"{str(exc)[:200]})") from None


def _pages(call: Any, what: str, context: str, *args: Any) -> Iterator[dict[str, Any]]:
    """Every item of a list call, page by page, as API JSON."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": PAGE, "_preload_content": False, "_request_timeout": 30}
        if token:
            kwargs["_continue"] = token
        try:
            response = call(*args, **kwargs)
            try:
                doc = json.loads(response.data or b"{}")
            finally:
                response.release_conn()
        except ApiException as exc:
            status = int(exc.status or 0)
            if status in (401, 403):
                verb = "unauthorized" if status == 401 else "forbidden"
                raise AccessDenied(
                    f"context {context}: {verb} to list {what}: discovery needs list on secrets, deployments, "
                    "statefulsets and daemonsets (an operator or admin context). The app's own identity is "
                    "least-privilege (get/patch on named objects, no list) and cannot discover") from None
            if status == 404:
                raise PermanentError(f"context {context}: {what} not found") from None
            raise UpstreamError(f"context {context}: list {what} failed ({status})") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise UpstreamError(f"context {context} unreachable: list {what}: {type(exc).__name__}") from None
        except ValueError:
            raise UpstreamError(f"context {context}: list {what} answered with a body that is not JSON") from None
        yield from (i for i in doc.get("items") or [] if isinstance(i, dict))
        token = (doc.get("metadata") or {}).get("continue")
        if not token:
            return


def _decoded(data: object) -> dict[str, str]:
    out: dict[str, str] = {}
    if not isinstance(data, dict):
        return out
    for key, raw in data.items():
        if not isinstance(raw, str) or len(raw) > MAX_VALUE * 2:
            continue
        try:
            out[str(key)] = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
    return out


def scan(api: Any, context: str, entry: dict[str, Any], namespaces: Sequence[str]) -> ClusterScan:
    """Secrets and workloads of one context (all namespaces, or the given ones)."""
    from kubernetes import client

    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    where: list[tuple[str | None, str]] = [(ns, f"in namespace {ns}") for ns in namespaces]
    where = where or [(None, "in all namespaces")]
    secrets: list[ScannedSecret] = []
    workloads: dict[str, list[tuple[Workload, tuple[SecretUse, ...]]]] = {}
    not_scanned: dict[str, str] = {}
    for ns, label in where:
        found: list[ScannedSecret] = []
        uses: dict[str, list[tuple[Workload, tuple[SecretUse, ...]]]] = {}
        try:
            _scan_one(core, apps, context, ns, label, found, uses)
        except AccessDenied as exc:
            if ns is None:
                raise  # nothing could be scanned: the operator's context is the wrong one
            # RBAC is per namespace: one the operator may not list must not lose what the others show.
            not_scanned[ns] = str(exc).split(": discovery needs", 1)[0]
            continue
        secrets.extend(found)
        for namespace, items in uses.items():
            workloads.setdefault(namespace, []).extend(items)
    if where and len(not_scanned) == len(where):
        raise AccessDenied(f"context {context}: forbidden to list in every given namespace "
                           f"({', '.join(not_scanned)}): discovery needs list on secrets, deployments, "
                           "statefulsets and daemonsets there (an operator or admin context). The app's own "
                           "identity is least-privilege (get/patch on named objects, no list) and cannot discover")
    return ClusterScan(context, entry, secrets, workloads, not_scanned)


def _scan_one(core: Any, apps: Any, context: str, ns: str | None, label: str, secrets: list[ScannedSecret],
              workloads: dict[str, list[tuple[Workload, tuple[SecretUse, ...]]]]) -> None:
    """Secrets and workloads of one namespace (or all): a 403 on any list raises AccessDenied."""
    listing = (core.list_namespaced_secret, (ns,)) if ns else (core.list_secret_for_all_namespaces, ())
    for item in _pages(listing[0], f"secrets {label}", context, *listing[1]):
        if item.get("type") in SKIPPED_TYPES:
            continue
        meta = item.get("metadata") or {}
        secrets.append(ScannedSecret(str(meta.get("namespace")), str(meta.get("name")),
                                     {str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
                                     _decoded(item.get("data"))))
    for kind, suffix in _KINDS:
        call = (getattr(apps, f"list_namespaced_{suffix}"), (ns,)) if ns else \
            (getattr(apps, f"list_{suffix}_for_all_namespaces"), ())
        for item in _pages(call[0], f"{kind.value}s {label}", context, *call[1]):
            meta = item.get("metadata") or {}
            uses = secret_uses(template_of(item))
            workloads.setdefault(str(meta.get("namespace")), []).append(
                (Workload(kind, str(meta.get("name"))), uses))


def discover(service_ids: Sequence[str], *, kubeconfig: str, contexts: Sequence[str], namespaces: Sequence[str],
             aks: Sequence[str] = (), principal: str | None = None, credential: Any = None,
             where: OperatorCloud | None = None) -> tuple[Proposal, list[GatewayRef]]:
    """Everything `discover` prints, from ARM and the contexts (nothing is written anywhere)."""
    services = list(dict.fromkeys(parse_service_id(s) for s in service_ids))
    doc = _load_kubeconfig(kubeconfig)
    chosen = list(dict.fromkeys(contexts)) or [str(doc.get("current-context") or "")]
    distinct_contexts(chosen)
    if not chosen[0]:
        raise InvalidInput(f"--kubeconfig {kubeconfig} has no current-context: pass --context NAME")
    unknown_aks = sorted(set(aks) - set(chosen))
    if unknown_aks:
        raise InvalidInput(f"--aks {unknown_aks[0]} is not one of the scanned contexts ({', '.join(chosen)})")
    entries = {c: context_entry(doc, c, aks=c in aks, base=Path(kubeconfig).resolve().parent) for c in chosen}
    where = where or operator_cloud(os.environ)
    if where.arm_endpoint_problem is not None:
        raise InvalidInput(where.arm_endpoint_problem)
    if credential is None:
        from rotation.adapters.credential import build_credential
        from rotation.settings import hosted_in_azure

        # The operator's own login (az, azd, environment); managed identity only on an Azure host.
        credential = build_credential(os.environ.get("AZURE_CLIENT_ID") or None,
                                      developer=hosted_in_azure(os.environ) is None,
                                      authority=where.cloud.authority_host)
    gateways = list_gateways(services, credential, where.arm_endpoint, where.cloud.arm_scope)
    scans = []
    failures: list[RotationError] = []
    for context in chosen:
        api = _api_client(kubeconfig, context)
        try:
            scans.append(scan(api, context, entries[context], namespaces))
        except (AccessDenied, UpstreamError) as exc:
            # One context the operator may not list, or cannot reach, must not lose what the others show.
            failures.append(exc)
            scans.append(ClusterScan(context, entries[context], [], {},
                                     {ALL_NAMESPACES: str(exc).split(": discovery needs", 1)[0]}))
        finally:
            api.close()
    if len(failures) == len(chosen):
        raise failures[0]  # nothing was scanned: the error itself is the answer
    return propose(gateways, scans, principal=principal), gateways


# --- the command ------------------------------------------------------------------------------------


def _yaml(docs: Sequence[dict[str, Any]]) -> str:
    import yaml

    return "".join("---\n" + yaml.safe_dump(d, sort_keys=False, default_flow_style=None) for d in docs)


def _print(proposal: Proposal, gateways: Sequence[GatewayRef], contexts: Sequence[str], namespaces: Sequence[str],
           out: TextIO, wrote: str | None) -> None:
    scope = ", ".join(namespaces) if namespaces else "all namespaces"
    print(f"discover: {len(gateways)} self-hosted gateway(s) in APIM; scanned {', '.join(contexts)} ({scope})",
          file=out)
    for ref in gateways:
        mine = [t for t in proposal.targets if t.gateway == ref]
        print(f"  {ref}: {len(mine)} target(s)", file=out)
        for t in mine:
            restart = ", ".join(str(w) for w in t.restart) or "nothing (no workload reads it)"
            print(f"    {t.cluster}/{t.namespace}/{t.secret} key {t.key!r} format {t.format!r}: token "
                  f"{t.fingerprint} expires {t.expires_at[:16]}Z; restart {restart}"
                  + ("; Secret managed by Helm" if t.helm else ""), file=out)
    for item in proposal.unmatched:
        where = (f"{item['cluster']}/{item['namespace']}/{item['secret']} key {item['key']!r}: " if "secret" in item
                 else f"{item['cluster']}/{item['namespace']}: " if "namespace" in item
                 else f"{item['cluster']}: " if "cluster" in item else "")
        print(f"  unmatched ({item['kind']}): {where}{item['detail']}", file=out)
    for item in proposal.warnings:
        print(f"  warning ({item['kind']}) {item['cluster']}/{item['namespace']}/{item['secret']}: {item['detail']}",
              file=out)
    if wrote:
        print(f"registry proposal written to {wrote}; review it, then: python -m rotation validate-registry "
              f"{wrote} --live", file=out)
    else:
        print("registry proposal (review it, save it, then: python -m rotation validate-registry FILE --live):",
              file=out)
        print(json.dumps(proposal.registry, indent=2), file=out)
    for cluster, docs in proposal.manifests.items():
        print(f"RBAC for cluster {cluster} (kubectl --context {cluster} apply -f -):", file=out)
        print(_yaml(docs), end="", file=out)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """The `discover` command: exit 0 when every gateway has a target and every token a gateway."""
    from rotation.core.registry import load_registry

    kubeconfig = kubeconfig_path(args.kubeconfig)
    try:
        where = operator_cloud(os.environ)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    proposal, gateways = discover(args.service, kubeconfig=kubeconfig, contexts=args.context or [],
                                  namespaces=args.namespace or [], aks=args.aks or [], principal=args.principal,
                                  where=where)
    # What validate-registry will say (same cloud rule); a bug here must not write a file.
    load_registry(proposal.registry, aks_servers=where.cloud.aks_rule(allow_loopback=where.local_emulators))
    if args.out:
        path = Path(args.out)
        try:
            path.write_text(json.dumps(proposal.registry, indent=2) + "\n")
        except OSError as exc:
            raise InvalidInput(f"--out {args.out}: {exc.strerror}") from None
    if args.json:
        json.dump(proposal.to_dict(), out, indent=2)
        print(file=out)
    else:
        contexts = args.context or ["(current context)"]
        _print(proposal, gateways, contexts, args.namespace or [], out, args.out)
    return 0 if not proposal.unmatched else 1


def add_parser(sub: Any, epilog: str) -> None:
    c = sub.add_parser(
        "discover", epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="propose a registry from the gateways in APIM and the Secrets already in the clusters",
        description="List the self-hosted gateways of APIM services (ARM, your Azure login), find the Secrets "
                    "holding their tokens and the workloads reading them in your kubeconfig contexts, and print a "
                    "registry proposal and the RBAC each target needs. Never prints a token; writes nothing "
                    "but --out.")
    c.set_defaults(func=run)
    c.add_argument("--service", action="append", required=True, metavar="SERVICE_ID",
                   help="full ARM id of an APIM service (repeatable)")
    c.add_argument("--kubeconfig", metavar="FILE", help="default: $KUBECONFIG, else ~/.kube/config")
    c.add_argument("--context", action="append", metavar="NAME",
                   help="kubeconfig context to scan (repeatable; default: the current context); the proposal's "
                        "cluster names are the context names")
    c.add_argument("--namespace", action="append", metavar="NS",
                   help="scan only these namespaces (repeatable; default: all, which needs cluster-wide list)")
    c.add_argument("--aks", action="append", metavar="CONTEXT",
                   help="the app reaches this context's cluster with its managed identity (auth aks: server and "
                        "CA from the kubeconfig); default: auth kubeconfig with Key Vault secret kubeconfig-CONTEXT")
    c.add_argument("--principal", metavar="OBJECT_ID",
                   help="object id of the app's managed identity, for the RoleBindings on --aks clusters "
                        "(default: a ${PRINCIPAL} placeholder)")
    c.add_argument("--out", metavar="FILE", help="write the registry proposal (alone) to FILE")
    c.add_argument("--json", action="store_true",
                   help='print {"registry": ..., "unmatched": [...], "manifests": {...}, "warnings": [...]}')

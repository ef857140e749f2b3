"""`python -m rotation discover`: propose a registry from what already runs, with the operator's access.

The thin I/O half of onboarding (the decisions are `rotation.core.discovery`): ARM lists each APIM
service's self-hosted gateways (`rotation.adapters.arm`, with `DefaultAzureCredential`: the operator's
`az login`, environment or managed identity), and each kubeconfig context given is scanned for Secrets
and for the Deployments, StatefulSets and DaemonSets that read them (`rotation.adapters.kubelisting`:
the operator's kubeconfig, trusted like `kubectl` is). The app never runs this path and never gets
list rights (its Role in infra/k8s has get/patch on named objects only), so an app identity fails here
clearly.

Secret values are decoded in memory to recognise tokens and dropped; output carries fingerprints.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rotation.cloud import OperatorCloud
from rotation.core.consumption import SecretUse, secret_uses, template_of
from rotation.core.discovery import (
    ALL_NAMESPACES,
    ClusterScan,
    FoundTarget,
    Proposal,
    ScannedSecret,
    candidate_tokens,
    distinct_contexts,
    parse_service_id,
    propose,
)
from rotation.core.errors import AccessDenied, InvalidInput, RotationError, UpstreamError
from rotation.core.model import GatewayRef, KeyType, Workload, WorkloadKind
from rotation.core.ports import TokenIssuer
from rotation.core.token import GatewayToken
from rotation.settings import operator_cloud

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from rotation.adapters.kubelisting import ContextListing, OperatorKubeconfig

# Secret types that never hold a gateway token and can be large (Helm keeps whole releases in them).
SKIPPED_TYPES = frozenset({"helm.sh/release.v1", "kubernetes.io/service-account-token",
                           "kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg", "kubernetes.io/tls"})
PROOF_TIMEOUT = 20.0  # one generateToken asked to reproduce a found token
MAX_VALUE = 4096  # a token is a few hundred characters
PAGE = 500
KINDS = (WorkloadKind.DEPLOYMENT, WorkloadKind.STATEFULSET, WorkloadKind.DAEMONSET)
# Appended to a 401/403 of a list call (and cut off again where a namespace is reported as not scanned).
LIST_HINT = (": discovery needs list on secrets, deployments, statefulsets and daemonsets (an operator or admin "
             "context). The app's own identity is least-privilege (get/patch on named objects, no list) and "
             "cannot discover")


# --- ARM and Kubernetes, through the adapters -------------------------------------------------------


def kubeconfig_path(given: str | None) -> str:
    from rotation.settings import OperatorLogin

    return given or OperatorLogin.from_env().kubeconfig


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


def scan(listing: ContextListing, entry: dict[str, Any], namespaces: Sequence[str]) -> ClusterScan:
    """Secrets and workloads of one context (all namespaces, or the given ones)."""
    context = listing.context
    where: list[tuple[str | None, str]] = [(ns, f"in namespace {ns}") for ns in namespaces]
    where = where or [(None, "in all namespaces")]
    secrets: list[ScannedSecret] = []
    workloads: dict[str, list[tuple[Workload, tuple[SecretUse, ...]]]] = {}
    not_scanned: dict[str, str] = {}
    for ns, label in where:
        found: list[ScannedSecret] = []
        uses: dict[str, list[tuple[Workload, tuple[SecretUse, ...]]]] = {}
        try:
            _scan_one(listing, ns, label, found, uses)
        except AccessDenied as exc:
            if ns is None:
                raise  # nothing could be scanned: the operator's context is the wrong one
            # RBAC is per namespace: one the operator may not list must not lose what the others show.
            not_scanned[ns] = str(exc).split(LIST_HINT, 1)[0]
            continue
        secrets.extend(found)
        for namespace, items in uses.items():
            workloads.setdefault(namespace, []).extend(items)
    if where and len(not_scanned) == len(where):
        raise AccessDenied(f"context {context}: forbidden to list in every given namespace "
                           f"({', '.join(not_scanned)}){LIST_HINT}")
    return ClusterScan(context, entry, secrets, workloads, not_scanned)


def _scan_one(listing: ContextListing, ns: str | None, label: str, secrets: list[ScannedSecret],
              workloads: dict[str, list[tuple[Workload, tuple[SecretUse, ...]]]]) -> None:
    """Secrets and workloads of one namespace (or all): a 401/403 on any list raises AccessDenied."""
    try:
        for item in listing.secrets(ns, label, PAGE):
            if item.get("type") in SKIPPED_TYPES:
                continue
            meta = item.get("metadata") or {}
            secrets.append(ScannedSecret(str(meta.get("namespace")), str(meta.get("name")),
                                         {str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
                                         _decoded(item.get("data"))))
        for kind in KINDS:
            for item in listing.workloads(kind, ns, label, PAGE):
                meta = item.get("metadata") or {}
                uses = secret_uses(template_of(item))
                workloads.setdefault(str(meta.get("namespace")), []).append(
                    (Workload(kind, str(meta.get("name"))), uses))
    except AccessDenied as exc:
        raise AccessDenied(f"{exc}{LIST_HINT}") from None


def discover(service_ids: Sequence[str], *, kubeconfig: str, contexts: Sequence[str], namespaces: Sequence[str],
             aks: Sequence[str] = (), principal: str | None = None, credential: TokenCredential | None = None,
             where: OperatorCloud | None = None) -> tuple[Proposal, list[GatewayRef]]:
    """Everything `discover` prints, from ARM and the contexts (nothing is written anywhere)."""
    from rotation.adapters.kubelisting import OperatorKubeconfig

    services = list(dict.fromkeys(parse_service_id(s) for s in service_ids))
    config = OperatorKubeconfig(kubeconfig)
    chosen = list(dict.fromkeys(contexts)) or [config.current_context]
    distinct_contexts(chosen)
    if not chosen[0]:
        raise InvalidInput(f"--kubeconfig {kubeconfig} has no current-context: pass --context NAME")
    unknown_aks = sorted(set(aks) - set(chosen))
    if unknown_aks:
        raise InvalidInput(f"--aks {unknown_aks[0]} is not one of the scanned contexts ({', '.join(chosen)})")
    entries = {c: config.entry(c, aks=c in aks) for c in chosen}
    where = where or operator_cloud()
    if where.arm_endpoint_problem is not None:
        raise InvalidInput(where.arm_endpoint_problem)
    if credential is None:
        from rotation.adapters.credential import build_credential
        from rotation.settings import OperatorLogin

        # The operator's own login (az, azd, environment); managed identity only on an Azure host.
        login = OperatorLogin.from_env()
        credential = build_credential(login.client_id, developer=not login.in_azure,
                                      authority=where.cloud.authority_host)
    from rotation.adapters.arm import ArmTokenIssuer

    arm = ArmTokenIssuer(credential, where.arm_endpoint, scope=where.cloud.arm_scope)
    try:
        gateways = [ref for service_id in services for ref in arm.list_gateways(service_id)]
        scans = _scan_all(config, chosen, entries, namespaces)
        proven = prove_found(arm, candidate_tokens(gateways, scans))
    finally:
        arm.close()
    return propose(gateways, scans, principal=principal, proven=proven, now=datetime.now(UTC)), gateways


def prove_found(arm: TokenIssuer, found: Sequence[tuple[GatewayToken, list[GatewayRef]]]) -> dict[str, GatewayRef]:
    """Which found tokens ARM reproduces, and for which gateway: generateToken for the token's own
    expiry minute with each key of each gateway of that name (it invalidates nothing). The operator's
    credential needs the generateToken action, as the rotator's own role has."""
    proven: dict[str, GatewayRef] = {}
    for token, refs in found:
        for ref in refs:
            if any(_reproduces(arm, ref, key, token) for key in KeyType):
                proven[token.fingerprint] = ref
                break
    return proven


def _reproduces(arm: TokenIssuer, ref: GatewayRef, key: KeyType, token: GatewayToken) -> bool:
    try:
        return arm.generate_token(ref, key, token.expires_at, timeout=PROOF_TIMEOUT) == token.value
    except RotationError:
        return False  # refused or failing: nothing is proven, the value is reported unverified


def _scan_all(config: OperatorKubeconfig, chosen: Sequence[str], entries: dict[str, dict[str, Any]],
              namespaces: Sequence[str]) -> list[ClusterScan]:
    scans = []
    failures: list[RotationError] = []
    for context in chosen:
        listing = config.listing(context)
        try:
            scans.append(scan(listing, entries[context], namespaces))
        except (AccessDenied, UpstreamError) as exc:
            # One context the operator may not list, or cannot reach, must not lose what the others show.
            failures.append(exc)
            scans.append(ClusterScan(context, entries[context], [], {},
                                     {ALL_NAMESPACES: str(exc).split(LIST_HINT, 1)[0]}))
        finally:
            listing.close()
    if len(failures) == len(chosen):
        raise failures[0]  # nothing was scanned: the error itself is the answer
    return scans


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
        _print_gateway_targets(ref, [t for t in proposal.targets if t.gateway == ref], out)
    for item in proposal.unmatched:
        print(f"  unmatched ({item['kind']}): {_unmatched_where(item)}{item['detail']}", file=out)
    for item in proposal.warnings:
        print(f"  warning ({item['kind']}) {item['cluster']}/{item['namespace']}/{item['secret']}: {item['detail']}",
              file=out)
    _print_registry(proposal, wrote, out)
    for cluster, docs in proposal.manifests.items():
        print(f"RBAC for cluster {cluster} (kubectl --context {cluster} apply -f -):", file=out)
        print(_yaml(docs), end="", file=out)


def _print_gateway_targets(ref: GatewayRef, mine: Sequence[FoundTarget], out: TextIO) -> None:
    print(f"  {ref}: {len(mine)} target(s)", file=out)
    for t in mine:
        restart = ", ".join(str(w) for w in t.restart) or "nothing (no workload reads it)"
        print(f"    {t.cluster}/{t.namespace}/{t.secret} key {t.key!r} format {t.format!r}: token "
              f"{t.fingerprint} expires {t.expires_at[:16]}Z; restart {restart}"
              + ("; Secret managed by Helm" if t.helm else ""), file=out)


def _unmatched_where(item: dict[str, Any]) -> str:
    """As precise as the item is: a Secret's key, a namespace, a cluster, or nothing."""
    if "secret" in item:
        return f"{item['cluster']}/{item['namespace']}/{item['secret']} key {item['key']!r}: "
    if "namespace" in item:
        return f"{item['cluster']}/{item['namespace']}: "
    if "cluster" in item:
        return f"{item['cluster']}: "
    return ""


def _print_registry(proposal: Proposal, wrote: str | None, out: TextIO) -> None:
    if wrote:
        print(f"registry proposal written to {wrote}; review it, then: python -m rotation validate-registry "
              f"{wrote} --live", file=out)
    else:
        print("registry proposal (review it, save it, then: python -m rotation validate-registry FILE --live):",
              file=out)
        print(json.dumps(proposal.registry, indent=2), file=out)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """The `discover` command: exit 0 when every gateway has a target and every token a gateway."""
    from rotation.core.registry import load_registry

    kubeconfig = kubeconfig_path(args.kubeconfig)
    try:
        where = operator_cloud()
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


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], epilog: str) -> None:
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

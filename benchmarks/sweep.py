"""A sweep of 1,000 registered gateways whose tokens are all fresh.

This is the timer's steady state: nothing to renew, so the sweep should cost one paged Key Vault
listing (its `tags` and `expires` tell every gateway's fingerprint and expiry without reading a
value), no ARM call at all, and one Secret read per target to confirm it is in sync.

Setup: 1,000 gateways with one target each on the devstack's `east` cluster (10 namespaces × 100
Secrets, each already holding its gateway's token), a Role per namespace granting get/patch on
exactly its 100 Secrets, and each gateway's token in Key Vault with 20 days left.
"""

from __future__ import annotations

import json
import math
import os
import resource
import secrets
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks._stack import Control, apply_by_namespace, namespace_role, parallel
from devstack import arm as arm_fake
from devstack import stack as devstack

GATEWAYS = 1000
PER_NAMESPACE = 100
PAGE_SIZE = 25  # Key Vault's (and the fake's) page size for list operations


def _name(i: int) -> str:
    return f"gw-s{i:04d}"


def _target(i: int) -> dict[str, Any]:
    return {"cluster": "east", "namespace": f"sweep-{i // PER_NAMESPACE}", "secret": f"{_name(i)}-token"}


def setup(stack: devstack.Stack) -> None:
    from rotation.core.model import GatewayRef, KeyType, TokenRecord
    from rotation.core.registry import default_secret_name
    from rotation.core.tags import CONTENT_TYPE, tags_for
    from rotation.core.token import GatewayToken

    expiry = (datetime.now(UTC) + timedelta(days=20)).replace(second=0, microsecond=0)
    key = secrets.token_urlsafe(32)  # tokens only need their real shape here: no ARM call verifies them
    control = Control(stack)
    docs: list[dict[str, Any]] = []
    for n in range(GATEWAYS // PER_NAMESPACE):
        ns = f"sweep-{n}"
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        docs.extend(namespace_role(ns, [f"{_name(i)}-token" for i in range(n * PER_NAMESPACE, (n + 1) * PER_NAMESPACE)],
                                   devstack.APP_PRINCIPAL))
    seeds = []
    for i in range(GATEWAYS):
        token = GatewayToken.parse(arm_fake.sign(_name(i), key, expiry))
        t = _target(i)
        docs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": t["secret"], "namespace": t["namespace"]},
                     "stringData": {"config.service.auth.key": token.formatted("GatewayKey {token}")}})
        gateway_id = devstack.gateway_id(_name(i))
        record = TokenRecord(token, KeyType.PRIMARY, gateway_id)
        seeds.append({"name": default_secret_name(GatewayRef.parse(gateway_id)), "value": token.value,
                      "contentType": CONTENT_TYPE, "tags": tags_for(record), "expires": expiry.isoformat()})
    apply_by_namespace(stack, "east", docs)
    parallel(seeds, lambda body: control.call(stack.keyvault_url, "POST", "/_devstack/secrets", body))


def _env(stack: devstack.Stack) -> dict[str, str]:
    registry = json.loads(stack.settings["ROTATION_REGISTRY"])
    registry["gateways"] = [{"id": devstack.gateway_id(_name(i)), "targets": [_target(i)]} for i in range(GATEWAYS)]
    return {**stack.settings, "ROTATION_REGISTRY": json.dumps(registry)}


def run(stack: devstack.Stack) -> dict[str, Any]:
    from rotation import bootstrap

    setup(stack)
    control = Control(stack)
    env = _env(stack)
    os.environ.update(env)
    listed = len(control.call(stack.keyvault_url, "GET", "/_devstack/secrets")["secrets"])

    def sweep() -> tuple[float, Any]:
        box = bootstrap.container()
        started = time.perf_counter()
        result = box.rotator.sweep(deadline_seconds=20)
        took = time.perf_counter() - started
        assert result.ok, result.to_dict()["failed"]
        assert not any(r.rotated for r in result.reports)
        assert all(t.outcome.value == "in_sync" for r in result.reports for t in r.targets)
        return took, result

    bootstrap.reset(env)
    control.clear_calls()
    cold, _ = sweep()
    kv_calls = control.calls(stack.keyvault_url)
    arm_calls = control.calls(stack.arm_url)
    control.clear_calls()
    warm, _ = sweep()
    kv_warm = len(control.calls(stack.keyvault_url))

    tracemalloc.start()
    sweep()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bootstrap.reset()
    pages = math.ceil(listed / PAGE_SIZE)
    return {
        "gateways": GATEWAYS, "secrets_in_vault": listed,
        "keyvault_calls": len(kv_calls), "keyvault_calls_warm": kv_warm,
        "keyvault_non_list_calls": sum(1 for c in kv_calls if c["path"].rstrip("/") != "/secrets"),
        "listing_pages": pages, "arm_calls": len(arm_calls),
        "cold_s": round(cold, 2), "warm_s": round(warm, 2),
        "traced_peak_mib": round(peak / 2**20, 1), "max_rss_mib": round(rss_kib / 1024, 1),
        "met_keyvault": len(kv_calls) <= pages, "met_arm": len(arm_calls) == 0,
    }

"""End-to-end tier: the real app (function handlers, SDK adapters) against the devstack.

One stack per test session (two real kube-apiservers with RBAC, HTTPS fakes of ARM, Key Vault and
the managed-identity endpoint). Each test starts from freshly seeded near-expiry tokens. With
CI=true a stack that cannot start fails the tier instead of skipping it.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from devstack import stack as devstack
from rotation import bootstrap
from rotation.core.model import TOKEN_FINGERPRINT_ANNOTATION
from tests import leakcheck


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.Stack]:
    directory = tmp_path_factory.mktemp("devstack")
    try:
        running = devstack.up(directory, say=lambda m: None)
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the devstack did not start (CI=true, so this fails): {exc}")
        pytest.skip(f"the devstack did not start: {exc}")
    saved = dict(os.environ)
    os.environ.update(running.settings)
    try:
        yield running
    finally:
        os.environ.clear()
        os.environ.update(saved)
        bootstrap.reset()
        devstack.down(directory)


class World:
    """The running stack plus helpers to look at every store the app writes."""

    def __init__(self, stack: devstack.Stack) -> None:
        self.stack = stack
        self.seeded = self.reseed()
        for fake in ("arm", "keyvault", "eventgrid"):
            stack.control(self._url(fake), "DELETE", "/_devstack/faults")
            stack.control(self._url(fake), "DELETE", "/_devstack/calls")
        stack.control(stack.eventgrid_url, "DELETE", "/_devstack/events")
        (stack.dir / "controller.paused").unlink(missing_ok=True)
        self.initial_versions = {n: s["versions"] for n, s in self.vault().items()}
        bootstrap.reset()

    def reseed(self, expires_in: timedelta = devstack.SEED_EXPIRES_IN) -> dict[str, str]:
        seeded = devstack.seed_tokens(self.stack, expires_in)
        for token in seeded.values():
            leakcheck.register(token)
        return seeded

    def _url(self, fake: str) -> str:
        return {"arm": self.stack.arm_url, "keyvault": self.stack.keyvault_url,
                "eventgrid": self.stack.eventgrid_url}[fake]

    def calls(self, fake: str, contains: str = "", method: str | None = None) -> list[dict[str, Any]]:
        calls = self.stack.control(self._url(fake), "GET", "/_devstack/calls")
        return [c for c in calls if contains in c["path"] and (method is None or c["method"] == method)]

    def fault(self, fake: str, **rule: Any) -> None:
        self.stack.control(self._url(fake), "POST", "/_devstack/faults", rule)

    def vault(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.stack.keyvault("GET", "/_devstack/secrets?values=true")["secrets"]}

    def secret(self, cluster: str, namespace: str, name: str) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.stack.admin(cluster)).read_namespaced_secret(name, namespace)

    def value(self, cluster: str, namespace: str, name: str, key: str = "config.service.auth.key") -> str:
        return base64.b64decode(self.secret(cluster, namespace, name).data[key]).decode()

    def workload(self, cluster: str, namespace: str, ref: str) -> Any:
        from kubernetes import client

        kind, _, name = ref.partition("/")
        apps = client.AppsV1Api(self.stack.admin(cluster))
        read = {"deployment": apps.read_namespaced_deployment, "statefulset": apps.read_namespaced_stateful_set,
                "daemonset": apps.read_namespaced_daemon_set}[kind]
        return read(name, namespace)

    def restarted_at(self, cluster: str, namespace: str, ref: str) -> str | None:
        annotations = self.workload(cluster, namespace, ref).spec.template.metadata.annotations or {}
        value = annotations.get("kubectl.kubernetes.io/restartedAt")
        return None if value is None else str(value)

    def token_fingerprint(self, cluster: str, namespace: str, ref: str) -> str | None:
        """The fingerprint of the token the rotator last restarted the workload for (its pod template's
        annotation; None: never restarted by the rotator)."""
        annotations = self.workload(cluster, namespace, ref).spec.template.metadata.annotations or {}
        value = annotations.get(TOKEN_FINGERPRINT_ANNOTATION)
        return None if value is None else str(value)

    def wait_rolled_out(self, cluster: str, namespace: str, ref: str, timeout: float = 15.0) -> None:
        """Until the devstack's stand-in controller (devstack/controller.py) has observed the workload's
        latest spec: what a heal waits for before it calls an instance current."""
        end = time.monotonic() + timeout
        while True:
            obj = self.workload(cluster, namespace, ref)
            observed = int(getattr(obj.status, "observed_generation", None) or 0) if obj.status else 0
            if observed >= int(obj.metadata.generation or 1):
                return
            if time.monotonic() > end:
                raise AssertionError(f"{cluster}/{namespace}/{ref} did not roll out in {timeout} s")
            time.sleep(0.1)

    def wait_all_rolled_out(self) -> None:
        for gateway_targets in devstack.targets().values():
            for t in gateway_targets:
                for w in t.get("restart", []):
                    self.wait_rolled_out(t["cluster"], t["namespace"], w)

    def snapshot(self) -> dict[str, Any]:
        """Everything the app could write: Key Vault versions, every target's resourceVersion, ARM writes."""
        targets = {}
        for gateway_targets in devstack.targets().values():
            for t in gateway_targets:
                s = self.secret(t["cluster"], t["namespace"], t["secret"])
                targets[f"{t['cluster']}/{t['namespace']}/{t['secret']}"] = s.metadata.resource_version
                for w in t.get("restart", []):
                    targets[f"{t['cluster']}/{t['namespace']}/{w}"] = self.restarted_at(t["cluster"], t["namespace"], w)
        return {"vault": {n: s["versions"] for n, s in self.vault().items()},
                "targets": targets,
                "arm_writes": len(self.calls("arm", method="POST"))}

    def register_vault_values(self) -> None:
        for secret in self.vault().values():
            if secret.get("value") and "&" in secret["value"]:
                leakcheck.register(secret["value"])


@pytest.fixture
def world(stack: devstack.Stack) -> Iterator[World]:
    w = World(stack)
    yield w
    w.register_vault_values()
    bootstrap.reset()



"""The operator's kubeconfig for `discover`: its contexts, and list calls with the operator's access.

This is the operator's kubeconfig on the operator's machine, loaded with the kubernetes client's own
loader (`config.new_client_from_config`): it is trusted like `kubectl` is. The app never runs this path
and never gets list rights (its Role in infra/k8s has get/patch on named objects only); that path is
`rotation.adapters.kubernetes` with the safe kubeconfig shape of `rotation.adapters.kubeconfig`.

Errors are translated once, by `rotation.adapters.kubernetes.api_errors` (messages name the context).
`kubernetes` and `yaml` are imported lazily.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rotation.adapters.kubernetes import api_errors
from rotation.core.discovery import cluster_entry
from rotation.core.errors import InvalidInput, UpstreamError
from rotation.core.model import WorkloadKind

LIST_TIMEOUT = 30.0  # seconds per page
_SUFFIX = {WorkloadKind.DEPLOYMENT: "deployment", WorkloadKind.STATEFULSET: "stateful_set",
           WorkloadKind.DAEMONSET: "daemon_set"}


class OperatorKubeconfig:
    """One kubeconfig file: which contexts it has, the registry entry of each, a listing per context."""

    def __init__(self, path: str) -> None:
        import yaml

        self.path = path
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise InvalidInput(f"--kubeconfig {path}: {exc.strerror}") from None
        except yaml.YAMLError:
            raise InvalidInput(f"--kubeconfig {path}: not valid YAML") from None
        if not isinstance(doc, dict):
            raise InvalidInput(f"--kubeconfig {path}: not a kubeconfig")
        self._doc: dict[str, Any] = doc

    @property
    def current_context(self) -> str:
        return str(self._doc.get("current-context") or "")

    def _named(self, section: str, name: str) -> dict[str, Any]:
        for item in self._doc.get(section) or []:
            if isinstance(item, dict) and item.get("name") == name:
                body = item.get(section[:-1])
                return body if isinstance(body, dict) else {}
        return {}

    def entry(self, context: str, *, aks: bool) -> dict[str, Any]:
        """The registry cluster entry for `context`, with server and CA taken from the kubeconfig."""
        ctx = self._named("contexts", context)
        if not ctx:
            known = ", ".join(str(c.get("name")) for c in self._doc.get("contexts") or [] if isinstance(c, dict))
            raise InvalidInput(f"context {context!r} is not in the kubeconfig (contexts: {known or 'none'})")
        cluster = self._named("clusters", str(ctx.get("cluster")))
        ca = cluster.get("certificate-authority-data")
        if not ca and aks and cluster.get("certificate-authority"):
            ca_path = Path(str(cluster["certificate-authority"]))
            base = Path(self.path).resolve().parent  # kubectl resolves a relative path against the file
            try:
                ca = base64.b64encode((ca_path if ca_path.is_absolute() else base / ca_path).read_bytes()).decode()
            except OSError as exc:
                raise InvalidInput(f"context {context}: certificate-authority {ca_path}: {exc.strerror}") from None
        return cluster_entry(context, server=cluster.get("server"), ca_data=ca, aks=aks)

    def listing(self, context: str) -> ContextListing:
        from kubernetes import config

        new_client: Any = config.new_client_from_config
        try:
            api = new_client(config_file=self.path, context=context, persist_config=False)
        except Exception as exc:  # noqa: BLE001 - ConfigException and whatever a broken kubeconfig raises
            raise InvalidInput(f"context {context}: the kubeconfig cannot be used ({type(exc).__name__}: "
                               f"{str(exc)[:200]})") from None
        return ContextListing(context, api)


class ContextListing:
    """List calls in one context, page by page, as API JSON (the models are not needed to read names)."""

    def __init__(self, context: str, api_client: Any) -> None:
        self.context = context
        self._api = api_client

    def secrets(self, namespace: str | None, label: str, page: int) -> Iterator[dict[str, Any]]:
        """Every Secret of `namespace` (None: all namespaces); `label` says where, for messages."""
        from kubernetes import client

        core = client.CoreV1Api(self._api)
        if namespace:
            return self._pages(core.list_namespaced_secret, f"secrets {label}", page, namespace)
        return self._pages(core.list_secret_for_all_namespaces, f"secrets {label}", page)

    def workloads(self, kind: WorkloadKind, namespace: str | None, label: str,
                  page: int) -> Iterator[dict[str, Any]]:
        from kubernetes import client

        apps = client.AppsV1Api(self._api)
        suffix = _SUFFIX[kind]
        what = f"{kind.value}s {label}"
        if namespace:
            return self._pages(getattr(apps, f"list_namespaced_{suffix}"), what, page, namespace)
        return self._pages(getattr(apps, f"list_{suffix}_for_all_namespaces"), what, page)

    def _pages(self, call: Any, what: str, page: int, *args: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page, "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            with api_errors(f"context {self.context}", "list", what, LIST_TIMEOUT) as timeout:
                response = call(*args, _request_timeout=timeout, **kwargs)
                try:
                    data = response.data
                finally:
                    response.release_conn()
            try:
                doc = json.loads(data or b"{}")
            except ValueError:
                raise UpstreamError(f"context {self.context}: list {what} answered with a body that is not "
                                    "JSON") from None
            yield from (i for i in doc.get("items") or [] if isinstance(i, dict))
            token = (doc.get("metadata") or {}).get("continue")
            if not token:
                return

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._api.close()

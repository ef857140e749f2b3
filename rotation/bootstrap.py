"""Composition root: settings → adapters → service, built on first use and cached per worker.

Nothing here runs at import time. The SDK-backed adapters are imported inside the builders, so
importing the function app costs no more than azure.functions, and a bad setting surfaces as a clear
error from the function that needs it rather than as an app that fails to index.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar, cast

from rotation.app.rotator import Rotator
from rotation.settings import Settings, process_env

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from rotation.adapters.keyvault import KeyVaultTokenStore

T = TypeVar("T")


KUBECONFIG_READ_SECONDS = 20.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Container:
    """Holds the lazily built objects of one configuration."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._lock = threading.RLock()
        self._built: dict[str, object] = {}
        # Set by the CLI: an operator's own Azure login may be used, but never on an Azure host.
        self.developer_credentials = False

    def _once(self, name: str, build: Callable[[], T]) -> T:
        """`build()` once per name; each property passes the one builder of its type."""
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return cast(T, self._built[name])

    @property
    def settings(self) -> Settings:
        return self._once("settings", lambda: Settings.from_env(self._env))

    @property
    def credential(self) -> TokenCredential:
        def build() -> TokenCredential:
            from rotation.adapters.credential import build_credential

            s = self.settings
            return build_credential(s.client_id, developer=self.developer_credentials and not s.in_azure,
                                    authority=s.cloud.authority_host)

        return self._once("credential", build)

    @property
    def store(self) -> KeyVaultTokenStore:
        def build() -> KeyVaultTokenStore:
            from rotation.adapters.keyvault import KeyVaultTokenStore

            s = self.settings
            return KeyVaultTokenStore(self.credential, s.key_vault_url,
                                      verify_challenge_resource=not s.relaxed_challenge(s.key_vault_url))

        return self._once("store", build)

    @property
    def config_store(self) -> KeyVaultTokenStore:
        """The configuration vault (kubeconfigs), read only; the token vault when none is configured."""
        def build() -> KeyVaultTokenStore:
            from rotation.adapters.keyvault import KeyVaultTokenStore

            s = self.settings
            if s.config_vault_url == s.key_vault_url:
                return self.store
            return KeyVaultTokenStore(self.credential, s.config_vault_url,
                                      verify_challenge_resource=not s.relaxed_challenge(s.config_vault_url))

        return self._once("config_store", build)

    @property
    def rotator(self) -> Rotator:
        def build() -> Rotator:
            from rotation.adapters.arm import ArmTokenIssuer
            from rotation.adapters.kubernetes import KubernetesClusters
            from rotation.adapters.lease import build_lease
            from rotation.adapters.outcomes import build_publisher

            s = self.settings
            return Rotator(
                registry=s.registry,
                issuer=ArmTokenIssuer(self.credential, s.arm_endpoint, scope=s.cloud.arm_scope),
                store=self.store,
                # Callers wait for a kubeconfig read only within their own deadline; the read itself
                # ends within KUBECONFIG_READ_SECONDS (it completes for the next caller if one gave up).
                clusters=KubernetesClusters(self.credential, lambda name: self.config_store.read_text(
                    name, timeout=KUBECONFIG_READ_SECONDS)),
                clock=utcnow,
                token_lifetime=s.token_lifetime,
                renew_before=s.renew_before,
                publisher=build_publisher(s.outcome_topic_endpoint, self.credential),
                sweep_concurrency=s.sweep_concurrency,
                lease=build_lease(s.lease_container_url, self.credential),
                adopt_existing=True,
            )

        return self._once("rotator", build)


_current: Container | None = None
_current_lock = threading.Lock()


def container() -> Container:
    """The worker's container, built from the process environment on first use."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Container(process_env())
        return _current


def reset(env: Mapping[str, str] | None = None) -> Container:
    """Drop cached clients (tests, or after settings changed); optionally pin an environment."""
    global _current
    with _current_lock:
        _current = Container(env if env is not None else process_env())
        return _current


@contextmanager
def using(rotator: Rotator, settings: Settings) -> Iterator[Container]:
    """Run the entry points over a given service (tests with in-memory ports)."""
    global _current
    box = Container({})
    box._built.update(settings=settings, rotator=rotator)
    with _current_lock:
        previous, _current = _current, box
    try:
        yield box
    finally:
        with _current_lock:
            _current = previous

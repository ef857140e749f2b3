"""App settings: the one module that reads the process environment.

The app's settings are read from an environment mapping on first use (never at import time): an
import-time failure would hide every function in the portal; a bad setting must instead surface as a
clear error from the function that needs it and from `/api/health`. The one exception is
`SWEEP_SCHEDULE`, which the timer binding needs when the worker indexes the app (`indexed_sweep_schedule`).
The operator's commands read their shell's environment here too (`operator_cloud`, `OperatorLogin`).

Importing this module loads only the standard library, `rotation.core.errors` and
`rotation.core.schedule` (indexing imports it); the rest is imported where a setting is parsed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from rotation.core.errors import SettingsError, SettingsPending
from rotation.core.schedule import DEFAULT_SWEEP_SCHEDULE, sweep_schedule

if TYPE_CHECKING:
    from rotation.cloud import Cloud, OperatorCloud
    from rotation.core.model import Registry

log = logging.getLogger("rotation.settings")

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
# Set by the platform on Azure Functions / App Service hosts. Linux Consumption and Flex Consumption do
# not set WEBSITE_INSTANCE_ID; the Functions host recognises Flex by WEBSITE_SKU=FlexConsumption or by
# WEBSITE_POD_NAME / CONTAINER_NAME with LEGION_SERVICE_HOST (azure-functions-host,
# src/WebJobs.Script/Environment/EnvironmentExtensions.cs: IsAppService, IsFlexConsumptionSku,
# IsLinuxConsumptionOnLegion); WEBSITE_SITE_NAME is the read-only app name (Microsoft Learn,
# "Environment variables and app settings in Azure App Service"). CONTAINER_NAME alone is not used:
# ordinary container runtimes set it too (this project's CI sandbox does).
AZURE_HOSTING_VARIABLES = ("WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME", "WEBSITE_SKU", "WEBSITE_POD_NAME",
                           "LEGION_SERVICE_HOST")


def process_env() -> Mapping[str, str]:
    """The process environment, where the Functions host puts the app settings."""
    return os.environ


def hosted_in_azure(env: Mapping[str, str] | None = None) -> str | None:
    """The first platform variable that says this process runs on an Azure Functions host, or None."""
    env = process_env() if env is None else env
    return next((name for name in AZURE_HOSTING_VARIABLES if env.get(name, "").strip()), None)


def indexed_sweep_schedule(env: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """The timer's schedule and, when SWEEP_SCHEDULE could not be used, why (the default is bound then).

    Read when the worker indexes the app: the host resolves `%NAME%` in a binding from app settings only
    and fails the function when the setting is missing, so the binding gets a literal. The worker indexes
    after the host applied the app settings (azure_functions_runtime/handle_event.py
    `function_environment_reload_request`), and changing the setting restarts the app, which indexes again.
    """
    return sweep_schedule((process_env() if env is None else env).get("SWEEP_SCHEDULE"))


def auth_enabled(env: Mapping[str, str] | None = None) -> bool:
    """App Service authentication is on (the platform sets WEBSITE_AUTH_ENABLED=True): only then are the
    caller headers the platform's own (`rotation.core.caller`)."""
    return (process_env() if env is None else env).get("WEBSITE_AUTH_ENABLED", "").lower() == "true"


def operator_cloud(env: Mapping[str, str] | None = None) -> OperatorCloud:
    """The operator's cloud, from their shell (`rotation.cloud.operator_cloud`). ValueError: a bad AZURE_CLOUD."""
    from rotation.cloud import operator_cloud as parse

    return parse(process_env() if env is None else env)


@dataclass(frozen=True, slots=True)
class OperatorLogin:
    """What an operator's command reads from their shell besides the cloud: whose Azure login to use and
    which kubeconfig to scan (the kubectl default: the first file of KUBECONFIG, else ~/.kube/config)."""

    client_id: str | None
    in_azure: bool
    kubeconfig: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorLogin:
        env = process_env() if env is None else env
        first = env.get("KUBECONFIG", "").split(os.pathsep)[0]
        return cls(client_id=env.get("AZURE_CLIENT_ID", "").strip() or None, in_azure=hosted_in_azure(env) is not None,
                   kubeconfig=first or str(Path.home() / ".kube" / "config"))


def load_into_environment(values: Mapping[str, object]) -> None:
    """The CLI's `--settings FILE`: its non-empty values of the rotator's own settings become the
    process's settings (`rotation.setting_names`); ValueError names the first other name, and then
    nothing is loaded."""
    from rotation.setting_names import settings_to_load

    os.environ.update(settings_to_load(values))


def _public_cloud() -> Cloud:
    from rotation.cloud import CLOUDS, CloudName

    return CLOUDS[CloudName.PUBLIC]


@dataclass(frozen=True, slots=True)
class Settings:
    registry: Registry
    key_vault_url: str
    arm_endpoint: str = DEFAULT_ARM_ENDPOINT
    token_lifetime: timedelta = timedelta(days=29)
    renew_before: timedelta = timedelta(days=7)
    deadline_seconds: float = 20.0
    sweep_schedule: str = DEFAULT_SWEEP_SCHEDULE
    outcome_topic_endpoint: str | None = None
    client_id: str | None = None
    deadletter_blob_url: str | None = None
    sweep_concurrency: int = 8
    local_emulators: bool = False
    lease_container_url: str | None = None  # LEASE_CONTAINER_URL; unset: in-process leases (local only)
    cloud: Cloud = field(default_factory=_public_cloud)
    config_key_vault_url: str = ""
    in_azure: bool = False

    @property
    def config_vault_url(self) -> str:
        """The vault holding the registry and kubeconfigs (read only); the token vault by default."""
        return self.config_key_vault_url or self.key_vault_url

    def relaxed_challenge(self, vault_url: str) -> bool:
        """Key Vault's challenge-resource check is skipped only for a loopback vault with the local
        emulators on, whatever else the environment says."""
        from rotation.core.hosts import is_loopback_url

        return self.local_emulators and not self.in_azure and is_loopback_url(vault_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        read = _Env(env)
        # Every name is read here, in this order, so the `--settings` allow-list can be checked against it.
        raw_registry = _raw_registry(read.text("ROTATION_REGISTRY"))
        cloud = _cloud(read.text("AZURE_CLOUD"))
        lifetime = read.number("TOKEN_LIFETIME_DAYS", 29, 1, 30)
        renew = read.number("RENEW_BEFORE_DAYS", 7, 0, 29)
        _check_renewal(lifetime, renew)
        local_emulators = _local_emulators(read.text("ROTATION_LOCAL_EMULATORS"))
        azure = _hosting(env, local_emulators)
        urls = _Urls(read, cloud, local_emulators)
        arm_endpoint = _arm_endpoint(read.https_url("ARM_ENDPOINT", cloud.arm_endpoint) or cloud.arm_endpoint,
                                     cloud, local_emulators)
        registry = _registry(raw_registry, cloud, local_emulators)
        key_vault_url = urls.vault("KEY_VAULT_URL", required=True) or ""
        lease_container_url = _lease_container_url(urls.service_url("LEASE_CONTAINER_URL", cloud.blob_problem), azure)
        return cls(
            lease_container_url=lease_container_url,
            registry=registry,
            key_vault_url=key_vault_url,
            config_key_vault_url=urls.vault("CONFIG_KEY_VAULT_URL", required=False) or "",
            cloud=cloud,
            in_azure=azure is not None,
            arm_endpoint=arm_endpoint,
            token_lifetime=timedelta(days=lifetime),
            renew_before=timedelta(days=renew),
            deadline_seconds=read.number("ROTATION_DEADLINE_SECONDS", 20, 1, 25),
            sweep_schedule=read.text("SWEEP_SCHEDULE", DEFAULT_SWEEP_SCHEDULE) or DEFAULT_SWEEP_SCHEDULE,
            outcome_topic_endpoint=urls.service_url("OUTCOME_TOPIC_ENDPOINT", cloud.eventgrid_problem),
            client_id=read.text("AZURE_CLIENT_ID"),
            # The local emulators allow a loopback Azurite, like LEASE_CONTAINER_URL: no other host.
            deadletter_blob_url=urls.service_url("DEADLETTER_BLOB_URL", cloud.blob_problem),
            sweep_concurrency=int(read.number("SWEEP_CONCURRENCY", 8, 1, 64)),
            local_emulators=local_emulators,
        )


@dataclass(frozen=True, slots=True)
class _Env:
    """One environment mapping's values as settings: blank is unset, a bad value a SettingsError naming it."""

    env: Mapping[str, str]

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.env.get(name, "").strip()
        return value or default

    def https_url(self, name: str, default: str | None = None, required: bool = False) -> str | None:
        from rotation.core.redact import url_shown  # a rejected URL is echoed without userinfo or query

        value = self.text(name, default)
        if value is None:
            if required:
                raise SettingsError(f"{name} is required")
            return None
        if not value.startswith("https://") or " " in value:
            raise SettingsError(f"{name} must be an https:// URL, got {url_shown(value)!r}")
        return value.rstrip("/")

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw[:40]!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name} must be between {low:g} and {high:g}, got {raw!r}")
        return value


@dataclass(frozen=True, slots=True)
class _Urls:
    """The settings naming a host that receives one of the app's tokens: a host of that service in this
    cloud (a setting may be a Key Vault reference: it must not redirect the credential)."""

    read: _Env
    cloud: Cloud
    local_emulators: bool

    def vault(self, name: str, required: bool) -> str | None:
        from rotation.core.redact import url_shown

        url = self.read.https_url(name, required=required)
        if url is None:
            return None
        why = self.cloud.vault_problem(url.lower(), allow_loopback=self.local_emulators)
        if why is not None:
            raise SettingsError(f"{name} {url_shown(url)!r} {why}")
        return url

    def service_url(self, name: str, problem: Callable[[str, bool], str | None]) -> str | None:
        from rotation.core.redact import url_shown

        url = self.read.https_url(name)
        if url is None:
            return None
        why = problem(url.lower(), self.local_emulators)
        if why is not None:
            raise SettingsError(f"{name} {url_shown(url)!r} {why}")
        return url


def _raw_registry(raw_registry: str | None) -> str:
    if raw_registry is None:
        raise SettingsError("ROTATION_REGISTRY is required (the registry JSON)")
    if raw_registry.startswith("@Microsoft.KeyVault("):
        # Right after a deployment the platform may not have resolved it yet (role assignment
        # propagation): transient, so an event is redelivered rather than acknowledged and lost.
        raise SettingsPending(
            "ROTATION_REGISTRY is an unresolved Key Vault reference: grant the app's identity "
            "'Key Vault Secrets User' on the configuration vault and check the reference"
        )
    return raw_registry


def _cloud(name: str | None) -> Cloud:
    from rotation.cloud import cloud_named

    try:
        return cloud_named(name)
    except ValueError as exc:
        raise SettingsError(f"AZURE_CLOUD: {exc}") from None


def _check_renewal(lifetime: float, renew: float) -> None:
    if renew >= lifetime:
        raise SettingsError(
            f"RENEW_BEFORE_DAYS ({renew:g}) must be less than TOKEN_LIFETIME_DAYS ({lifetime:g}), "
            "or every run would renew"
        )


def _local_emulators(value: str | None) -> bool:
    local = (value or "").lower()
    if local not in _TRUE | _FALSE:
        raise SettingsError(f"ROTATION_LOCAL_EMULATORS must be true or false, got {local[:20]!r}")
    return local in _TRUE


def _hosting(env: Mapping[str, str], local_emulators: bool) -> str | None:
    """The Azure hosting variable set, if any; the local emulators are refused in Azure and loud elsewhere."""
    azure = hosted_in_azure(env)
    if local_emulators and azure:
        raise SettingsError(
            "ROTATION_LOCAL_EMULATORS relaxes Key Vault challenge checks for the local stack and is "
            f"refused in Azure ({azure} is set): remove the setting"
        )
    if local_emulators:
        log.warning(
            "ROTATION_LOCAL_EMULATORS is on: Key Vault challenge resource verification is OFF for "
            "loopback vaults and aks clusters may be on loopback. This is for the local devstack only "
            "and is refused in Azure."
        )
    return azure


def _arm_endpoint(arm_endpoint: str, cloud: Cloud, local_emulators: bool) -> str:
    from rotation.core.hosts import server_problem
    from rotation.core.redact import url_shown

    if arm_endpoint != cloud.arm_endpoint and (
            not local_emulators or server_problem(arm_endpoint, None, allow_loopback=True) is not None):
        raise SettingsError(
            f"ARM_ENDPOINT {url_shown(arm_endpoint)!r} differs from {cloud.name.value}'s Resource Manager "
            f"({cloud.arm_endpoint}): it is only an override for a loopback emulator with "
            "ROTATION_LOCAL_EMULATORS; set AZURE_CLOUD for a sovereign cloud")
    return arm_endpoint


def _registry(raw_registry: str, cloud: Cloud, local_emulators: bool) -> Registry:
    from rotation.core.errors import RegistryError
    from rotation.core.registry import load_registry

    try:
        return load_registry(raw_registry, aks_servers=cloud.aks_rule(allow_loopback=local_emulators))
    except RegistryError as exc:
        raise SettingsError(f"ROTATION_REGISTRY: {exc}") from None


def _lease_container_url(lease_container_url: str | None, azure: str | None) -> str | None:
    if lease_container_url is None and azure:
        raise SettingsError(
            f"LEASE_CONTAINER_URL is required in Azure ({azure} is set): without it, "
            "instances cannot agree on one writer per gateway and a key roll is unsafe")
    return lease_container_url

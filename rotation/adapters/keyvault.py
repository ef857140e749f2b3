"""`TokenStore` over azure-keyvault-secrets: the source of truth for each gateway's token.

Each write is a new secret version carrying the value, `expires_on` (= the token's expiry) and the tags
of `rotation.core.tags`, so one paged `list_properties_of_secrets()` tells every gateway's expiry, key
type and fingerprint without reading a value. The SDK is imported lazily.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rotation import known_secrets
from rotation.adapters.credential import call_options, is_azure_error, scrub, token_deadline, translate
from rotation.core import tags
from rotation.core.errors import (
    InvalidToken,
    NotFound,
    PermanentError,
    RotationError,
    SoftDeletedSecret,
    UnusableSecret,
    UpstreamError,
)
from rotation.core.model import TokenInfo, TokenRecord

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential


def _soft_deleted(exc: Exception) -> bool:
    """Key Vault's 409 for a name held by a soft-deleted secret: `{"error": {"code": "Conflict",
    "innererror": {"code": "ObjectIsDeletedButRecoverable"}}}` (as reported against the service in
    external-secrets/external-secrets#3519 and ansible-collections/azure#1145)."""
    if getattr(exc, "status_code", None) != 409:
        return False
    inner = getattr(getattr(exc, "error", None), "innererror", None) or {}
    code = inner.get("code") if isinstance(inner, dict) else None
    return code == "ObjectIsDeletedButRecoverable" or "deleted but recoverable" in str(exc)


def _translate(exc: Exception, what: str, secret_name: str | None = None) -> RotationError | None:
    if secret_name is not None and _soft_deleted(exc):
        return SoftDeletedSecret(
            f"{what} failed: the secret is deleted but recoverable (soft delete) and its name cannot be "
            f"reused; recover it (az keyvault secret recover --vault-name VAULT --name {secret_name}) to keep "
            f"its history, or purge it (az keyvault secret purge --vault-name VAULT --name {secret_name}), "
            "then rotate again")
    if is_azure_error(exc):
        return translate(exc, what)
    if isinstance(exc, ValueError):
        # The SDK raises ValueError for a bad vault URL or a challenge whose resource does not match
        # the vault's domain: configuration, not a blip.
        return PermanentError(f"{what} failed: {scrub(str(exc))}")
    return None


def _earliest(info: TokenInfo, expires_on: datetime | None) -> TokenInfo:
    """Every write sets the `expiresAt` tag and Key Vault's own `exp` attribute to the token's expiry.
    Tags can be edited alone (secrets/update): when the two disagree, the earlier one counts, so an
    edited tag cannot make a listing call an expiring token fresh."""
    if expires_on is not None and info.expires_at is not None and expires_on < info.expires_at:
        return replace(info, expires_at=expires_on)
    return info


class KeyVaultTokenStore:
    """Gateway tokens (and kubeconfigs, via `read_text`) in one Key Vault."""

    def __init__(self, credential: TokenCredential, vault_url: str, *, verify_challenge_resource: bool = True,
                 retry_total: int | None = None, api_version: str | None = None,
                 connection_verify: str | bool | None = None) -> None:
        """`verify_challenge_resource=False` is for the local stack only (its vault is not on
        `*.vault.azure.net`); the settings layer refuses it in Azure."""
        self._credential = credential
        self._vault_url = vault_url
        self._verify_challenge_resource = verify_challenge_resource
        self._retry_total = retry_total
        self._api_version = api_version
        self._connection_verify = connection_verify
        self._client_instance: Any = None
        self._lock = threading.Lock()

    @property
    def vault_url(self) -> str:
        return self._vault_url

    def _client(self) -> Any:
        with self._lock:
            if self._client_instance is None:
                from azure.keyvault.secrets import SecretClient

                from rotation.adapters.retry import retry_policy

                kwargs: dict[str, Any] = {"verify_challenge_resource": self._verify_challenge_resource,
                                          "retry_policy": retry_policy(self._retry_total)}
                if self._api_version is not None:
                    kwargs["api_version"] = self._api_version
                if self._connection_verify is not None:
                    kwargs["connection_verify"] = self._connection_verify
                self._client_instance = SecretClient(self._vault_url, self._credential, **kwargs)
            return self._client_instance

    def _fetch(self, secret_name: str, what: str, timeout: float | None, version: str | None = None) -> Any | None:
        """The latest `KeyVaultSecret` (or that version), or None when it does not exist."""
        options = call_options(timeout, what)
        try:
            with token_deadline(timeout):
                return self._client().get_secret(secret_name, version, **options)
        except RotationError:
            raise
        except Exception as exc:
            from azure.core.exceptions import ResourceNotFoundError

            if isinstance(exc, ResourceNotFoundError):
                return None
            translated = _translate(exc, what)
            if translated is None:
                raise
            raise translated from None

    def get(self, secret_name: str, timeout: float | None = None, version: str | None = None) -> TokenRecord | None:
        what = f"Key Vault get of secret {secret_name!r}" + (f" version {version}" if version else "")
        secret = self._fetch(secret_name, what, timeout, version)
        if secret is None:
            return None
        value = secret.value
        if isinstance(value, str):
            known_secrets.remember(value)
        if not isinstance(value, str) or not value:
            raise UnusableSecret(f"Key Vault secret {secret_name!r} is empty, not a gateway token "
                                 "(rotate with force to overwrite it)")
        props = secret.properties
        try:
            return tags.record_from(value, props.tags, props.version, props.created_on)
        except InvalidToken as exc:
            # exc names only the length and fingerprint, never the value.
            raise UnusableSecret(f"Key Vault secret {secret_name!r} does not hold a gateway token: {exc} "
                                 "(rotate with force to overwrite it)") from None

    def put(self, secret_name: str, record: TokenRecord, timeout: float | None = None) -> str:
        what = f"Key Vault set of secret {secret_name!r}"
        options = call_options(timeout, what)
        try:
            with token_deadline(timeout):
                secret = self._client().set_secret(
                    secret_name, record.token.value, content_type=tags.CONTENT_TYPE, tags=tags.tags_for(record),
                    expires_on=record.token.expires_at, **options)
        except RotationError:
            raise
        except Exception as exc:
            translated = _translate(exc, what, secret_name)
            if translated is None:
                raise
            raise translated from None
        version = getattr(getattr(secret, "properties", None), "version", None)
        if not version:
            raise UpstreamError(f"{what} returned no version id")
        return str(version)

    def list(self, timeout: float | None = None) -> Sequence[TokenInfo]:
        what = "Key Vault listing of secret properties"
        options = call_options(timeout, what)
        out: list[TokenInfo] = []
        try:
            with token_deadline(timeout):
                for props in self._client().list_properties_of_secrets(**options):
                    if tags.is_managed(props.tags):
                        out.append(_earliest(tags.info_from(props.name, props.tags, props.expires_on),
                                             props.expires_on))
        except RotationError:
            raise
        except Exception as exc:
            translated = _translate(exc, what)
            if translated is None:
                raise
            raise translated from None
        return out

    def versions(self, secret_name: str, timeout: float | None = None) -> Sequence[TokenInfo]:
        what = f"Key Vault listing of the versions of secret {secret_name!r}"
        options = call_options(timeout, what)
        try:
            with token_deadline(timeout):
                found = [p for p in self._client().list_properties_of_secret_versions(secret_name, **options)
                         if p.enabled is not False and tags.is_managed(p.tags)]
        except RotationError:
            raise
        except Exception as exc:
            from azure.core.exceptions import ResourceNotFoundError

            if isinstance(exc, ResourceNotFoundError):
                return []  # no such secret: no versions
            translated = _translate(exc, what)
            if translated is None:
                raise
            raise translated from None
        found.sort(key=lambda p: p.created_on.timestamp() if p.created_on else 0.0)
        return [_earliest(tags.info_from(secret_name, p.tags, p.expires_on, p.created_on, p.version), p.expires_on)
                for p in found]

    def read_text(self, secret_name: str, timeout: float | None = None) -> str:
        """A secret's value as text (e.g. a kubeconfig). NotFound when it does not exist."""
        what = f"Key Vault get of secret {secret_name!r}"
        secret = self._fetch(secret_name, what, timeout)
        if secret is None:
            raise NotFound(f"{what} failed: the secret does not exist")
        if not isinstance(secret.value, str) or not secret.value:
            raise PermanentError(f"Key Vault secret {secret_name!r} is empty")
        return str(secret.value)

    def close(self) -> None:
        with self._lock:
            client, self._client_instance = self._client_instance, None
        if client is not None:
            client.close()

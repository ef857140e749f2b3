"""`TokenIssuer` over azure-mgmt-apimanagement (`client.gateway`, the self-hosted gateway operations).

One `ApiManagementClient` per subscription, built on first use and cached (thread-safe). The SDK is
imported lazily. Errors become `rotation.core.errors` types (`_arm_errors`, over the azure-core
translation in `rotation.adapters.credential`) whose messages name the operation and the gateway,
never a token. `list_gateways` serves the operator's `discover`, with the operator's credential.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rotation import known_secrets
from rotation.adapters.credential import call_options, is_azure_error, token_deadline, translate
from rotation.core.errors import InvalidInput, RotationError, UpstreamError
from rotation.core.model import GatewayRef, KeyType
from rotation.core.token import GatewayToken

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

DEFAULT_ENDPOINT = "https://management.azure.com"
DEFAULT_SCOPE = "https://management.azure.com/.default"


def whole_minutes(expiry: datetime) -> datetime:
    """UTC, truncated to the minute (what the token carries)."""
    if expiry.tzinfo is None:
        raise InvalidInput("token expiry must be timezone-aware")
    return expiry.astimezone(UTC).replace(second=0, microsecond=0)


class ArmTokenIssuer:
    """APIM gateway tokens and keys through Azure Resource Manager."""

    def __init__(self, credential: TokenCredential, endpoint: str = DEFAULT_ENDPOINT, *,
                 scope: str = DEFAULT_SCOPE, retry_total: int | None = None,
                 connection_verify: str | bool | None = None) -> None:
        """`scope`: the cloud's ARM audience + `/.default` (`rotation.cloud`), never derived from
        `endpoint` (an emulator override must not choose the token's audience).
        `connection_verify`: a CA bundle path for a private endpoint (the devstack); default = the
        system trust store (or `REQUESTS_CA_BUNDLE`). `retry_total`: azure-core retries (default: its own)."""
        self._credential = credential
        self._scope = scope
        self._endpoint = endpoint.rstrip("/")
        self._retry_total = retry_total
        self._connection_verify = connection_verify
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def _client(self, subscription: str) -> Any:
        key = subscription.lower()
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                from azure.mgmt.apimanagement import ApiManagementClient

                from rotation.adapters.retry import retry_policy

                kwargs: dict[str, Any] = {
                    "base_url": self._endpoint,
                    "retry_policy": retry_policy(self._retry_total),
                    "credential_scopes": [self._scope],
                }
                if self._connection_verify is not None:
                    kwargs["connection_verify"] = self._connection_verify
                client = ApiManagementClient(self._credential, subscription, **kwargs)
                self._clients[key] = client
            return client

    def generate_token(self, gateway: GatewayRef, key_type: KeyType, expiry: datetime,
                       timeout: float | None = None) -> str:
        what = f"ARM generateToken for {gateway}"
        options = call_options(timeout, what)
        with _arm_errors(what):
            from azure.mgmt.apimanagement.models import GatewayTokenRequestContract
            from azure.mgmt.apimanagement.models import KeyType as SdkKeyType

            contract = GatewayTokenRequestContract(key_type=SdkKeyType(key_type.value),
                                                   expiry=whole_minutes(expiry))
            with token_deadline(timeout):
                result = self._client(gateway.subscription).gateway.generate_token(
                    gateway.resource_group, gateway.service, gateway.gateway, contract, **options)
        value = getattr(result, "value", None)
        if not isinstance(value, str) or not value:
            raise UpstreamError(f"{what} returned no token")
        known_secrets.remember(value)  # before anything can echo it
        try:
            GatewayToken.parse(value)
        except RotationError:
            raise UpstreamError(f"{what} returned a value that is not a gateway token") from None
        return value

    def regenerate_key(self, gateway: GatewayRef, key_type: KeyType, timeout: float | None = None) -> None:
        what = f"ARM regenerateKey ({key_type.value}) for {gateway}"
        options = call_options(timeout, what)
        with _arm_errors(what):
            from azure.mgmt.apimanagement.models import GatewayKeyRegenerationRequestContract
            from azure.mgmt.apimanagement.models import KeyType as SdkKeyType

            contract = GatewayKeyRegenerationRequestContract(key_type=SdkKeyType(key_type.value))
            with token_deadline(timeout):
                self._client(gateway.subscription).gateway.regenerate_key(
                    gateway.resource_group, gateway.service, gateway.gateway, contract, **options)

    def list_gateways(self, service_id: str) -> list[GatewayRef]:
        """The self-hosted gateways of one APIM service (its full ARM id), in ARM's order (all pages)."""
        probe = GatewayRef.parse(f"{service_id}/gateways/probe")
        with _arm_errors(f"ARM list gateways of {probe.service}"):
            items = self._client(probe.subscription).gateway.list_by_service(probe.resource_group, probe.service)
            refs = [GatewayRef.parse(str(item.id)) for item in items]
        return [ref for ref in refs if ref.service_id.lower() == service_id.lower()]

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


@contextmanager
def _arm_errors(what: str) -> Iterator[None]:
    """The one place an SDK exception of an ARM call becomes a `rotation.core.errors` type."""
    try:
        yield
    except RotationError:
        raise
    except Exception as exc:
        if is_azure_error(exc):
            raise translate(exc, what) from None
        raise

"""How a token record is described in Key Vault tags.

Tags make one listing of secret properties enough to know every gateway's expiry, key type and
fingerprint (status and sweep never read values they do not need). Tag values are never secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from rotation.core.model import KeyType, TokenInfo, TokenRecord
from rotation.core.token import GatewayToken

CONTENT_TYPE = "application/vnd.apim-gateway-token"
TAG_MANAGED_BY = "managedBy"
MANAGED_BY = "apim-token-rotator"
TAG_GATEWAY = "gatewayId"
TAG_KEY_TYPE = "keyType"
TAG_EXPIRES = "expiresAt"
TAG_FINGERPRINT = "fingerprint"
TAG_ROLL_FROM = "keyRollFrom"
TAG_GENERATION = "fencingGeneration"  # the writer's lease generation (rotation.core.fencing)
TAG_BASED_ON = "basedOn"  # the version the writer read as the latest
TAG_ORIGIN = "origin"  # how an adopted token got here (Key Vault tag values are at most 256 chars)


def _key_type(value: str | None) -> KeyType | None:
    try:
        return KeyType(value) if value else None
    except ValueError:
        return None


def _when(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def tags_for(record: TokenRecord) -> dict[str, str]:
    tags = {
        TAG_MANAGED_BY: MANAGED_BY,
        TAG_GATEWAY: record.gateway_id,
        TAG_KEY_TYPE: record.key_type.value,
        TAG_EXPIRES: record.token.expires_at.isoformat(),
        TAG_FINGERPRINT: record.token.fingerprint,
    }
    if record.roll_from is not None:
        tags[TAG_ROLL_FROM] = record.roll_from.value
    if record.origin:
        tags[TAG_ORIGIN] = record.origin[:256]
    if record.generation is not None:
        tags[TAG_GENERATION] = str(record.generation)
    if record.based_on:
        tags[TAG_BASED_ON] = record.based_on[:256]
    return tags


def _generation(value: str | None) -> int | None:
    try:
        return int(value) if value and value.isdigit() and len(value) <= 18 else None
    except ValueError:
        return None


def record_from(value: str, tags: Mapping[str, str] | None, version: str | None,
                created_at: datetime | None = None) -> TokenRecord:
    """Rebuild a record from a secret; raises InvalidToken if the value is not a token."""
    tags = tags or {}
    token = GatewayToken.parse(value)
    return TokenRecord(
        token=token,
        key_type=_key_type(tags.get(TAG_KEY_TYPE)) or KeyType.PRIMARY,
        gateway_id=tags.get(TAG_GATEWAY, ""),
        version=version,
        roll_from=_key_type(tags.get(TAG_ROLL_FROM)),
        created_at=created_at,
        origin=tags.get(TAG_ORIGIN),
        generation=_generation(tags.get(TAG_GENERATION)),
        based_on=tags.get(TAG_BASED_ON),
    )


def info_from(secret_name: str, tags: Mapping[str, str] | None, expires_on: datetime | None,
              created_at: datetime | None = None, version: str | None = None) -> TokenInfo:
    tags = tags or {}
    return TokenInfo(
        secret_name=secret_name,
        gateway_id=tags.get(TAG_GATEWAY),
        key_type=_key_type(tags.get(TAG_KEY_TYPE)),
        expires_at=_when(tags.get(TAG_EXPIRES)) or expires_on,
        fingerprint=tags.get(TAG_FINGERPRINT),
        roll_from=_key_type(tags.get(TAG_ROLL_FROM)),
        created_at=created_at,
        origin=tags.get(TAG_ORIGIN),
        generation=_generation(tags.get(TAG_GENERATION)),
        version=version,
    )


def is_managed(tags: Mapping[str, str] | None) -> bool:
    return bool(tags) and (tags or {}).get(TAG_MANAGED_BY) == MANAGED_BY

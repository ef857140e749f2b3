"""The caller identity headers are forgeable unless App Service authentication is on.

Microsoft Learn, "Work with user identities in Azure App Service authentication": App Service injects
X-MS-CLIENT-PRINCIPAL(-NAME/-ID/-IDP) and "external requests aren't allowed to set these headers, so
they're present only if set by App Service" — that is the authentication module's doing, so without it
a caller holding the function key writes whatever it likes there. WEBSITE_AUTH_ENABLED=True is how the
platform tells the app the module is on (AzureAD/microsoft-identity-web,
src/Microsoft.Identity.Web/AppServicesAuth/AppServicesAuthenticationInformation.cs). The caller is only
recorded (`requestedBy`), never used to authorize: `roll-keys` is authorized by its ADMIN auth level.
"""

from __future__ import annotations

import base64
import json

import pytest

from rotation.core.caller import caller_from_headers

TOKEN = "gw-1&202612011200&" + "Zm9vYmFy/+abcDEF1234567890/qwertyuiopASDFGHJKL+zxcvbnm0987654321/QW=="


@pytest.mark.parametrize("auth_enabled", [False, True])
def test_the_record_says_whether_the_platform_vouches_for_the_caller(auth_enabled: bool) -> None:
    caller = caller_from_headers({"X-MS-CLIENT-PRINCIPAL-NAME": "admin@contoso.com"}, auth_enabled)
    assert caller is not None and caller.verified is auth_enabled


def test_forged_values_are_bounded_and_scrubbed() -> None:
    principal = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": [
        {"typ": "name", "val": f"GatewayKey {TOKEN}"}, {"typ": "oid", "val": "x" * 5000}]}).encode()).decode()
    caller = caller_from_headers({"x-ms-client-principal": principal,
                                  "x-ms-client-principal-idp": "aad\r\nInjected: header"}, False)
    assert caller is not None and not caller.verified
    record = json.dumps(caller.to_dict())
    assert TOKEN.split("&")[2][:12] not in record and "<redacted>" in (caller.name or "")
    assert len(caller.principal_id or "") <= 120 and "\r" not in record and "\\r" not in record


@pytest.mark.parametrize("header", ["", "not base64 !!", base64.b64encode(b"[1,2]").decode(),
                                    base64.b64encode(b'{"claims": "x"}').decode(), "A" * 20000])
def test_malformed_principal_headers_name_nobody(header: str) -> None:
    assert caller_from_headers({"X-MS-CLIENT-PRINCIPAL": header}, True) is None

from __future__ import annotations

import pytest

from rotation.core.errors import InvalidGatewayId, InvalidInput
from rotation.core.model import GatewayRef, check_gateway_name, check_service_name
from tests.samples import SERVICE_ID, SUB, gateway_id


def test_parses_arm_id_case_insensitively() -> None:
    ref = GatewayRef.parse(gateway_id("onprem-gw").replace("resourceGroups", "resourcegroups"))
    assert (ref.subscription, ref.resource_group, ref.service, ref.gateway) == (SUB, "rg-apim", "contoso-apim",
                                                                                "onprem-gw")
    assert ref.id == gateway_id("onprem-gw")
    assert ref.service_id == SERVICE_ID
    assert str(ref) == "contoso-apim/onprem-gw"


@pytest.mark.parametrize(
    ("resource_id", "message"),
    [
        ("", "must look like"),
        ("onprem-gw", "must look like"),
        (gateway_id("gw") + "/extra", "must look like"),
        (gateway_id("gw").replace("Microsoft.ApiManagement", "Microsoft.Web"), "must look like"),
        (gateway_id("gw").replace("/gateways/", "/apis/"), "must look like"),
        (gateway_id("gw").replace(SUB, "not-a-guid"), "invalid subscription"),
        (gateway_id(".."), "invalid gateway"),
        (gateway_id("%2F"), "invalid gateway"),
        (gateway_id("gw%2F..%2Fx"), "invalid gateway"),
        (gateway_id("gw name"), "invalid gateway"),
        (gateway_id("gätewäy"), "invalid gateway"),
        (gateway_id("g" * 81), "invalid gateway"),
        (gateway_id("-gw"), "invalid gateway"),
        (gateway_id("gw").replace("contoso-apim", "contoso_apim"), "invalid APIM service"),
        (gateway_id("gw").replace("rg-apim", "rg/apim"), "must look like"),
        (gateway_id("gw").replace("rg-apim", "rg."), "invalid resource group"),
    ],
)
def test_rejects_malformed_and_hostile_ids(resource_id: str, message: str) -> None:
    with pytest.raises(InvalidGatewayId, match=message):
        GatewayRef.parse(resource_id)


def test_rejects_non_string() -> None:
    with pytest.raises(InvalidGatewayId, match="must be a string"):
        GatewayRef.parse(42)  # type: ignore[arg-type]


def test_long_ids_are_shortened_in_messages() -> None:
    with pytest.raises(InvalidGatewayId) as err:
        GatewayRef.parse("x" * 5000)
    assert len(str(err.value)) < 400


@pytest.mark.parametrize("name", ["..", "a/b", "%2F", "", "x" * 81, "ä", "a b", "a\nb"])
def test_route_names_are_checked(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_gateway_name(name)
    with pytest.raises(InvalidInput):
        check_service_name(name)

"""The devstack fakes themselves: control API, faults, protocol details the adapters do not exercise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from azure.keyvault.secrets import SecretClient

from devstack.fakes import Fakes
from rotation.adapters.credential import build_credential
from rotation.core.model import GatewayRef
from tests import leakcheck
from tests.adapters.conftest import control

ROOT = Path(__file__).resolve().parents[2]


def test_fault_control_api_arms_counts_down_and_disarms(fakes: Fakes, gateway: GatewayRef) -> None:
    url, ca = fakes.arm.url, fakes.ca_path
    target = f"{url}{gateway.id}?api-version=2024-05-01"
    control(url, ca, "POST", "/_devstack/faults", {"method": "GET", "path": "/gateways/", "status": 503,
                                                   "times": 2, "retryAfter": 7})

    statuses = [requests.get(target, verify=ca, timeout=10) for _ in range(3)]

    assert [r.status_code for r in statuses] == [503, 503, 401]  # then the real handler (no bearer)
    assert statuses[0].headers["Retry-After"] == "7"
    assert statuses[0].json()["error"]["code"] == "ServiceUnavailable"
    assert control(url, ca, "GET", "/_devstack/faults") == []
    calls = control(url, ca, "GET", "/_devstack/calls")
    assert [(c["method"], c["status"], c["fault"]) for c in calls] == [
        ("GET", 503, True), ("GET", 503, True), ("GET", 401, False)]
    control(url, ca, "DELETE", "/_devstack/calls")
    assert control(url, ca, "GET", "/_devstack/calls") == []


def test_unlimited_fault_until_cleared_and_method_filter(fakes: Fakes) -> None:
    url, ca = fakes.keyvault.url, fakes.ca_path
    control(url, ca, "POST", "/_devstack/faults", {"method": "PUT", "path": "^/secrets/", "status": 500,
                                                   "times": 0})

    assert [requests.put(f"{url}/secrets/a", verify=ca, timeout=10).status_code for _ in range(3)] == [500] * 3
    assert requests.get(f"{url}/secrets/a", verify=ca, timeout=10).status_code == 401  # GET not faulted
    control(url, ca, "DELETE", "/_devstack/faults")
    assert requests.put(f"{url}/secrets/a", verify=ca, timeout=10).status_code == 401


def test_drop_and_delay_faults(fakes: Fakes) -> None:
    url, ca = fakes.keyvault.url, fakes.ca_path
    fakes.keyvault.add_fault({"path": "^/secrets$", "drop": True})
    fakes.keyvault.add_fault({"path": "^/secrets$", "delaySeconds": 0.5})

    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/secrets", verify=ca, timeout=10)
    started = time.monotonic()
    delayed = requests.get(f"{url}/secrets", verify=ca, timeout=10)

    assert delayed.status_code == 401 and time.monotonic() - started >= 0.5
    assert [c["status"] for c in fakes.keyvault.calls()] == [None, 401]


def test_bad_fault_spec_is_rejected(fakes: Fakes) -> None:
    response = requests.post(f"{fakes.arm.url}/_devstack/faults", json={"path": "(", "status": 500},
                             verify=fakes.ca_path, timeout=10)

    assert response.status_code == 400
    assert "'path'" in response.json()["error"]["message"]


def test_identity_endpoint_checks_the_header_and_records_parameters(fakes: Fakes) -> None:
    endpoint = fakes.identity.endpoint
    params = {"api-version": "2019-08-01", "resource": "https://management.azure.com", "client_id": "abc"}

    refused = requests.get(endpoint, params=params, headers={"X-IDENTITY-HEADER": "wrong"}, timeout=10)
    granted = requests.get(endpoint, params=params, headers={"X-IDENTITY-HEADER": fakes.identity.header},
                           timeout=10)

    assert refused.status_code == 401
    body = granted.json()
    assert set(body) >= {"access_token", "expires_on", "resource", "token_type"}
    assert int(body["expires_on"]) > time.time()
    assert fakes.identity.accepts(body["access_token"], "https://management.azure.com/.default")
    assert not fakes.identity.accepts(body["access_token"], "https://vault.azure.net")
    assert [(r["clientId"], r["headerOk"]) for r in fakes.identity.requests()] == [("abc", False),
                                                                                   ("abc", True)]


def test_identity_tokens_are_configurable_per_resource(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devstack.fakes import start

    aks = "6dae42f8-4368-4678-94ff-3960e28e3630"
    with start(tmp_path, {"identity": {"tokens": {aks: "kube-token-1"}}}) as fakes:
        for name, value in fakes.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AZURE_CLIENT_ID", raising=False)

        token = build_credential(None).get_token(f"{aks}/.default")

        assert token.token == "kube-token-1"
        assert fakes.identity.requests()[0]["resource"] == aks


def test_sign_and_verify_control_routes(fakes: Fakes, gateway: GatewayRef) -> None:
    url, ca = fakes.arm.url, fakes.ca_path
    soon = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()

    seeded = control(url, ca, "POST", "/_devstack/sign",
                     {"gatewayId": gateway.id, "keyType": "secondary", "expiry": soon})["value"]
    expired = control(url, ca, "POST", "/_devstack/sign",
                      {"gatewayId": gateway.id, "keyType": "primary", "expiry": past})["value"]
    leakcheck.register(seeded)
    leakcheck.register(expired)

    ok = control(url, ca, "POST", "/_devstack/verify", {"gatewayId": gateway.id, "token": f"GatewayKey {seeded}"})
    old = control(url, ca, "POST", "/_devstack/verify", {"gatewayId": gateway.id, "token": expired})
    forged = control(url, ca, "POST", "/_devstack/verify",
                     {"gatewayId": gateway.id, "token": seeded[:-4] + "AAA="})
    assert (ok["valid"], ok["keyType"]) == (True, "secondary")
    assert (old["valid"], old["expired"], old["signatureValid"]) == (False, True, True)
    assert (forged["valid"], forged["keyType"]) == (False, None)
    assert fakes.arm.calls() == []  # control routes are not ARM calls
    assert control(url, ca, "POST", "/_devstack/gateways", {"id": gateway.id}) == {
        "id": gateway.id, "name": gateway.gateway}


def test_keyvault_versions_patch_and_paging_through_the_sdk(fakes: Fakes) -> None:
    client = SecretClient(fakes.keyvault.url, build_credential(None), verify_challenge_resource=False)
    first = client.set_secret("multi", "one", tags={"a": "1"})
    second = client.set_secret("multi", "two")

    updated = client.update_secret_properties("multi", first.properties.version, tags={"a": "2"},
                                              enabled=False)
    versions = list(client.list_properties_of_secret_versions("multi", max_page_size=1))
    old = client.get_secret("multi", second.properties.version)

    assert updated.tags == {"a": "2"} and updated.enabled is False
    assert {v.version for v in versions} == {first.properties.version, second.properties.version}
    assert old.value == "two"
    assert client.get_secret("multi").properties.version == second.properties.version
    assert first.id == f"{fakes.keyvault.url}/secrets/multi/{first.properties.version}"
    assert len([c for c in fakes.keyvault.calls() if c["path"].endswith("/versions")]) == 2
    client.close()


def test_keyvault_validates_names_and_tag_count(fakes: Fakes) -> None:
    client = SecretClient(fakes.keyvault.url, build_credential(None), verify_challenge_resource=False,
                          retry_total=0)
    client.set_secret("ok", "v")  # takes the challenge
    token = fakes.identity.token_for("https://vault.azure.net")
    headers = {"Authorization": f"Bearer {token}"}
    base, ca = fakes.keyvault.url, fakes.ca_path

    bad_name = requests.put(f"{base}/secrets/a_b?api-version=7.5", json={"value": "x"}, headers=headers,
                            verify=ca, timeout=10)
    too_many = requests.put(f"{base}/secrets/t?api-version=7.5", headers=headers, verify=ca, timeout=10,
                            json={"value": "x", "tags": {f"t{i}": "v" for i in range(16)}})
    too_long = requests.get(f"{base}/secrets/{'a' * 128}?api-version=7.5", headers=headers, verify=ca,
                            timeout=10)

    assert [r.status_code for r in (bad_name, too_many, too_long)] == [400, 400, 400]
    assert bad_name.json()["error"]["code"] == "BadParameter"
    assert requests.get(f"{base}/secrets?maxresults=26", headers=headers, verify=ca, timeout=10).status_code == 400
    client.close()


def test_runner_writes_fakes_json_and_removes_it_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    gateway_id = ("/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/rg/providers/"
                  "Microsoft.ApiManagement/service/apim-a/gateways/gw-a")
    config.write_text(json.dumps({"arm": {"gateways": [gateway_id]}, "identity": {"header": "h-1"}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "devstack.fakes", "--dir", str(tmp_path / "d"),
                             "--config", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    info_path = tmp_path / "d" / "fakes.json"
    try:
        deadline = time.monotonic() + 20
        while not info_path.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        info = json.loads(info_path.read_text())

        assert info["pid"] == proc.pid
        assert info["identity"]["header"] == "h-1"
        assert info["env"] == {"IDENTITY_ENDPOINT": info["identity"]["endpoint"], "IDENTITY_HEADER": "h-1",
                               "REQUESTS_CA_BUNDLE": info["ca"]}
        gateways = requests.get(info["arm"]["url"] + "/_devstack/gateways", verify=info["ca"], timeout=10)
        assert gateways.json() == [{"id": gateway_id, "name": "gw-a"}]
        secrets = requests.get(info["keyvault"]["url"] + "/_devstack/secrets", verify=info["ca"], timeout=10)
        assert secrets.json() == {"secrets": []}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()
    assert not info_path.exists()
    assert b"h-1" not in out  # the identity header is not printed


def test_eventgrid_topic_receives_cloudevents_from_the_sdk(fakes: Fakes) -> None:
    from azure.core.messaging import CloudEvent
    from azure.eventgrid import EventGridPublisherClient

    client = EventGridPublisherClient(fakes.eventgrid.endpoint, build_credential(None))
    client.send([CloudEvent(source="/apim-token-rotator", type="ApimTokenRotator.TokenRotated",
                            subject="gw", data={"ok": True})])
    client.close()

    [received] = fakes.eventgrid.events()
    assert received["schema"] == "cloudevents"
    assert (received["event"]["type"], received["event"]["data"]) == ("ApimTokenRotator.TokenRotated", {"ok": True})
    assert "https://eventgrid.azure.net" in [r["resource"] for r in fakes.identity.requests()]
    unauthorized = requests.post(fakes.eventgrid.endpoint, json=[{}], verify=fakes.ca_path, timeout=10)
    assert unauthorized.status_code == 401


def test_arm_get_and_list_keys_parse_in_the_mgmt_sdk(fakes: Fakes, gateway: GatewayRef) -> None:
    from azure.mgmt.apimanagement import ApiManagementClient

    client = ApiManagementClient(build_credential(None), gateway.subscription, base_url=fakes.arm.url,
                                 credential_scopes=[f"{fakes.arm.url}/.default"])
    got = client.gateway.get(gateway.resource_group, gateway.service, gateway.gateway)
    keys = client.gateway.list_keys(gateway.resource_group, gateway.service, gateway.gateway)
    client.close()

    assert [str(got.id), str(got.name)] == [gateway.id, gateway.gateway]
    stored = fakes.arm.gateway(gateway.id)
    assert stored is not None
    assert keys.as_dict() == {"primary": stored.primary, "secondary": stored.secondary}


def test_a_delayed_key_vault_put_lands_after_the_client_gave_up(fakes: Fakes) -> None:
    """What the late-write tests need from the fake: a Set Secret the service received is applied even
    if the client stopped waiting for the answer (the request carries no precondition to fail on:
    learn.microsoft.com/rest/api/keyvault/secrets/set-secret/set-secret). A `delaySeconds` fault holds
    the PUT; the SDK's read timeout fires first; the version becomes the latest afterwards."""
    from azure.core.exceptions import AzureError

    url, ca = fakes.keyvault.url, fakes.ca_path
    client = SecretClient(url, build_credential(None), verify_challenge_resource=False, retry_total=0)
    client.set_secret("late", "first")  # takes the challenge
    control(url, ca, "POST", "/_devstack/faults", {"method": "PUT", "path": "^/secrets/late$", "delaySeconds": 1.5})

    with pytest.raises(AzureError):
        client.set_secret("late", "second", read_timeout=0.3)
    assert control(url, ca, "GET", "/_devstack/faults") == []  # the held request took the fault
    assert client.get_secret("late").value == "first"  # not applied yet
    end = time.monotonic() + 10
    while client.get_secret("late").value != "second":
        assert time.monotonic() < end, "the held PUT was never applied"
        time.sleep(0.1)
    assert len(list(client.list_properties_of_secret_versions("late"))) == 2
    client.close()

"""Inputs an operator's command takes from files and flags: where they may send the operator's token,
what they may put in the process environment, and what their errors echo.

- `replay-deadletter --container-url` is read with the operator's Storage token (azure-identity's
  developer credentials): it is held to DEADLETTER_BLOB_URL's rule, a blob endpoint of the configured
  cloud (msrestazure `storage_endpoint`; Microsoft Learn "Storage account overview").
- `--settings FILE` is a devstack `settings.json` or a Functions `local.settings.json` (Azure Functions
  Core Tools docs, "local.settings.json file": `Values` holds app settings and host settings such as
  FUNCTIONS_WORKER_RUNTIME and AzureWebJobsStorage). Only the product's own setting names are
  taken: PATH chooses which `az` azure-identity's AzureCliCredential runs (azure/identity/_credentials/
  azure_cli.py, `shutil.which("az")`), LD_PRELOAD is honoured by ld.so (ld.so(8)), HTTPS_PROXY and
  REQUESTS_CA_BUNDLE by requests/azure-core's transport (requests `utils.get_environ_proxies`,
  `sessions.merge_environment_settings`).
- A rejected URL setting is echoed without its user information and query (RFC 3986 §3.2.1 userinfo,
  §3.4 query: where `user:password@` and a SAS `sig=` live).
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ODataV4Format

from rotation import bootstrap, cli, replay
from rotation.adapters.credential import translate
from rotation.core.errors import InvalidInput, RegistryError, SettingsError
from rotation.core.registry import load_registry
from rotation.settings import Settings
from tests.functions.conftest import http
from tests.samples import CA_DATA, gateway, registry, target

PASSWORD = "Hunter2-Pa55w0rd"
SIG = "c2lnbmF0dXJlLW9mLWEtc2FzLXVybC0wMTIzNDU2Nzg5"
BASE = {"ROTATION_REGISTRY": json.dumps(registry()), "KEY_VAULT_URL": "https://kv-test.vault.azure.net"}


# --- replay-deadletter --container-url ------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://evil.example/deadletter", "https://127.0.0.1:8443/devstoreaccount1/dl",
                                 "https://st1.blob.core.windows.net.evil.example/dl",
                                 "https://evil.example/dl?sv=2024-01-01&sig=abc"])
def test_container_url_is_held_to_the_dead_letter_setting_rule(url: str) -> None:
    bootstrap.reset(dict(BASE))
    try:
        args = argparse.Namespace(container_url=url, since=None, dry_run=True, keep=False, json=False)
        with pytest.raises(SettingsError, match=r"--container-url .* (is not a blob endpoint of AzureCloud|must be a "
                                                r"host name, not an IP address)"):
            replay.replay(args, io.StringIO())
        assert "credential" not in bootstrap.container()._built  # no token was asked for
    finally:
        bootstrap.reset()


def test_container_url_may_carry_a_sas_for_a_blob_endpoint() -> None:
    """A SAS authenticates by itself (the identity is not used: adapters/deadletter.py), on a checked host."""
    bootstrap.reset(dict(BASE))
    try:
        args = argparse.Namespace(container_url="https://st1.blob.core.windows.net/dl?sv=2024-01-01&sig=abc",
                                  since="not-a-date", dry_run=True, keep=False, json=False)
        with pytest.raises(InvalidInput, match="--since"):  # got past the URL check
            replay.replay(args, io.StringIO())
    finally:
        bootstrap.reset()


def test_dead_letter_setting_with_local_emulators_is_loopback_or_blob_only() -> None:
    env = {**BASE, "ROTATION_LOCAL_EMULATORS": "true", "DEADLETTER_BLOB_URL": "https://evil.example/dl"}
    with pytest.raises(SettingsError, match="DEADLETTER_BLOB_URL"):
        Settings.from_env(env)
    env["DEADLETTER_BLOB_URL"] = "https://127.0.0.1:10000/devstoreaccount1/deadletter"
    assert Settings.from_env(env).deadletter_blob_url == env["DEADLETTER_BLOB_URL"]


# --- --settings FILE ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["PATH", "LD_PRELOAD", "HTTPS_PROXY", "REQUESTS_CA_BUNDLE", "PYTHONPATH",
                                  "AZURE_CLIENT_SECRET"])
def test_settings_file_refuses_names_that_are_not_the_products(name: str, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for k in BASE:
        monkeypatch.delenv(k, raising=False)
    before = dict(os.environ)
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {**BASE, name: str(tmp_path)}}))
    assert cli.main(["--settings", str(path), "validate-registry", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    why = "taken only from the devstack's settings" if name == "REQUESTS_CA_BUNDLE" else "not a setting of the rotator"
    assert name in err and why in err
    assert dict(os.environ) == before  # nothing copied, not even the allowed names


def test_settings_file_takes_the_products_names_and_ignores_host_settings(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for k in (*BASE, "FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage"):
        monkeypatch.delenv(k, raising=False)
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {**BASE, "FUNCTIONS_WORKER_RUNTIME": "python",
                                           "AzureWebJobsStorage": "UseDevelopmentStorage=true"}}))
    cli._load_settings_file(str(path))
    assert os.environ["KEY_VAULT_URL"] == BASE["KEY_VAULT_URL"]
    assert "FUNCTIONS_WORKER_RUNTIME" not in os.environ and "AzureWebJobsStorage" not in os.environ


def test_devstack_identity_settings_need_the_local_emulators(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The devstack's settings.json carries its managed-identity endpoint and CA (devstack/fakes.py);
    they are taken only from a file that is for the local emulators."""
    stack = {"IDENTITY_ENDPOINT": "http://127.0.0.1:1/token", "IDENTITY_HEADER": "h", "REQUESTS_CA_BUNDLE": "/ca.pem"}
    for k in (*BASE, *stack, "ROTATION_LOCAL_EMULATORS"):
        monkeypatch.delenv(k, raising=False)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({**BASE, **stack}))
    with pytest.raises(cli.UsageError, match="IDENTITY_ENDPOINT"):
        cli._load_settings_file(str(path))
    path.write_text(json.dumps({**BASE, **stack, "ROTATION_LOCAL_EMULATORS": "true"}))
    cli._load_settings_file(str(path))
    assert os.environ["REQUESTS_CA_BUNDLE"] == "/ca.pem"


# --- what a rejected setting echoes --------------------------------------------------------------


@pytest.mark.parametrize("name", ["KEY_VAULT_URL", "LEASE_CONTAINER_URL", "OUTCOME_TOPIC_ENDPOINT", "ARM_ENDPOINT"])
@pytest.mark.parametrize("url", [f"https://ops:{PASSWORD}@prod-x.example", f"https://prod-x.example/c?sv=1&sig={SIG}",
                                 f"http://ops:{PASSWORD}@prod-x.example/?sig={SIG}"])
def test_rejected_urls_are_echoed_without_userinfo_or_query(name: str, url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**BASE, name: url})
    message = str(caught.value)
    assert PASSWORD not in message and "ops:" not in message and SIG[:12] not in message, message
    assert "prod-x.example" in message  # still says which host


def test_a_registry_server_with_userinfo_is_echoed_without_it() -> None:
    clusters = [{"name": "east", "auth": "aks", "caData": CA_DATA,
                 "server": f"https://ops:{PASSWORD}@prod-x.hcp.westeurope.azmk8s.io"}]
    with pytest.raises(RegistryError) as caught:
        load_registry(registry(gateway("gw-1", target("east", "s")), clusters=clusters))
    assert PASSWORD not in str(caught.value) and "prod-x.hcp.westeurope.azmk8s.io" in str(caught.value)


def test_health_does_not_echo_a_password() -> None:
    bootstrap.reset({**BASE, "KEY_VAULT_URL": f"https://ops:{PASSWORD}@kv-test.vault.azure.net"})
    try:
        status, body = http("health", "GET", "http://localhost/api/health")
    finally:
        bootstrap.reset()
    assert status == 503 and "KEY_VAULT_URL" in body["error"] and PASSWORD not in json.dumps(body)


def test_translate_scrubs_the_upstream_error_code() -> None:
    token = "gw-1&202612011200&" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 2
    exc = HttpResponseError(message="denied")
    exc.status_code = 400
    exc.error = ODataV4Format({"code": f"Bad{token}", "message": "see code"})
    text = str(translate(exc, "ARM generateToken for apim/gw-1"))
    assert "QUJDREVGR0hJSktM" not in text and "ARM generateToken" in text

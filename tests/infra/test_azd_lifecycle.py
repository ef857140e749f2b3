"""The Event Grid subscription is never deployed before its function exists, through azd's whole lifecycle.

Event Grid validates an AzureFunction endpoint when the subscription is created, so a provision with
DEPLOY_EVENT_SUBSCRIPTION=true into an app without on_gateway_token_event fails. azd keeps that value in
.azure/<env>/.env across `azd down` (which removes only the template's outputs: Azure/azure-dev
cli/azd/pkg/infra/provisioning/manager.go, Manager.Destroy) and across a changed AZURE_LOCATION, which names a new app.
The real hooks (POSIX sh) run under the recording stand-ins of tests/infra/azd_standins.py through: the first
`azd up`, a second `azd up`, `azd down` then `azd up` into a fresh group, and a changed location.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.azd_standins import AZ, AZD
from tests.infra.templates import INFRA

HOOKS = INFRA / "hooks"
SUB = "00000000-0000-0000-0000-00000000beef"


class Azd:
    def __init__(self, tmp_path: Path, hooks: Path = HOOKS, *, with_az: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.state = tmp_path / "state"
        self.state.mkdir()
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name, text in (("azd", AZD), ("az", AZ)):
            if name == "az" and not with_az:
                continue
            (bin_dir / name).write_text(text.format(python=sys.executable), encoding="utf-8")
            (bin_dir / name).chmod(0o755)
        assert shutil.which("az", path=os.environ["PATH"]) is None  # no real Azure CLI behind the stand-in
        self.env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_STATE": str(self.state),
                    "STUB_HOOKS": str(hooks), "STUB_PROMPT_LOCATION": "westeurope",
                    "ROTATOR_FUNCTION_WAIT_PAUSE": "0", **(env or {})}
        self.values({"AZURE_ENV_NAME": "prod", "AZURE_LOCATION": "westeurope", "AZURE_SUBSCRIPTION_ID": SUB,
                     "APIM_SERVICE_NAME": "apim-prod", "APIM_RESOURCE_GROUP": "rg-apim"})

    def values(self, update: dict[str, str] | None = None) -> dict[str, str]:
        path = self.state / "env.json"
        current: dict[str, str] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        if update:
            current.update(update)
            path.write_text(json.dumps(current), encoding="utf-8")
        return current

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["azd", *args], env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120, check=False)

    def cloud(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state / "cloud.json").read_text(encoding="utf-8"))
        return data

    def provisions(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.cloud()["provisions"]
        return found


def up(azd: Azd) -> list[dict[str, Any]]:
    """One `azd up`; the provisions it ran."""
    before = len(azd.provisions()) if (azd.state / "cloud.json").exists() else 0
    result = azd("up")
    assert result.returncode == 0, result.stderr
    return azd.provisions()[before:]


def never_before_the_function(provisions: list[dict[str, Any]]) -> None:
    assert all(p["functionExisted"] for p in provisions if p["deployEventSubscription"]), provisions


def test_first_and_second_up(tmp_path: Path) -> None:
    azd = Azd(tmp_path)
    first = up(azd)
    # Without the subscription, then (postdeploy, the code now deployed) with it.
    assert [p["deployEventSubscription"] for p in first] == [False, True]
    never_before_the_function(first)
    env = azd.values()
    assert env["DEPLOY_EVENT_SUBSCRIPTION"] == "true" and env["EVENT_SUBSCRIPTION_DEPLOYED"] == "true"
    assert env["EVENT_SUBSCRIPTION_TARGET"] == f"{SUB}|westeurope|prod"
    second = up(azd)
    # The function exists where this provision deploys: one provision, subscription kept (not dropped and re-added).
    assert [p["deployEventSubscription"] for p in second] == [True]
    assert len(azd.cloud()["eventsubs"]) == 1


def test_down_then_up_into_a_fresh_group(tmp_path: Path) -> None:
    azd = Azd(tmp_path)
    up(azd)
    assert azd("down", "--force", "--purge").returncode == 0
    assert azd.values()["DEPLOY_EVENT_SUBSCRIPTION"] == "true"  # azd down leaves it: the trap
    again = up(azd)
    assert [p["deployEventSubscription"] for p in again] == [False, True]
    never_before_the_function(again)


def test_a_changed_location(tmp_path: Path) -> None:
    azd = Azd(tmp_path)
    up(azd)
    azd.values({"AZURE_LOCATION": "northeurope"})  # azd env set AZURE_LOCATION northeurope
    moved = up(azd)
    assert [p["deployEventSubscription"] for p in moved] == [False, True]
    never_before_the_function(moved)
    assert moved[0]["app"] != azd.provisions()[0]["app"]
    assert azd.values()["EVENT_SUBSCRIPTION_TARGET"] == f"{SUB}|northeurope|prod"


def test_a_deleted_function_app_is_noticed(tmp_path: Path) -> None:
    """Deleted outside azd (the outputs still name it): az finds no function, so the subscription waits."""
    azd = Azd(tmp_path)
    up(azd)
    cloud = azd.cloud()
    cloud["apps"] = {}
    (azd.state / "cloud.json").write_text(json.dumps(cloud), encoding="utf-8")
    again = up(azd)
    assert [p["deployEventSubscription"] for p in again] == [False, True]
    az_calls = [json.loads(line) for line in (azd.state / "az.log").read_text(encoding="utf-8").splitlines()]
    assert az_calls[-1][az_calls[-1].index("--subscription"):][:2] == ["--subscription", SUB]


def az_shows(azd: Azd) -> int:
    log = azd.state / "az.log"
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return sum(1 for line in lines if json.loads(line)[:2] == ["resource", "show"])


def test_postdeploy_waits_until_the_host_has_indexed_the_function(tmp_path: Path) -> None:
    """Flex indexes the functions when the host starts after the deploy: ARM lists on_gateway_token_event a while
    after `azd deploy` returns. postdeploy asks until it is there, then provisions."""
    azd = Azd(tmp_path, env={"STUB_INDEX_DELAY": "3"})
    first = up(azd)
    assert [p["deployEventSubscription"] for p in first] == [False, True]
    never_before_the_function(first)
    assert az_shows(azd) >= 4  # three misses in postdeploy, then the hit (and the nested preprovision's own)


def test_a_function_that_never_appears_fails_postdeploy(tmp_path: Path) -> None:
    azd = Azd(tmp_path, env={"STUB_INDEX_DELAY": "99", "ROTATOR_FUNCTION_WAIT_TRIES": "3"})
    result = azd("up")
    assert result.returncode == 1
    assert "on_gateway_token_event is not listed in" in result.stderr and "after 3 checks" in result.stderr
    assert [p["deployEventSubscription"] for p in azd.provisions()] == [False]


def test_a_provision_that_still_leaves_the_subscription_out_fails_postdeploy(tmp_path: Path) -> None:
    """az signed out between postdeploy's check and the nested provision's: preprovision leaves the
    subscription out (safe), and postdeploy then says so instead of ending the `azd up` quietly without it."""
    azd = Azd(tmp_path, env={"STUB_AZ_SIGNED_IN_FOR": "1"})
    result = azd("up")
    assert result.returncode == 1
    assert "ran without the Event Grid subscription" in result.stderr
    assert "az finds no on_gateway_token_event" in result.stdout
    never_before_the_function(azd.provisions())


def test_without_the_azure_cli_the_rule_still_holds_after_down_and_a_move(tmp_path: Path) -> None:
    """No az: postdeploy cannot wait and preprovision cannot ask, but the environment still tells a new app
    (after `azd down` its id is gone; after a move the target differs)."""
    azd = Azd(tmp_path, with_az=False)
    assert [p["deployEventSubscription"] for p in up(azd)] == [False, True]
    assert [p["deployEventSubscription"] for p in up(azd)] == [True]
    assert azd("down").returncode == 0
    again = up(azd)
    assert [p["deployEventSubscription"] for p in again] == [False, True]
    azd.values({"AZURE_LOCATION": "northeurope"})
    moved = up(azd)
    assert [p["deployEventSubscription"] for p in moved] == [False, True]
    never_before_the_function(azd.provisions())


OLD_RULE = '''if [ -z "${DEPLOY_EVENT_SUBSCRIPTION:-}" ]; then
  azd env set DEPLOY_EVENT_SUBSCRIPTION false
fi
'''


@pytest.mark.parametrize("move", ["down", "location"])
def test_the_old_keep_if_set_rule_fails_here(move: str, tmp_path: Path) -> None:
    """The defect put back (preprovision only set the value when it was empty): the stand-ins fail the provision."""
    hooks = tmp_path / "hooks"
    shutil.copytree(HOOKS, hooks)
    pre = hooks / "preprovision.sh"
    source = pre.read_text(encoding="utf-8")
    block = re.search(r'^target=.*?^  azd env set DEPLOY_EVENT_SUBSCRIPTION false\nfi\n', source, re.S | re.M)
    assert block is not None
    pre.write_text(source.replace(block.group(0), OLD_RULE), encoding="utf-8")
    (hooks / "postdeploy.sh").write_text((hooks / "postdeploy.sh").read_text(encoding="utf-8"), encoding="utf-8")
    azd = Azd(tmp_path, hooks)
    assert azd("up").returncode == 0
    if move == "down":
        assert azd("down").returncode == 0
    else:
        azd.values({"AZURE_LOCATION": "northeurope"})
    result = azd("up")
    assert result.returncode == 1
    assert "on_gateway_token_event does not exist (Event Grid)" in result.stderr
    assert not azd.provisions()[-1]["functionExisted"]


def test_renew_before_not_below_the_lifetime_is_refused_before_provisioning(tmp_path: Path) -> None:
    """rotation/settings.py raises SettingsError when RENEW_BEFORE_DAYS >= TOKEN_LIFETIME_DAYS: refuse it here."""
    azd = Azd(tmp_path)
    azd.values({"TOKEN_LIFETIME_DAYS": "7", "RENEW_BEFORE_DAYS": "7"})
    result = azd("up")
    assert result.returncode == 1
    assert "RENEW_BEFORE_DAYS (7) must be less than TOKEN_LIFETIME_DAYS (7)" in result.stderr
    assert not (azd.state / "cloud.json").exists()  # nothing deployed
    azd.values({"RENEW_BEFORE_DAYS": "6"})
    assert azd("up").returncode == 0

"""The postdeploy hook fails loudly when the AKS rotator role landed wider than `<cluster id>/namespaces/<ns>`.

aks-access.bicep builds the namespace scope from an `existing` declaration of a type ARM does not have
(`Microsoft.ContainerService/managedClusters/namespaces`, the mspnp/aks-baseline pattern). Such assignments have been
reported to land on the resource group instead (mspnp/aks-baseline#408 "Namespace-level role assignments are created
on resource group level"; Azure/bicep#6701), which would give the app identity Secret read/write on every AKS cluster
in that group. Microsoft's documented way assigns at `--scope $AKS_ID/namespaces/<namespace-name>` ("Use Azure
role-based access control for Kubernetes Authorization", learn.microsoft.com/azure/aks/manage-azure-rbac). So after
the second provision the hook lists the identity's assignments of that role and fails on any other scope.

The hook runs for real (POSIX sh) with recording stand-ins for `azd` and `az` first on PATH: `az` answers from canned
`az role assignment list` JSON the way the real CLI does for these arguments (azure-cli role/custom.py,
_search_role_assignments: `--all --assignee <object id>` lists the subscription's assignments with `principalId eq`,
no Graph lookup needed for an object id), then applies the hook's projection and prints TSV.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra.templates import INFRA, MAIN, MODULES, parse

HOOK = INFRA / "hooks" / "postdeploy.sh"
HOOK_PS1 = INFRA / "hooks" / "postdeploy.ps1"

SUB = "/subscriptions/00000000-0000-0000-0000-00000000beef"
PRINCIPAL = "11111111-2222-3333-4444-555555555555"
OTHER_PRINCIPAL = "99999999-2222-3333-4444-555555555555"
ROLE_GUID = "6f1b7c3e-0000-4000-8000-00000000a1c5"
ROLE_ID = f"{SUB}/providers/Microsoft.Authorization/roleDefinitions/{ROLE_GUID}"
METRICS_PUBLISHER = f"{SUB}/providers/Microsoft.Authorization/roleDefinitions/3913510d-42f4-4e42-8a64-420c390055eb"
RG_AKS = f"{SUB}/resourceGroups/rg-aks"
CLUSTER = f"{RG_AKS}/providers/Microsoft.ContainerService/managedClusters/aks-weu-1"
NS_APIM = f"{CLUSTER}/namespaces/apim"
NS_EDGE = f"{CLUSTER}/namespaces/edge"
QUERY = "[].[roleDefinitionId, scope, id]"
# Stands in for any credential that could sit in the hook's environment or the azd env: it must never be printed.
CANARY = "gw-token-canary&202612010000&c2VjcmV0LXNpZ25hdHVyZS12YWx1ZQ=="

AZ_STUB = '''#!{python}
"""Stand-in for `az role assignment list`: answers from canned JSON, records its arguments."""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["STUB_AZ_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(args) + "\\n")
if os.environ.get("STUB_AZ_FAIL"):
    print("ERROR: Please run 'az login' to setup account.", file=sys.stderr)
    sys.exit(1)
def opt(name):
    return args[args.index(name) + 1] if name in args else None
if args[:3] != ["role", "assignment", "list"] or "--all" not in args or opt("-o") != "tsv" \\
        or opt("--query") != {query!r}:
    print("stub az: unexpected arguments", args, file=sys.stderr)
    sys.exit(2)
with open(os.environ["STUB_AZ_ASSIGNMENTS"], encoding="utf-8") as f:
    assignments = json.load(f)
for a in assignments:
    if a["principalId"] == opt("--assignee"):
        print("\\t".join((a["roleDefinitionId"], a["scope"], a["id"])))
'''

AZD_STUB = '''#!/bin/sh
echo "$*" >> "$STUB_AZD_LOG"
if [ "$1 $2" = "env get-value" ]; then
  if [ -f "$STUB_AZD_VALUES/$3" ]; then
    cat "$STUB_AZD_VALUES/$3"
    exit 0
  fi
  echo "ERROR: key '$3' not found in the environment values"  # azd has printed this on stdout
  exit 1
fi
'''


def assignment(principal: str, role: str, scope: str, name: str) -> dict[str, str]:
    """One element of `az role assignment list -o json` (the fields the CLI returns; values made up)."""
    return {
        "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
        "name": name,
        "principalId": principal,
        "principalType": "ServicePrincipal",
        "roleDefinitionId": role,
        "roleDefinitionName": "AKS gateway token rotator (prod-abc)" if role == ROLE_ID else "Monitoring Metrics Publisher",
        "scope": scope,
        "type": "Microsoft.Authorization/roleAssignments",
        "description": CANARY,  # a field the hook has no reason to print
    }


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    azd_calls: list[str]
    az_calls: list[list[str]]


def run_hook(tmp_path: Path, *, values: dict[str, str], assignments: list[dict[str, str]],
             env: dict[str, str] | None = None, az_fails: bool = False, hook: Path = HOOK) -> Run:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "az").write_text(AZ_STUB.format(python=sys.executable, query=QUERY), encoding="utf-8")
    (bin_dir / "azd").write_text(AZD_STUB, encoding="utf-8")
    for stub in ("az", "azd"):
        (bin_dir / stub).chmod(0o755)
    value_dir = tmp_path / "azd-values"
    value_dir.mkdir()
    for name, value in values.items():
        (value_dir / name).write_text(value + "\n", encoding="utf-8")
    canned = tmp_path / "assignments.json"
    canned.write_text(json.dumps(assignments), encoding="utf-8")
    azd_log, az_log = tmp_path / "azd-calls", tmp_path / "az-calls"
    run_env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STUB_AZD_LOG": str(azd_log), "STUB_AZD_VALUES": str(value_dir),
        "STUB_AZ_LOG": str(az_log), "STUB_AZ_ASSIGNMENTS": str(canned),
        "ROTATION_GATEWAY_TOKEN": CANARY,
        **(env or {}),
    }
    if az_fails:
        run_env["STUB_AZ_FAIL"] = "1"
    command = ["sh", str(hook)] if hook.suffix == ".sh" else ["pwsh", "-NoProfile", "-File", str(hook)]
    result = subprocess.run(command, env=run_env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=60, check=False)
    azd_calls = azd_log.read_text(encoding="utf-8").splitlines() if azd_log.exists() else []
    az_calls = [json.loads(line) for line in az_log.read_text(encoding="utf-8").splitlines()] if az_log.exists() else []
    assert CANARY not in result.stdout and CANARY not in result.stderr, "the hook printed a secret"
    return Run(result.returncode, result.stdout, result.stderr, azd_calls, az_calls)


AKS_VALUES = {
    "AKS_NAMESPACE_SCOPES": f"{NS_APIM} {NS_EDGE}",
    "AKS_ROTATOR_ROLE_ID": ROLE_ID,
    "ROTATOR_IDENTITY_PRINCIPAL_ID": PRINCIPAL,
    "SOME_SECRET_SETTING": CANARY,
}
# What the app identity legitimately holds besides the AKS role, and the same role for someone else, at the group.
BACKGROUND = [
    assignment(PRINCIPAL, METRICS_PUBLISHER, f"{SUB}/resourceGroups/rg-prod", "a0000000-0000-0000-0000-000000000001"),
    assignment(OTHER_PRINCIPAL, ROLE_ID, RG_AKS, "a0000000-0000-0000-0000-000000000002"),
]
FIRST_RUN = {"DEPLOY_EVENT_SUBSCRIPTION": "false"}
EXPECTED_AZ_CALL = ["role", "assignment", "list", "--assignee", PRINCIPAL, "--all", "--query", QUERY, "-o", "tsv"]


def test_namespace_scoped_assignments_pass_after_the_second_provision(tmp_path: Path) -> None:
    # ARM returns ids in its own casing (`resourcegroups`); ids compare case-insensitively.
    landed = [
        assignment(PRINCIPAL, ROLE_ID, NS_APIM.replace("resourceGroups", "resourcegroups"), "b0000000-0000-0000-0000-00000000000a"),
        assignment(PRINCIPAL, ROLE_ID.upper().replace("/SUBSCRIPTIONS", "/subscriptions"), NS_EDGE,
                   "b0000000-0000-0000-0000-00000000000b"),
    ]
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=BACKGROUND + landed, env=FIRST_RUN)
    assert run.code == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.splitlines()[-1] == (
        "AKS role scope check: 2 assignment(s) of the AKS rotator role to the app identity, all at namespace scope.")
    # The check reads the values after the provision that wrote them.
    assert run.azd_calls[:2] == ["env set DEPLOY_EVENT_SUBSCRIPTION true", "provision --no-prompt"]
    assert set(run.azd_calls[2:]) == {f"env get-value {n}" for n in
                                      ("AKS_NAMESPACE_SCOPES", "AKS_ROTATOR_ROLE_ID", "ROTATOR_IDENTITY_PRINCIPAL_ID")}
    assert run.az_calls == [EXPECTED_AZ_CALL]


def test_a_resource_group_landing_fails_with_the_scopes_and_the_fix(tmp_path: Path) -> None:
    broad_id = f"{RG_AKS}/providers/Microsoft.Authorization/roleAssignments/c0000000-0000-0000-0000-00000000000c"
    landed = [
        assignment(PRINCIPAL, ROLE_ID, RG_AKS, "c0000000-0000-0000-0000-00000000000c"),
        assignment(PRINCIPAL, ROLE_ID, NS_EDGE, "c0000000-0000-0000-0000-00000000000d"),
    ]
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=BACKGROUND + landed, env=FIRST_RUN)
    assert run.code == 1
    err = run.stderr
    assert (f"postdeploy: the app identity {PRINCIPAL} holds the AKS rotator role ({ROLE_ID}) at a scope other "
            "than a cluster namespace:") in err
    assert f"  found:    {RG_AKS}\n" in err
    assert f"  expected: {NS_APIM}\n" in err and f"  expected: {NS_EDGE}\n" in err
    assert "Secret read/write on every AKS cluster under that scope" in err
    assert f"  az role assignment delete --ids {broad_id}\n" in err
    # Only the namespace that has no assignment yet needs creating.
    assert (f"  az role assignment create --role {ROLE_ID} --assignee-object-id {PRINCIPAL} "
            f"--assignee-principal-type ServicePrincipal --scope {NS_APIM}\n") in err
    assert f"--scope {NS_EDGE}\n" not in err
    # The other principal's group-scope assignment and the identity's other roles are not this check's business.
    assert "a0000000-0000-0000-0000-00000000000" not in err
    assert "all at namespace scope" not in run.stdout


def test_a_cluster_scope_landing_fails_too_even_when_the_namespace_assignments_exist(tmp_path: Path) -> None:
    landed = [
        assignment(PRINCIPAL, ROLE_ID, NS_APIM, "d0000000-0000-0000-0000-00000000000a"),
        assignment(PRINCIPAL, ROLE_ID, NS_EDGE, "d0000000-0000-0000-0000-00000000000b"),
        assignment(PRINCIPAL, ROLE_ID, CLUSTER, "d0000000-0000-0000-0000-00000000000c"),
    ]
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=landed,
                   env={"DEPLOY_EVENT_SUBSCRIPTION": "true", "EVENT_SUBSCRIPTION_DEPLOYED": "true"})
    assert run.code == 1
    assert f"  found:    {CLUSTER}\n" in run.stderr
    assert "az role assignment create" not in run.stderr
    assert "deleting the broad one is enough" in run.stderr
    # Later `azd up` runs skip the second provision but still check.
    assert "provision --no-prompt" not in run.azd_calls
    assert run.az_calls == [EXPECTED_AZ_CALL]


def test_no_aks_cluster_is_a_one_line_no_op(tmp_path: Path) -> None:
    values = {"AKS_NAMESPACE_SCOPES": "", "AKS_ROTATOR_ROLE_ID": "", "ROTATOR_IDENTITY_PRINCIPAL_ID": PRINCIPAL}
    run = run_hook(tmp_path, values=values, assignments=BACKGROUND, env=FIRST_RUN)
    assert run.code == 0, run.stderr
    assert run.stdout.splitlines()[1:] == [
        "AKS role scope check: no AKS clusters configured (infra/aks-clusters.json), nothing to check."]
    assert run.az_calls == []


def test_an_environment_without_the_outputs_is_a_no_op_and_azd_error_text_is_not_taken_for_scopes(
        tmp_path: Path) -> None:
    run = run_hook(tmp_path, values={}, assignments=BACKGROUND, env=FIRST_RUN)
    assert run.code == 0, run.stderr
    assert "no AKS clusters configured" in run.stdout and "ERROR" not in run.stdout + run.stderr
    assert run.az_calls == []


def test_a_failed_listing_fails_the_hook_with_what_to_do(tmp_path: Path) -> None:
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=[], env=FIRST_RUN, az_fails=True)
    assert run.code == 1
    assert "postdeploy: az role assignment list failed (above), so where the AKS rotator role landed is unchecked" \
        in run.stderr
    assert "azd hooks run postdeploy" in run.stderr


def test_an_assignment_not_listed_yet_warns_with_the_command(tmp_path: Path) -> None:
    landed = [assignment(PRINCIPAL, ROLE_ID, NS_APIM, "e0000000-0000-0000-0000-00000000000a")]
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=landed, env=FIRST_RUN)
    assert run.code == 0
    assert "postdeploy: warning: no assignment of the AKS rotator role" in run.stderr
    assert f"--scope {NS_EDGE}\n" in run.stderr and f"--scope {NS_APIM}\n" not in run.stderr
    assert "1 assignment(s) of the AKS rotator role" in run.stdout


def test_a_failed_provision_stops_before_the_check(tmp_path: Path) -> None:
    failing_azd = AZD_STUB.replace('echo "$*" >> "$STUB_AZD_LOG"\n',
                                   'echo "$*" >> "$STUB_AZD_LOG"\n[ "$1" = provision ] && exit 1\n')
    bin_dir = tmp_path / "pre"
    bin_dir.mkdir()
    (bin_dir / "azd").write_text(failing_azd, encoding="utf-8")
    (bin_dir / "azd").chmod(0o755)
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=[],
                   env={**FIRST_RUN, "PATH": f"{bin_dir}:{tmp_path / 'bin'}:{os.environ['PATH']}"})
    assert run.code == 1
    assert run.az_calls == [] and not any(c.startswith("env get-value") for c in run.azd_calls)


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="PowerShell 7 is not installed here")
def test_the_powershell_hook_fails_the_same_way(tmp_path: Path) -> None:
    landed = [assignment(PRINCIPAL, ROLE_ID, RG_AKS, "f0000000-0000-0000-0000-00000000000a")]
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=landed, env=FIRST_RUN, hook=HOOK_PS1)
    assert run.code == 1
    assert f"  found:    {RG_AKS}" in run.stderr and f"--scope {NS_APIM}" in run.stderr


def test_the_powershell_hook_mirrors_the_posix_one() -> None:
    """No PowerShell here (the test above runs it where there is): the .ps1 asks az the same question, reads the
    same outputs after the provision, and prints the same messages."""
    sh, ps1 = HOOK.read_text(encoding="utf-8"), HOOK_PS1.read_text(encoding="utf-8")
    assert f"--query '{QUERY}' -o tsv" in ps1 and f'--query "{QUERY}" -o tsv' in sh
    for name in ("AKS_NAMESPACE_SCOPES", "AKS_ROTATOR_ROLE_ID", "ROTATOR_IDENTITY_PRINCIPAL_ID"):
        assert name in sh and name in ps1
    assert ps1.index("azd provision --no-prompt") < ps1.index("Get-AzdValue 'AKS_NAMESPACE_SCOPES'")
    messages = (
        "AKS role scope check: no AKS clusters configured (infra/aks-clusters.json), nothing to check.",
        "at a scope other than a cluster namespace:",
        "  found:    ", "  expected: ", "  az role assignment delete --ids ",
        "--assignee-principal-type ServicePrincipal --scope ",
        "deleting the broad one is enough",
        "assignment(s) of the AKS rotator role to the app identity, all at namespace scope.",
    )
    for message in messages:
        assert message in sh and message in ps1, message
    assert "exit 1" in ps1 and "Set-PSDebug" not in ps1 and "set -x" not in sh


def test_main_exposes_the_expected_scopes_as_the_module_builds_them() -> None:
    """The outputs the hook reads exist, and main.bicep spells each scope as aks-access.bicep assigns it:
    `<cluster id>/namespaces/<ns>`, the cluster id being the deployment subscription's managedClusters id."""
    outputs = parse(MAIN)["outputs"]
    assert {"AKS_NAMESPACE_SCOPES", "AKS_ROTATOR_ROLE_ID", "ROTATOR_IDENTITY_PRINCIPAL_ID"} <= set(outputs)
    main = MAIN.read_text(encoding="utf-8")
    assert ("'${subscription().id}/resourceGroups/${c.resourceGroup}/providers/"
            "Microsoft.ContainerService/managedClusters/${c.name}'") in main
    assert re.search(r"\$\{aksClusterIds\[i\]\}/namespaces/\$\{join\(c\.namespaces, ' \$\{aksClusterIds\[i\]\}/namespaces/'\)\}",
                     main)
    module = (MODULES / "aks-access.bicep").read_text(encoding="utf-8")
    assert "output scopes array = [for ns in namespaces: '${cluster.id}/namespaces/${ns}']" in module
    assert "resource cluster 'Microsoft.ContainerService/managedClusters@" in module


def test_deploy_doc_shows_the_check_and_the_fix_the_hook_prints() -> None:
    doc = (INFRA.parent / "docs" / "deploy.md").read_text(encoding="utf-8")
    walk = doc[doc.index("## The first `azd up` on an empty subscription"):doc.index("## Deploy with plain az")]
    sh = HOOK.read_text(encoding="utf-8")
    for needle in ("AKS role scope check", "at a scope other than a cluster namespace:", "  found:    ",
                   "  expected: ", "az role assignment delete --ids", "azd hooks run postdeploy", QUERY,
                   "mspnp/aks-baseline#408", "exits 1"):
        assert needle in walk, needle
    assert "--assignee-principal-type ServicePrincipal --scope <cluster id>/namespaces/" in walk
    aks = doc[doc.index("### AKS, `auth: aks`"):doc.index("### Any cluster, `auth: kubeconfig`")]
    # Microsoft's documented form of a namespace-scoped assignment, and the manual check for the plain-az path.
    assert '--scope "$AKS_ID/namespaces/apim"' in aks and "manage-azure-rbac" in aks
    assert "az role assignment list --assignee" in aks and "AKS_NAMESPACE_SCOPES" in aks
    assert "mspnp/aks-baseline#408" in sh and "Azure/bicep#6701" in sh

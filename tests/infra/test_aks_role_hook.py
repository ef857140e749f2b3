"""The postprovision hook assigns the AKS rotator role at `<cluster id>/namespaces/<ns>` and fails on any wider one.

A Bicep role assignment at that scope needs an `existing` declaration of a type ARM does not have
(`Microsoft.ContainerService/managedClusters/namespaces`, Bicep BCP081, the mspnp/aks-baseline pattern); such
assignments have been reported to land on the resource group (mspnp/aks-baseline#408 "Namespace-level role assignments
are created on resource group level"; Azure/bicep#6701), giving the app identity Secret read/write on every AKS cluster
in that group, and the next deployment then fails with "already exists". So the template only defines the role and
the hook assigns it the way Microsoft documents (`az role assignment create --scope $AKS_ID/namespaces/<namespace-name>`,
"Use Azure role-based access control for Kubernetes Authorization", learn.microsoft.com/azure/aks/manage-azure-rbac).

The hook runs for real (POSIX sh) with a recording stand-in for `az` first on PATH: it answers `az role assignment
list` from canned JSON the way the real CLI does for these arguments (azure-cli role/custom.py,
_search_role_assignments: `--all --assignee <object id>` lists the given subscription's assignments with
`principalId eq`), and records `az role assignment create`. Without `--subscription` it answers for the CLI's
current subscription, which the tests make a different one (azure-cli: commands default to `az account show`).
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

HOOK = INFRA / "hooks" / "postprovision.sh"
HOOK_PS1 = INFRA / "hooks" / "postprovision.ps1"

SUB_ID = "00000000-0000-0000-0000-00000000beef"
SUB = f"/subscriptions/{SUB_ID}"
OTHER_SUB_ID = "00000000-0000-0000-0000-0000000000cc"  # what `az account set` last chose
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

AZ_STUB = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["STUB_AZ_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(args) + "\\n")
if os.environ.get("STUB_AZ_FAIL"):
    print("ERROR: Please run 'az login' to setup account.", file=sys.stderr)
    sys.exit(1)
def opt(name):
    return args[args.index(name) + 1] if name in args else None
subscription = opt("--subscription") or os.environ["STUB_AZ_CURRENT_SUBSCRIPTION"]
path = os.environ["STUB_AZ_ASSIGNMENTS"]
assignments = json.load(open(path, encoding="utf-8"))
if args[:3] == ["role", "assignment", "list"] and "--all" in args and opt("-o") == "tsv" and opt("--query") == {query!r}:
    for a in assignments:
        if a["principalId"] == opt("--assignee") and a["scope"].startswith("/subscriptions/" + subscription):
            print("\\t".join((a["roleDefinitionId"], a["scope"], a["id"])))
    sys.exit(0)
if args[:3] == ["role", "assignment", "create"] and opt("--assignee-principal-type") == "ServicePrincipal":
    failures = int(os.environ.get("STUB_AZ_CREATE_FAILURES", "0"))
    done = sum(1 for line in open(os.environ["STUB_AZ_LOG"], encoding="utf-8") if '"create"' in line)
    if done <= failures:
        print("ERROR: (RoleDefinitionDoesNotExist) The specified role definition does not exist.", file=sys.stderr)
        sys.exit(1)
    name = "%08d-0000-0000-0000-000000000000" % len(assignments)
    assignments.append({{"id": opt("--scope") + "/providers/Microsoft.Authorization/roleAssignments/" + name,
                        "principalId": opt("--assignee-object-id"), "roleDefinitionId": opt("--role"),
                        "scope": opt("--scope")}})
    json.dump(assignments, open(path, "w", encoding="utf-8"))
    sys.exit(0)
print("stub az: unexpected arguments", args, file=sys.stderr)
sys.exit(2)
"""


def assignment(principal: str, role: str, scope: str, name: str) -> dict[str, str]:
    """One element of `az role assignment list -o json` (the fields the CLI returns; values made up)."""
    return {
        "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
        "name": name,
        "principalId": principal,
        "principalType": "ServicePrincipal",
        "roleDefinitionId": role,
        "scope": scope,
        "type": "Microsoft.Authorization/roleAssignments",
        "description": CANARY,  # a field the hook has no reason to print
    }


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    az_calls: list[list[str]]
    assignments: list[dict[str, str]]


def run_hook(tmp_path: Path, *, values: dict[str, str], assignments: list[dict[str, str]],
             env: dict[str, str] | None = None, az_fails: bool = False, hook: Path = HOOK) -> Run:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "az").write_text(AZ_STUB.format(python=sys.executable, query=QUERY), encoding="utf-8")
    (bin_dir / "az").chmod(0o755)
    canned = tmp_path / "assignments.json"
    canned.write_text(json.dumps(assignments), encoding="utf-8")
    az_log = tmp_path / "az-calls"
    run_env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STUB_AZ_LOG": str(az_log), "STUB_AZ_ASSIGNMENTS": str(canned),
        "STUB_AZ_CURRENT_SUBSCRIPTION": OTHER_SUB_ID,
        "ROTATOR_ROLE_ASSIGN_PAUSE": "0",
        "ROTATION_GATEWAY_TOKEN": CANARY,
        **values,
        **(env or {}),
    }
    if az_fails:
        run_env["STUB_AZ_FAIL"] = "1"
    command = ["sh", str(hook)] if hook.suffix == ".sh" else ["pwsh", "-NoProfile", "-File", str(hook)]
    result = subprocess.run(command, env=run_env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=60, check=False)
    az_calls = [json.loads(line) for line in az_log.read_text(encoding="utf-8").splitlines()] if az_log.exists() else []
    assert CANARY not in result.stdout and CANARY not in result.stderr, "the hook printed a secret"
    return Run(result.returncode, result.stdout, result.stderr, az_calls,
               json.loads(canned.read_text(encoding="utf-8")))


AKS_VALUES = {
    "AKS_NAMESPACE_SCOPES": f"{NS_APIM} {NS_EDGE}",
    "AKS_ROTATOR_ROLE_ID": ROLE_ID,
    "ROTATOR_IDENTITY_PRINCIPAL_ID": PRINCIPAL,
    "AZURE_SUBSCRIPTION_ID": SUB_ID,
    "SOME_SECRET_SETTING": CANARY,
}
# What the app identity legitimately holds besides the AKS role, and the same role for someone else, at the group.
BACKGROUND = [
    assignment(PRINCIPAL, METRICS_PUBLISHER, f"{SUB}/resourceGroups/rg-prod", "a0000000-0000-0000-0000-000000000001"),
    assignment(OTHER_PRINCIPAL, ROLE_ID, RG_AKS, "a0000000-0000-0000-0000-000000000002"),
]
LIST_CALL = ["role", "assignment", "list", "--assignee", PRINCIPAL, "--all", "--subscription", SUB_ID,
             "--query", QUERY, "-o", "tsv"]


def create_call(scope: str) -> list[str]:
    return ["role", "assignment", "create", "--role", ROLE_ID, "--assignee-object-id", PRINCIPAL,
            "--assignee-principal-type", "ServicePrincipal", "--scope", scope, "--subscription", SUB_ID, "-o", "none"]


def test_the_first_provision_creates_both_namespace_assignments(tmp_path: Path) -> None:
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=BACKGROUND)
    assert run.code == 0, run.stderr
    assert run.az_calls == [LIST_CALL, create_call(NS_APIM), create_call(NS_EDGE)]
    mine = [a["scope"] for a in run.assignments if a["principalId"] == PRINCIPAL and a["roleDefinitionId"] == ROLE_ID]
    assert mine == [NS_APIM, NS_EDGE]
    assert run.stdout.splitlines()[-1] == ("AKS role assignments: 2 of the AKS rotator role to the app identity, "
                                           "all at namespace scope (2 created now).")


def test_a_second_provision_creates_nothing(tmp_path: Path) -> None:
    """Idempotent: ARM ids in their own casing (`resourcegroups`) compare case-insensitively."""
    landed = [
        assignment(PRINCIPAL, ROLE_ID, NS_APIM.replace("resourceGroups", "resourcegroups"), "b000000a"),
        assignment(PRINCIPAL, ROLE_ID.upper().replace("/SUBSCRIPTIONS", "/subscriptions"), NS_EDGE, "b000000b"),
    ]
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=BACKGROUND + landed)
    assert run.code == 0, run.stderr
    assert run.az_calls == [LIST_CALL]
    assert "2 of the AKS rotator role" in run.stdout and "(0 created now)" in run.stdout


def test_the_deployment_subscription_is_listed_not_the_cli_default(tmp_path: Path) -> None:
    """The broad assignment is in AZURE_SUBSCRIPTION_ID; the CLI's current subscription is another one. Listing
    that one (no --subscription) found nothing and passed."""
    broad = assignment(PRINCIPAL, ROLE_ID, RG_AKS, "c000000c")
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=[broad])
    assert run.code == 1
    assert all(call[call.index("--subscription") + 1] == SUB_ID for call in run.az_calls)
    unpinned = HOOK.read_text(encoding="utf-8").replace('--subscription "$subscription"', "")
    (tmp_path / "unpinned.sh").write_text(unpinned, encoding="utf-8")
    (tmp_path / "old").mkdir()
    old = run_hook(tmp_path / "old", values=AKS_VALUES, assignments=[broad], hook=tmp_path / "unpinned.sh")
    assert old.code == 0 and "found:" not in old.stderr  # the defect put back: nothing found, nothing flagged


def test_a_resource_group_landing_fails_with_the_scopes_and_the_fix(tmp_path: Path) -> None:
    broad_id = f"{RG_AKS}/providers/Microsoft.Authorization/roleAssignments/c0000000-0000-0000-0000-00000000000c"
    landed = [
        assignment(PRINCIPAL, ROLE_ID, RG_AKS, "c0000000-0000-0000-0000-00000000000c"),
        assignment(PRINCIPAL, ROLE_ID, NS_EDGE, "c0000000-0000-0000-0000-00000000000d"),
    ]
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=BACKGROUND + landed)
    assert run.code == 1
    err = run.stderr
    assert (f"postprovision: the app identity {PRINCIPAL} holds the AKS rotator role ({ROLE_ID}) at a scope other "
            "than a cluster namespace:") in err
    assert f"  found:    {RG_AKS}\n" in err
    assert f"  expected: {NS_APIM}\n" in err and f"  expected: {NS_EDGE}\n" in err
    assert "Secret read/write on every AKS cluster under that scope" in err
    assert f"  az role assignment delete --ids {broad_id}\n" in err
    # The fix is not the same scope again: the hook creates namespace assignments itself once the broad one is gone.
    assert "az role assignment create" not in err and "azd hooks run postprovision" in err
    assert not any(call[2] == "create" for call in run.az_calls)
    # The other principal's group-scope assignment and the identity's other roles are not this check's business.
    assert "a0000000-0000-0000-0000-00000000000" not in err


def test_a_cluster_scope_landing_fails_too(tmp_path: Path) -> None:
    landed = [
        assignment(PRINCIPAL, ROLE_ID, NS_APIM, "d000000a"),
        assignment(PRINCIPAL, ROLE_ID, NS_EDGE, "d000000b"),
        assignment(PRINCIPAL, ROLE_ID, CLUSTER, "d000000c"),
    ]
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=landed)
    assert run.code == 1
    assert f"  found:    {CLUSTER}\n" in run.stderr


def test_a_role_definition_still_replicating_is_retried(tmp_path: Path) -> None:
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=[], env={"STUB_AZ_CREATE_FAILURES": "2"})
    assert run.code == 0, run.stderr
    assert [c[2] for c in run.az_calls] == ["list", "create", "create", "create", "create"]
    assert run.stderr.count("retrying in 0s") == 2


def test_a_role_definition_that_never_appears_fails_the_hook(tmp_path: Path) -> None:
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=[],
                   env={"STUB_AZ_CREATE_FAILURES": "99", "ROTATOR_ROLE_ASSIGN_TRIES": "3"})
    assert run.code == 1
    assert f"could not assign the AKS rotator role at {NS_APIM} after 3 attempts" in run.stderr


def test_no_aks_cluster_is_a_one_line_no_op(tmp_path: Path) -> None:
    values = {"AKS_NAMESPACE_SCOPES": "", "AKS_ROTATOR_ROLE_ID": "", "ROTATOR_IDENTITY_PRINCIPAL_ID": PRINCIPAL}
    run = run_hook(tmp_path, values=values, assignments=BACKGROUND)
    assert run.code == 0, run.stderr
    assert run.stdout.splitlines() == [
        "AKS role assignments: no AKS clusters configured (infra/aks-clusters.json), nothing to assign."]
    assert run.az_calls == []


def test_a_failed_listing_fails_the_hook_with_what_to_do(tmp_path: Path) -> None:
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=[], az_fails=True)
    assert run.code == 1
    assert "postprovision: az role assignment list failed (above)" in run.stderr
    assert "azd hooks run postprovision" in run.stderr


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="PowerShell 7 is not installed here")
def test_the_powershell_hook_fails_the_same_way(tmp_path: Path) -> None:
    landed = [assignment(PRINCIPAL, ROLE_ID, RG_AKS, "f000000a")]
    run = run_hook(tmp_path, values=AKS_VALUES, assignments=landed, hook=HOOK_PS1)
    assert run.code == 1
    assert f"  found:    {RG_AKS}" in run.stderr


def test_the_powershell_hook_mirrors_the_posix_one() -> None:
    """No PowerShell here (the test above runs it where there is): the .ps1 asks az the same questions with the
    same subscription, checks every exit code and prints the same messages."""
    sh, ps1 = HOOK.read_text(encoding="utf-8"), HOOK_PS1.read_text(encoding="utf-8")
    assert f"--query '{QUERY}' -o tsv" in ps1 and f'--query "{QUERY}" -o tsv' in sh
    assert "--subscription $subscription" in ps1 and '--subscription "$subscription"' in sh
    for name in ("AKS_NAMESPACE_SCOPES", "AKS_ROTATOR_ROLE_ID", "ROTATOR_IDENTITY_PRINCIPAL_ID", "AZURE_SUBSCRIPTION_ID",
                 "ROTATOR_ROLE_ASSIGN_TRIES", "ROTATOR_ROLE_ASSIGN_PAUSE"):
        assert name in sh and name in ps1
    messages = (
        "AKS role assignments: no AKS clusters configured (infra/aks-clusters.json), nothing to assign.",
        "at a scope other than a cluster namespace:",
        "  found:    ", "  expected: ", "  az role assignment delete --ids ",
        "--assignee-principal-type ServicePrincipal --scope ",
        "of the AKS rotator role to the app identity, all at namespace scope (",
    )
    for message in messages:
        assert message in sh and message in ps1, message
    assert ps1.count("$LASTEXITCODE") >= 2 and "Set-PSDebug" not in ps1 and "set -x" not in sh


def test_main_defines_the_role_and_exposes_the_scopes_but_assigns_nothing_on_aks() -> None:
    """The template no longer assigns at the namespace scope (no BCP081 `existing` of a made-up type); it exposes
    the scopes `<cluster id>/namespaces/<ns>` built from the deployment subscription's managedClusters ids."""
    outputs = parse(MAIN)["outputs"]
    assert {"AKS_NAMESPACE_SCOPES", "AKS_ROTATOR_ROLE_ID", "ROTATOR_IDENTITY_PRINCIPAL_ID"} <= set(outputs)
    main = MAIN.read_text(encoding="utf-8")
    assert ("'${subscription().id}/resourceGroups/${c.resourceGroup}/providers/"
            "Microsoft.ContainerService/managedClusters/${c.name}'") in main
    assert re.search(r"\$\{aksClusterIds\[i\]\}/namespaces/\$\{join\(c\.namespaces, ' \$\{aksClusterIds\[i\]\}/namespaces/'\)\}",
                     main)
    assert not (MODULES / "aks-access.bicep").exists()
    for path in INFRA.rglob("*.bicep"):
        assert "managedClusters/namespaces" not in path.read_text(encoding="utf-8"), path


def test_azure_yaml_runs_the_hook_after_every_provision() -> None:
    text = (INFRA.parent / "azure.yaml").read_text(encoding="utf-8")
    block = text[text.index("  postprovision:"):text.index("  postdeploy:")]
    assert "run: infra/hooks/postprovision.sh" in block and "run: infra/hooks/postprovision.ps1" in block
    assert "continueOnError: false" in block

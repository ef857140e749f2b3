#!/usr/bin/env bash
# Infra checks without a Bicep compiler (none installs offline):
#   1. pytest tests/infra in .venv-infra: every .bicep parses (pycep-parser 0.7.1), tree-sitter-bicep finds no
#      ERROR/MISSING node, module wiring is consistent, the structural assertions hold, and the
#      deploy-time-rule checker (tests/infra/deploytime.py) passes its own tests.
#   2. tests/infra/deploytime.py over infra/: Bicep's deploy-time-constant rules (BCP120/BCP177/BCP178/BCP182,
#      transcribed from the Azure/bicep compiler) and ARM's name-length limits for worst-case parameter lengths.
#      Prints every rule it enforces and every violation; fails on any.
#   3. checkov's Bicep scan in .venv-checkov (its own venv: checkov pins pycep-parser 0.5.1). Fails on any
#      failed check and on any parsing error (checkov itself exits 0 on those). Skips must be justified in place
#      with `// checkov:skip=CKV_...: reason` inside the resource.
# Both venvs are created only when missing (or when the pinned versions change).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
INFRA_VENV=.venv-infra
CHECKOV_VENV=.venv-checkov
INFRA_REQS="pycep-parser==0.7.1 tree-sitter==0.26.1 tree-sitter-bicep==1.1.0 pytest==9.2.0"
CHECKOV_REQS="checkov==3.3.30"

ensure_venv() {  # dir, requirements
  local dir=$1 reqs=$2
  if [[ -x "$dir/bin/python" && "$(cat "$dir/.requirements" 2>/dev/null)" == "$reqs" ]]; then
    return
  fi
  echo "infra-check: installing $reqs into $dir" >&2
  "$PYTHON" -m venv --help >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq python3-venv)
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  echo '*' > "$dir/.gitignore"  # keep the venv out of git whatever .gitignore says
  local log
  log=$(mktemp)
  # pip's warnings about this machine's index configuration are noise here; show them only on failure.
  # shellcheck disable=SC2086  # word splitting of the requirement list is intended
  if ! "$dir/bin/pip" install -q --disable-pip-version-check $reqs >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
  echo "$reqs" > "$dir/.requirements"
}

ensure_venv "$INFRA_VENV" "$INFRA_REQS"
ensure_venv "$CHECKOV_VENV" "$CHECKOV_REQS"

echo "== infra: structural tests (pycep-parser 0.7.1, tree-sitter-bicep)"
# --confcutdir keeps the suite-wide conftest (which needs the app's dependencies) out of this venv.
"$INFRA_VENV/bin/python" -m pytest -q -p no:cacheprovider --confcutdir=tests/infra tests/infra

echo "== infra: Bicep deploy-time rules and ARM name limits (tests/infra/deploytime.py)"
"$INFRA_VENV/bin/python" -m tests.infra.deploytime infra

echo "== infra: checkov --framework bicep"
report=$(mktemp)
trap 'rm -f "$report"' EXIT
# checkov exits 1 on failed checks; the verdict below reads the JSON either way.
"$CHECKOV_VENV/bin/checkov" -d infra --framework bicep --skip-download -o json >"$report" 2>/dev/null || true
"$INFRA_VENV/bin/python" - "$report" <<'PY'
import json
import sys

raw = open(sys.argv[1], encoding="utf-8").read().strip()
if not raw:
    sys.exit("checkov produced no report")
data = json.loads(raw)
reports = data if isinstance(data, list) else [data]
failed = skipped = passed = 0
problems = []
for report in reports:
    if "summary" not in report:
        continue
    summary = report["summary"]
    results = report.get("results", {})
    passed += summary.get("passed", 0)
    for check in results.get("failed_checks", []):
        failed += 1
        problems.append(f"FAILED {check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}")
    for path in results.get("parsing_errors", []) or []:
        problems.append(f"PARSING ERROR {path}")
    if summary.get("parsing_errors"):
        problems.append(f"parsing_errors: {summary['parsing_errors']}")
    for check in results.get("skipped_checks", []):
        skipped += 1
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        if not reason or reason == "No comment provided":
            problems.append(f"SKIP WITHOUT REASON {check['check_id']} {check['resource']}")
        print(f"  skipped {check['check_id']} {check['resource']}: {reason}")
print(f"checkov: {passed} passed, {failed} failed, {skipped} skipped (each with a reason)")
if problems:
    print("\n".join(problems))
    sys.exit(1)
PY

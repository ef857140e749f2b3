#!/bin/sh
# azd postprovision hook: assign the AKS rotator role to the app identity at `<cluster id>/namespaces/<ns>`, the
# way Microsoft documents it ("Use Azure RBAC for Kubernetes authorization": az role assignment create --scope
# $AKS_ID/namespaces/<ns>), and fail if it holds that role at any other scope.
#
# Not in ARM: a Bicep role assignment needs an `existing` resource for its scope, and ARM has no type for
# `managedClusters/namespaces` (Bicep BCP081). Such assignments have been reported to land on the resource group
# instead, and the next deployment then fails with "already exists" (mspnp/aks-baseline#408, Azure/bicep#6701). The
# custom role definition itself stays in main.bicep (aks-role-definition.bicep).
#
# azd reloads .azure/<env>/.env before each hook, so the provision's outputs are this process's environment. Only ids
# and scopes are printed: nothing here is a credential.
set -eu

lower() {
  printf '%s' "$1" | tr '[:upper:]' '[:lower:]'
}

expected=${AKS_NAMESPACE_SCOPES:-}
if [ -z "$(printf '%s' "$expected" | tr -d ' ')" ]; then
  echo "AKS role assignments: no AKS clusters configured (infra/aks-clusters.json), nothing to assign."
  exit 0
fi
role=${AKS_ROTATOR_ROLE_ID:-}
principal=${ROTATOR_IDENTITY_PRINCIPAL_ID:-}
subscription=${AZURE_SUBSCRIPTION_ID:-}
if [ -z "$role" ] || [ -z "$principal" ] || [ -z "$subscription" ]; then
  echo "postprovision: AKS_ROTATOR_ROLE_ID, ROTATOR_IDENTITY_PRINCIPAL_ID or AZURE_SUBSCRIPTION_ID is not in the azd environment; run azd provision again." >&2
  exit 1
fi
if ! command -v az >/dev/null 2>&1; then
  echo "postprovision: the Azure CLI (az) is needed to assign the AKS rotator role at namespace scope; install it and run: azd hooks run postprovision" >&2
  exit 1
fi

# --all lists the subscription's assignments with principalId eq <id>; an object id needs no Graph lookup
# (azure-cli role/custom.py, _search_role_assignments: _resolve_object_id(..., fallback_to_object_id=True)). The
# subscription is the deployment's (AZURE_SUBSCRIPTION_ID), not whatever `az account set` last chose.
if ! listing=$(az role assignment list --assignee "$principal" --all --subscription "$subscription" \
    --query "[].[roleDefinitionId, scope, id]" -o tsv); then
  echo "postprovision: az role assignment list failed (above), so the AKS rotator role is neither checked nor assigned; sign in with az login and run: azd hooks run postprovision" >&2
  exit 1
fi

# ARM ids compare case-insensitively; the role is known by its GUID (the last segment of its id).
role_guid=$(lower "${role##*/}")
set -f  # the scopes are split on spaces below; never glob them
tab=$(printf '\t')
ok=0
wrong=""
seen=" "
while IFS=$tab read -r rid scope aid; do
  [ -n "$rid" ] || continue
  [ "$(lower "${rid##*/}")" = "$role_guid" ] || continue
  scope_l=$(lower "${scope%/}")
  match=""
  for want in $expected; do
    if [ "$(lower "$want")" = "$scope_l" ]; then
      match=$want
    fi
  done
  if [ -n "$match" ]; then
    ok=$((ok + 1))
    seen="$seen$scope_l "
  else
    wrong="$wrong$scope$tab$aid
"
  fi
done <<EOF_LISTING
$listing
EOF_LISTING

if [ -n "$wrong" ]; then
  {
    printf '%s\n' "postprovision: the app identity $principal holds the AKS rotator role ($role) at a scope other than a cluster namespace:"
    printf '%s' "$wrong" | while IFS=$tab read -r scope aid; do
      [ -n "$scope" ] || continue
      printf '%s\n' "  found:    $scope"
    done
    for want in $expected; do
      printf '%s\n' "  expected: $want"
    done
    printf '%s\n' "A role assignment above the namespace gives it Secret read/write on every AKS cluster under that scope."
    printf '%s\n' "Fix: delete the broad assignment, then run azd hooks run postprovision (it creates the namespace ones):"
    printf '%s' "$wrong" | while IFS=$tab read -r scope aid; do
      [ -n "$scope" ] || continue
      printf '%s\n' "  az role assignment delete --ids $aid"
    done
  } >&2
  exit 1
fi

# A custom role definition created by this provision may not have replicated yet (RoleDefinitionDoesNotExist):
# retry each assignment for a while.
tries=${ROTATOR_ROLE_ASSIGN_TRIES:-12}
pause=${ROTATOR_ROLE_ASSIGN_PAUSE:-10}
created=0
for want in $expected; do
  case "$seen" in
    *" $(lower "$want") "*) continue ;;
  esac
  attempt=1
  until az role assignment create --role "$role" --assignee-object-id "$principal" \
      --assignee-principal-type ServicePrincipal --scope "$want" --subscription "$subscription" -o none; do
    if [ "$attempt" -ge "$tries" ]; then
      echo "postprovision: could not assign the AKS rotator role at $want after $attempt attempts (above); run: azd hooks run postprovision" >&2
      exit 1
    fi
    attempt=$((attempt + 1))
    echo "postprovision: retrying in ${pause}s (a new role definition takes a while to replicate)" >&2
    sleep "$pause"
  done
  created=$((created + 1))
done
echo "AKS role assignments: $((ok + created)) of the AKS rotator role to the app identity, all at namespace scope ($created created now)."

#!/bin/sh
# azd postdeploy hook: the code (and so the function on_gateway_token_event) now exists, so the Event Grid
# subscription on the APIM system topic can be created. Re-provision once with DEPLOY_EVENT_SUBSCRIPTION=true;
# later `azd up` runs keep it (the deployment is idempotent) and skip this step.
# Then, on every run, check where the AKS rotator role landed (check_aks_scopes below).
set -eu

if [ "${DEPLOY_EVENT_SUBSCRIPTION:-false}" = "true" ] && [ "${EVENT_SUBSCRIPTION_DEPLOYED:-false}" = "true" ]; then
  echo "Event Grid subscription already deployed."
else
  echo "Code deployed: creating the Event Grid subscription (APIM system topic -> on_gateway_token_event)."
  azd env set DEPLOY_EVENT_SUBSCRIPTION true
  azd provision --no-prompt
fi

# The values the provision above just wrote: this process's environment was taken before it ran. A value azd does
# not have reads as empty.
env_value() {
  if value=$(azd env get-value "$1" 2>/dev/null); then
    printf '%s' "$value"
  fi
}

lower() {
  printf '%s' "$1" | tr '[:upper:]' '[:lower:]'
}

# aks-access.bicep assigns the AKS rotator role at `<cluster id>/namespaces/<ns>` through an `existing` declaration of
# a type ARM does not have; such assignments have been reported to land on the cluster's resource group instead
# (mspnp/aks-baseline#408, Azure/bicep#6701), which would give the app identity Secret read/write on every AKS cluster
# in that group. So list every assignment of that role to the app identity and fail on any other scope. Only ids and
# scopes are printed: nothing here is a credential.
check_aks_scopes() {
  expected=$(env_value AKS_NAMESPACE_SCOPES)
  if [ -z "$(printf '%s' "$expected" | tr -d ' ')" ]; then
    echo "AKS role scope check: no AKS clusters configured (infra/aks-clusters.json), nothing to check."
    return 0
  fi
  role=$(env_value AKS_ROTATOR_ROLE_ID)
  principal=$(env_value ROTATOR_IDENTITY_PRINCIPAL_ID)
  if [ -z "$role" ] || [ -z "$principal" ]; then
    echo "postdeploy: AKS_ROTATOR_ROLE_ID or ROTATOR_IDENTITY_PRINCIPAL_ID is not in the azd environment; run azd provision, then this hook again (azd hooks run postdeploy)." >&2
    return 1
  fi
  if ! command -v az >/dev/null 2>&1; then
    echo "postdeploy: the Azure CLI (az) is needed to check where the AKS rotator role was assigned; install it and run: azd hooks run postdeploy" >&2
    return 1
  fi
  # --all lists the subscription's assignments with principalId eq <id>; an object id needs no Graph lookup
  # (azure-cli role/custom.py, _search_role_assignments: _resolve_object_id(..., fallback_to_object_id=True)).
  if ! listing=$(az role assignment list --assignee "$principal" --all \
      --query "[].[roleDefinitionId, scope, id]" -o tsv); then
    echo "postdeploy: az role assignment list failed (above), so where the AKS rotator role landed is unchecked; sign in with az login and run: azd hooks run postdeploy" >&2
    return 1
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
  done <<EOF
$listing
EOF

  missing=""
  for want in $expected; do
    case "$seen" in
      *" $(lower "$want") "*) ;;
      *) missing="$missing $want" ;;
    esac
  done

  if [ -n "$wrong" ]; then
    {
      printf '%s\n' "postdeploy: the app identity $principal holds the AKS rotator role ($role) at a scope other than a cluster namespace:"
      printf '%s' "$wrong" | while IFS=$tab read -r scope aid; do
        [ -n "$scope" ] || continue
        printf '%s\n' "  found:    $scope"
      done
      for want in $expected; do
        printf '%s\n' "  expected: $want"
      done
      printf '%s\n' "A role assignment above the namespace gives it Secret read/write on every AKS cluster under that scope."
      printf '%s\n' "Fix: delete the broad assignment, then create it at the namespace scope (docs/deploy.md, AKS):"
      printf '%s' "$wrong" | while IFS=$tab read -r scope aid; do
        [ -n "$scope" ] || continue
        printf '%s\n' "  az role assignment delete --ids $aid"
      done
      for want in $missing; do
        printf '%s\n' "  az role assignment create --role $role --assignee-object-id $principal --assignee-principal-type ServicePrincipal --scope $want"
      done
      if [ -z "$missing" ]; then
        printf '%s\n' "  (every expected namespace assignment exists: deleting the broad one is enough)"
      fi
    } >&2
    return 1
  fi
  if [ -n "$missing" ]; then
    {
      printf '%s\n' "postdeploy: warning: no assignment of the AKS rotator role ($role) to $principal found yet at:"
      for want in $missing; do
        printf '%s\n' "  az role assignment create --role $role --assignee-object-id $principal --assignee-principal-type ServicePrincipal --scope $want"
      done
      printf '%s\n' "(a new assignment can take a few minutes to be listed: run azd hooks run postdeploy again before creating it)"
    } >&2
  fi
  echo "AKS role scope check: $ok assignment(s) of the AKS rotator role to the app identity, all at namespace scope."
}

check_aks_scopes

#!/bin/sh
# azd preprovision hook: the template needs an existing APIM service; ask for it once and keep it in the azd env.
# Then decide whether this provision may create the Event Grid subscription (below), and refuse settings the app
# would refuse at runtime.
set -eu

ask() {  # prompt, variable: azd runs this hook interactively; without a terminal, say what is missing
  if [ ! -t 0 ]; then
    echo "preprovision: $2 is not set; run: azd env set $2 <value>" >&2
    exit 1
  fi
  printf '%s: ' "$1" >&2
  read -r answer
  azd env set "$2" "$answer"
  eval "$2=\$answer"
}

if [ -z "${APIM_SERVICE_NAME:-}" ]; then
  ask 'Name of the existing API Management service' APIM_SERVICE_NAME
fi
if [ -z "${APIM_RESOURCE_GROUP:-}" ]; then
  ask "Resource group of $APIM_SERVICE_NAME" APIM_RESOURCE_GROUP
fi

# RENEW_BEFORE_DAYS must be below TOKEN_LIFETIME_DAYS (rotation/settings.py refuses it at start-up, so every
# reconcile would fail): say so before anything is deployed. main.bicep refuses it too, for deployments without azd.
lifetime=${TOKEN_LIFETIME_DAYS:-29}
renew=${RENEW_BEFORE_DAYS:-7}
case "$lifetime$renew" in
  *[!0-9]*) echo "preprovision: TOKEN_LIFETIME_DAYS ($lifetime) and RENEW_BEFORE_DAYS ($renew) must be whole numbers of days" >&2; exit 1 ;;
esac
if [ "$renew" -ge "$lifetime" ]; then
  echo "preprovision: RENEW_BEFORE_DAYS ($renew) must be less than TOKEN_LIFETIME_DAYS ($lifetime): a token would be due for renewal the moment it is issued; run: azd env set RENEW_BEFORE_DAYS <days below $lifetime>" >&2
  exit 1
fi

# The Event Grid subscription may be created only when on_gateway_token_event already exists in the Function App this
# provision deploys to: Event Grid validates an AzureFunction endpoint when the subscription is PUT. azd keeps
# DEPLOY_EVENT_SUBSCRIPTION in .azure/<env>/.env across `azd down` (which deletes only the template's outputs) and
# across a changed AZURE_LOCATION or AZURE_SUBSCRIPTION_ID (which name a new app), so a stored `true` alone proves
# nothing. It stays true only when postdeploy turned it on for this subscription, location and environment
# (EVENT_SUBSCRIPTION_TARGET) and the function still exists there; otherwise this provision leaves the subscription
# out and postdeploy adds it once the code is deployed (and fails loudly if that provision still leaves it out). A
# failed check (not signed in) means false: the cost is one more provision, never a failed one.
target="${AZURE_SUBSCRIPTION_ID:-}|${AZURE_LOCATION:-}|${AZURE_ENV_NAME:-}"
function_id="${AZURE_FUNCTION_APP_ID:-}/functions/on_gateway_token_event"
keep=false
if [ "${DEPLOY_EVENT_SUBSCRIPTION:-false}" = "true" ]; then
  if [ "${EVENT_SUBSCRIPTION_TARGET:-}" != "$target" ]; then
    reason="it was turned on for another subscription, location or environment (${EVENT_SUBSCRIPTION_TARGET:-none})"
  elif [ -z "${AZURE_FUNCTION_APP_ID:-}" ]; then
    reason="the Function App is not in the azd environment (a first provision, or after azd down)"
  elif ! command -v az >/dev/null 2>&1; then
    keep=true  # nothing to ask; postdeploy waited for the function, and nothing above says it went away
    echo "preprovision: the Azure CLI (az) is not installed, so whether on_gateway_token_event still exists is not checked."
  elif az resource show --ids "$function_id" --subscription "${AZURE_SUBSCRIPTION_ID:-}" --query id -o tsv >/dev/null 2>&1; then
    keep=true
  else
    reason="az finds no on_gateway_token_event in ${AZURE_FUNCTION_APP_ID} (deleted, or az is not signed in)"
  fi
  if [ "$keep" = false ]; then
    echo "preprovision: this provision leaves the Event Grid subscription out: $reason. postdeploy adds it after the code deploy."
  fi
fi
if [ "$keep" = true ]; then
  echo "preprovision: on_gateway_token_event exists: the Event Grid subscription is kept."
else
  azd env set DEPLOY_EVENT_SUBSCRIPTION false
fi

# The registry and the AKS cluster list are compiled in from infra/registry.json and infra/aks-clusters.json: azd
# substitutes ${VAR} in main.parameters.json without JSON escaping, so JSON must not travel through the environment.
for old in ROTATION_REGISTRY_JSON AKS_CLUSTERS_JSON; do
  if eval "[ -n \"\${$old:-}\" ]"; then
    echo "preprovision: $old is no longer read; put that JSON in infra/registry.json / infra/aks-clusters.json (docs/deploy.md) and clear it: azd env set $old ''" >&2
  fi
done

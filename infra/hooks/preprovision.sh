#!/bin/sh
# azd preprovision hook: the template needs an existing APIM service; ask for it once and keep it in the azd env.
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
# Event Grid must find the function when the subscription is created: keep it off until the code is deployed
# (postdeploy turns it on). An env that already has it on keeps it.
if [ -z "${DEPLOY_EVENT_SUBSCRIPTION:-}" ]; then
  azd env set DEPLOY_EVENT_SUBSCRIPTION false
fi
# The registry and the AKS cluster list are compiled in from infra/registry.json and infra/aks-clusters.json: azd
# substitutes ${VAR} in main.parameters.json without JSON escaping, so JSON must not travel through the environment.
for old in ROTATION_REGISTRY_JSON AKS_CLUSTERS_JSON; do
  if eval "[ -n \"\${$old:-}\" ]"; then
    echo "preprovision: $old is no longer read; put that JSON in infra/registry.json / infra/aks-clusters.json (docs/deploy.md) and clear it: azd env set $old ''" >&2
  fi
done

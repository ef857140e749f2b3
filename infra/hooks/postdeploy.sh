#!/bin/sh
# azd postdeploy hook: the code (and so the function on_gateway_token_event) now exists, so the Event Grid
# subscription on the APIM system topic can be created: re-provision once with DEPLOY_EVENT_SUBSCRIPTION=true,
# recording which subscription, location and environment it was turned on for (preprovision keeps it on only there,
# and only while the function exists). Later `azd up` runs keep it and skip this step.
set -eu

target="${AZURE_SUBSCRIPTION_ID:-}|${AZURE_LOCATION:-}|${AZURE_ENV_NAME:-}"
if [ "${DEPLOY_EVENT_SUBSCRIPTION:-false}" = "true" ] && [ "${EVENT_SUBSCRIPTION_DEPLOYED:-false}" = "true" ] \
    && [ "${EVENT_SUBSCRIPTION_TARGET:-}" = "$target" ]; then
  echo "Event Grid subscription already deployed."
  exit 0
fi
echo "Code deployed: creating the Event Grid subscription (APIM system topic -> on_gateway_token_event)."
azd env set EVENT_SUBSCRIPTION_TARGET "$target"
azd env set DEPLOY_EVENT_SUBSCRIPTION true
azd provision --no-prompt

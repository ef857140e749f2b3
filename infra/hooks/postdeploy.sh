#!/bin/sh
# azd postdeploy hook: the code (and so the function on_gateway_token_event) now exists, so the Event Grid
# subscription on the APIM system topic can be created. Re-provision once with DEPLOY_EVENT_SUBSCRIPTION=true;
# later `azd up` runs keep it (the deployment is idempotent) and skip this step.
set -eu

if [ "${DEPLOY_EVENT_SUBSCRIPTION:-false}" = "true" ] && [ "${EVENT_SUBSCRIPTION_DEPLOYED:-false}" = "true" ]; then
  echo "Event Grid subscription already deployed."
  exit 0
fi

echo "Code deployed: creating the Event Grid subscription (APIM system topic -> on_gateway_token_event)."
azd env set DEPLOY_EVENT_SUBSCRIPTION true
azd provision --no-prompt

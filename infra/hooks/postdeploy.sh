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

# The host indexes the functions when it starts after the deploy: wait until ARM lists the function, or Event Grid's
# endpoint validation (and the preprovision check) would not find it.
if command -v az >/dev/null 2>&1; then
  function_id="${AZURE_FUNCTION_APP_ID:-}/functions/on_gateway_token_event"
  tries=${ROTATOR_FUNCTION_WAIT_TRIES:-18}
  pause=${ROTATOR_FUNCTION_WAIT_PAUSE:-10}
  attempt=1
  until az resource show --ids "$function_id" --subscription "${AZURE_SUBSCRIPTION_ID:-}" --query id -o tsv >/dev/null 2>&1; do
    if [ "$attempt" -ge "$tries" ]; then
      echo "postdeploy: on_gateway_token_event is not listed in ${AZURE_FUNCTION_APP_ID:-the Function App} after $attempt checks; look at the app's functions and logs (or az login), then: azd hooks run postdeploy" >&2
      exit 1
    fi
    attempt=$((attempt + 1))
    echo "postdeploy: waiting ${pause}s for the host to index on_gateway_token_event"
    sleep "$pause"
  done
fi

echo "Code deployed: creating the Event Grid subscription (APIM system topic -> on_gateway_token_event)."
azd env set EVENT_SUBSCRIPTION_TARGET "$target"
azd env set DEPLOY_EVENT_SUBSCRIPTION true
azd provision --no-prompt

# The provision's own preprovision may still have left the subscription out (it said why): never end quietly
# without it.
if [ "$(azd env get-value EVENT_SUBSCRIPTION_DEPLOYED 2>/dev/null || true)" != "true" ]; then
  echo "postdeploy: the provision above ran without the Event Grid subscription (see the preprovision message); fix that and run: azd hooks run postdeploy" >&2
  exit 1
fi

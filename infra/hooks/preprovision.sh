#!/bin/sh
# azd preprovision hook: the template needs an existing APIM service; ask for it once and keep it in the azd env.
set -eu

if [ -z "${APIM_SERVICE_NAME:-}" ]; then
  printf 'Name of the existing API Management service: '
  read -r APIM_SERVICE_NAME
  azd env set APIM_SERVICE_NAME "$APIM_SERVICE_NAME"
fi
if [ -z "${APIM_RESOURCE_GROUP:-}" ]; then
  printf 'Resource group of %s: ' "$APIM_SERVICE_NAME"
  read -r APIM_RESOURCE_GROUP
  azd env set APIM_RESOURCE_GROUP "$APIM_RESOURCE_GROUP"
fi
# Event Grid must find the function when the subscription is created: keep it off until the code is deployed
# (postdeploy turns it on). An env that already has it on keeps it.
if [ -z "${DEPLOY_EVENT_SUBSCRIPTION:-}" ]; then
  azd env set DEPLOY_EVENT_SUBSCRIPTION false
fi

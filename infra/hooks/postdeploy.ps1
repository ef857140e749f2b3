# azd postdeploy hook (Windows): see postdeploy.sh.
$ErrorActionPreference = 'Stop'

if ($env:DEPLOY_EVENT_SUBSCRIPTION -eq 'true' -and $env:EVENT_SUBSCRIPTION_DEPLOYED -eq 'true') {
  Write-Host 'Event Grid subscription already deployed.'
  exit 0
}
Write-Host 'Code deployed: creating the Event Grid subscription (APIM system topic -> on_gateway_token_event).'
azd env set DEPLOY_EVENT_SUBSCRIPTION true
azd provision --no-prompt
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }

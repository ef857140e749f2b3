# azd postdeploy hook (Windows): see postdeploy.sh, which this mirrors step for step.
$ErrorActionPreference = 'Stop'

$target = "$($env:AZURE_SUBSCRIPTION_ID)|$($env:AZURE_LOCATION)|$($env:AZURE_ENV_NAME)"
if ($env:DEPLOY_EVENT_SUBSCRIPTION -eq 'true' -and $env:EVENT_SUBSCRIPTION_DEPLOYED -eq 'true' -and $env:EVENT_SUBSCRIPTION_TARGET -eq $target) {
  Write-Host 'Event Grid subscription already deployed.'
  exit 0
}
Write-Host 'Code deployed: creating the Event Grid subscription (APIM system topic -> on_gateway_token_event).'
azd env set EVENT_SUBSCRIPTION_TARGET $target
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
azd env set DEPLOY_EVENT_SUBSCRIPTION true
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
azd provision --no-prompt
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }

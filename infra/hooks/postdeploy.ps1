# azd postdeploy hook (Windows): see postdeploy.sh, which this mirrors step for step.
$ErrorActionPreference = 'Stop'

$target = "$($env:AZURE_SUBSCRIPTION_ID)|$($env:AZURE_LOCATION)|$($env:AZURE_ENV_NAME)"
if ($env:DEPLOY_EVENT_SUBSCRIPTION -eq 'true' -and $env:EVENT_SUBSCRIPTION_DEPLOYED -eq 'true' -and $env:EVENT_SUBSCRIPTION_TARGET -eq $target) {
  Write-Host 'Event Grid subscription already deployed.'
  exit 0
}

# Wait until ARM lists the function (the host indexes it when it starts after the deploy).
if (Get-Command az -ErrorAction SilentlyContinue) {
  $functionId = "$($env:AZURE_FUNCTION_APP_ID)/functions/on_gateway_token_event"
  $tries = if ($env:ROTATOR_FUNCTION_WAIT_TRIES) { [int]$env:ROTATOR_FUNCTION_WAIT_TRIES } else { 18 }
  $pause = if ($env:ROTATOR_FUNCTION_WAIT_PAUSE) { [int]$env:ROTATOR_FUNCTION_WAIT_PAUSE } else { 10 }
  $attempt = 1
  while ($true) {
    az resource show --ids $functionId --subscription $env:AZURE_SUBSCRIPTION_ID --query id -o tsv 2>$null | Out-Null
    if ($LASTEXITCODE -eq 0) { break }
    if ($attempt -ge $tries) {
      [Console]::Error.WriteLine("postdeploy: on_gateway_token_event is not listed in $($env:AZURE_FUNCTION_APP_ID) after $attempt checks; look at the app's functions and logs (or az login), then: azd hooks run postdeploy")
      exit 1
    }
    $attempt++
    Write-Host "postdeploy: waiting ${pause}s for the host to index on_gateway_token_event"
    Start-Sleep -Seconds $pause
  }
}

Write-Host 'Code deployed: creating the Event Grid subscription (APIM system topic -> on_gateway_token_event).'
azd env set EVENT_SUBSCRIPTION_TARGET $target
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
azd env set DEPLOY_EVENT_SUBSCRIPTION true
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
azd provision --no-prompt
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }

$deployed = azd env get-value EVENT_SUBSCRIPTION_DEPLOYED 2>$null
if ($LASTEXITCODE -ne 0 -or "$deployed".Trim() -ne 'true') {
  [Console]::Error.WriteLine('postdeploy: the provision above ran without the Event Grid subscription (see the preprovision message); fix that and run: azd hooks run postdeploy')
  exit 1
}

# azd preprovision hook (Windows): see preprovision.sh, which this mirrors step for step.
$ErrorActionPreference = 'Stop'

function Ask([string] $Prompt, [string] $Name) {
  # azd runs this hook interactively; without a console, say what is missing.
  if ([Console]::IsInputRedirected) {
    [Console]::Error.WriteLine("preprovision: $Name is not set; run: azd env set $Name <value>")
    exit 1
  }
  $answer = Read-Host $Prompt
  azd env set $Name $answer
  if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
  Set-Item -Path "env:$Name" -Value $answer
}

if (-not $env:APIM_SERVICE_NAME) { Ask 'Name of the existing API Management service' 'APIM_SERVICE_NAME' }
if (-not $env:APIM_RESOURCE_GROUP) { Ask "Resource group of $($env:APIM_SERVICE_NAME)" 'APIM_RESOURCE_GROUP' }

$lifetime = if ($env:TOKEN_LIFETIME_DAYS) { $env:TOKEN_LIFETIME_DAYS } else { '29' }
$renew = if ($env:RENEW_BEFORE_DAYS) { $env:RENEW_BEFORE_DAYS } else { '7' }
if ("$lifetime$renew" -notmatch '^[0-9]+$') {
  [Console]::Error.WriteLine("preprovision: TOKEN_LIFETIME_DAYS ($lifetime) and RENEW_BEFORE_DAYS ($renew) must be whole numbers of days")
  exit 1
}
if ([int]$renew -ge [int]$lifetime) {
  [Console]::Error.WriteLine("preprovision: RENEW_BEFORE_DAYS ($renew) must be less than TOKEN_LIFETIME_DAYS ($lifetime): a token would be due for renewal the moment it is issued; run: azd env set RENEW_BEFORE_DAYS <days below $lifetime>")
  exit 1
}

# The Event Grid subscription stays on only where postdeploy turned it on and while the function exists (see
# preprovision.sh); every doubt means false.
$target = "$($env:AZURE_SUBSCRIPTION_ID)|$($env:AZURE_LOCATION)|$($env:AZURE_ENV_NAME)"
$keep = $false
if ($env:DEPLOY_EVENT_SUBSCRIPTION -eq 'true') {
  $reason = ''
  if ($env:EVENT_SUBSCRIPTION_TARGET -ne $target) {
    $reason = "it was turned on for another subscription, location or environment ($($env:EVENT_SUBSCRIPTION_TARGET))"
  } elseif (-not $env:AZURE_FUNCTION_APP_ID) {
    $reason = 'the Function App is not in the azd environment (a first provision, or after azd down)'
  } elseif (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    $keep = $true
    Write-Host 'preprovision: the Azure CLI (az) is not installed, so whether on_gateway_token_event still exists is not checked.'
  } else {
    az resource show --ids "$($env:AZURE_FUNCTION_APP_ID)/functions/on_gateway_token_event" --subscription $env:AZURE_SUBSCRIPTION_ID --query id -o tsv 2>$null | Out-Null
    if ($LASTEXITCODE -eq 0) { $keep = $true } else { $reason = "az finds no on_gateway_token_event in $($env:AZURE_FUNCTION_APP_ID) (deleted, or az is not signed in)" }
  }
  if (-not $keep) {
    Write-Host "preprovision: this provision leaves the Event Grid subscription out: $reason. postdeploy adds it after the code deploy."
  }
}
if ($keep) {
  Write-Host 'preprovision: on_gateway_token_event exists: the Event Grid subscription is kept.'
} else {
  azd env set DEPLOY_EVENT_SUBSCRIPTION false
  if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}

# The registry and the AKS cluster list are compiled in from infra/registry.json and infra/aks-clusters.json
# (see preprovision.sh).
foreach ($old in 'ROTATION_REGISTRY_JSON', 'AKS_CLUSTERS_JSON') {
  if ([Environment]::GetEnvironmentVariable($old)) {
    Write-Warning "$old is no longer read; put that JSON in infra/registry.json / infra/aks-clusters.json (docs/deploy.md) and clear it: azd env set $old ''"
  }
}

# azd preprovision hook (Windows): see preprovision.sh.
$ErrorActionPreference = 'Stop'

if (-not $env:APIM_SERVICE_NAME) {
  $env:APIM_SERVICE_NAME = Read-Host 'Name of the existing API Management service'
  azd env set APIM_SERVICE_NAME $env:APIM_SERVICE_NAME
}
if (-not $env:APIM_RESOURCE_GROUP) {
  $env:APIM_RESOURCE_GROUP = Read-Host "Resource group of $($env:APIM_SERVICE_NAME)"
  azd env set APIM_RESOURCE_GROUP $env:APIM_RESOURCE_GROUP
}
if (-not $env:DEPLOY_EVENT_SUBSCRIPTION) {
  azd env set DEPLOY_EVENT_SUBSCRIPTION false
}
# The registry and the AKS cluster list are compiled in from infra/registry.json and infra/aks-clusters.json
# (see preprovision.sh).
foreach ($old in 'ROTATION_REGISTRY_JSON', 'AKS_CLUSTERS_JSON') {
  if ([Environment]::GetEnvironmentVariable($old)) {
    Write-Warning "$old is no longer read; put that JSON in infra/registry.json / infra/aks-clusters.json (docs/deploy.md) and clear it: azd env set $old ''"
  }
}

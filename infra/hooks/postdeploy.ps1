# azd postdeploy hook (Windows): see postdeploy.sh, which this mirrors step for step.
$ErrorActionPreference = 'Stop'

if ($env:DEPLOY_EVENT_SUBSCRIPTION -eq 'true' -and $env:EVENT_SUBSCRIPTION_DEPLOYED -eq 'true') {
  Write-Host 'Event Grid subscription already deployed.'
} else {
  Write-Host 'Code deployed: creating the Event Grid subscription (APIM system topic -> on_gateway_token_event).'
  azd env set DEPLOY_EVENT_SUBSCRIPTION true
  if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
  azd provision --no-prompt
  if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}

# The values the provision above just wrote (this process's environment predates it); a missing one reads as empty.
function Get-AzdValue([string] $Name) {
  $value = azd env get-value $Name 2>$null
  if ($LASTEXITCODE -ne 0) { return '' }
  return (($value | Out-String).Trim())
}

# Where the AKS rotator role landed: see postdeploy.sh (mspnp/aks-baseline#408, Azure/bicep#6701). Only ids and
# scopes are printed: nothing here is a credential.
$expected = @((Get-AzdValue 'AKS_NAMESPACE_SCOPES') -split '\s+' | Where-Object { $_ })
if ($expected.Count -eq 0) {
  Write-Host 'AKS role scope check: no AKS clusters configured (infra/aks-clusters.json), nothing to check.'
  exit 0
}
$role = Get-AzdValue 'AKS_ROTATOR_ROLE_ID'
$principal = Get-AzdValue 'ROTATOR_IDENTITY_PRINCIPAL_ID'
if (-not $role -or -not $principal) {
  [Console]::Error.WriteLine('postdeploy: AKS_ROTATOR_ROLE_ID or ROTATOR_IDENTITY_PRINCIPAL_ID is not in the azd environment; run azd provision, then this hook again (azd hooks run postdeploy).')
  exit 1
}
if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
  [Console]::Error.WriteLine('postdeploy: the Azure CLI (az) is needed to check where the AKS rotator role was assigned; install it and run: azd hooks run postdeploy')
  exit 1
}
$listing = az role assignment list --assignee $principal --all --query '[].[roleDefinitionId, scope, id]' -o tsv
if ($LASTEXITCODE -ne 0) {
  [Console]::Error.WriteLine('postdeploy: az role assignment list failed (above), so where the AKS rotator role landed is unchecked; sign in with az login and run: azd hooks run postdeploy')
  exit 1
}

# ARM ids compare case-insensitively (PowerShell's -eq and -contains already do); the role is known by its GUID.
$roleGuid = ($role -split '/')[-1]
$ok = 0
$wrong = @()
$seen = @()
foreach ($line in @($listing)) {
  $fields = "$line".Trim() -split "`t"
  if ($fields.Count -lt 3) { continue }
  if (($fields[0] -split '/')[-1] -ne $roleGuid) { continue }
  $scope = $fields[1].TrimEnd('/')
  if ($expected -contains $scope) {
    $ok++
    $seen += $scope
  } else {
    $wrong += [pscustomobject]@{ Scope = $fields[1]; Id = $fields[2] }
  }
}
$missing = @($expected | Where-Object { $seen -notcontains $_ })

$creates = foreach ($scope in $missing) {
  "  az role assignment create --role $role --assignee-object-id $principal --assignee-principal-type ServicePrincipal --scope $scope"
}
if ($wrong.Count -gt 0) {
  $lines = @("postdeploy: the app identity $principal holds the AKS rotator role ($role) at a scope other than a cluster namespace:")
  foreach ($w in $wrong) { $lines += "  found:    $($w.Scope)" }
  foreach ($scope in $expected) { $lines += "  expected: $scope" }
  $lines += 'A role assignment above the namespace gives it Secret read/write on every AKS cluster under that scope.'
  $lines += 'Fix: delete the broad assignment, then create it at the namespace scope (docs/deploy.md, AKS):'
  foreach ($w in $wrong) { $lines += "  az role assignment delete --ids $($w.Id)" }
  foreach ($c in @($creates)) { $lines += $c }
  if ($missing.Count -eq 0) { $lines += '  (every expected namespace assignment exists: deleting the broad one is enough)' }
  [Console]::Error.WriteLine(($lines -join [Environment]::NewLine))
  exit 1
}
if ($missing.Count -gt 0) {
  $lines = @("postdeploy: warning: no assignment of the AKS rotator role ($role) to $principal found yet at:")
  foreach ($c in @($creates)) { $lines += $c }
  $lines += '(a new assignment can take a few minutes to be listed: run azd hooks run postdeploy again before creating it)'
  [Console]::Error.WriteLine(($lines -join [Environment]::NewLine))
}
Write-Host "AKS role scope check: $ok assignment(s) of the AKS rotator role to the app identity, all at namespace scope."

# azd postprovision hook (Windows): see postprovision.sh, which this mirrors step for step (the AKS rotator role at
# `<cluster id>/namespaces/<ns>`, assigned outside ARM: mspnp/aks-baseline#408, Azure/bicep#6701). Only ids and scopes
# are printed: nothing here is a credential.
$ErrorActionPreference = 'Stop'

$expected = @("$env:AKS_NAMESPACE_SCOPES" -split '\s+' | Where-Object { $_ })
if ($expected.Count -eq 0) {
  Write-Host 'AKS role assignments: no AKS clusters configured (infra/aks-clusters.json), nothing to assign.'
  exit 0
}
$role = $env:AKS_ROTATOR_ROLE_ID
$principal = $env:ROTATOR_IDENTITY_PRINCIPAL_ID
$subscription = $env:AZURE_SUBSCRIPTION_ID
if (-not $role -or -not $principal -or -not $subscription) {
  [Console]::Error.WriteLine('postprovision: AKS_ROTATOR_ROLE_ID, ROTATOR_IDENTITY_PRINCIPAL_ID or AZURE_SUBSCRIPTION_ID is not in the azd environment; run azd provision again.')
  exit 1
}
if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
  [Console]::Error.WriteLine('postprovision: the Azure CLI (az) is needed to assign the AKS rotator role at namespace scope; install it and run: azd hooks run postprovision')
  exit 1
}
$listing = az role assignment list --assignee $principal --all --subscription $subscription --query '[].[roleDefinitionId, scope, id]' -o tsv
if ($LASTEXITCODE -ne 0) {
  [Console]::Error.WriteLine('postprovision: az role assignment list failed (above), so the AKS rotator role is neither checked nor assigned; sign in with az login and run: azd hooks run postprovision')
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
if ($wrong.Count -gt 0) {
  $lines = @("postprovision: the app identity $principal holds the AKS rotator role ($role) at a scope other than a cluster namespace:")
  foreach ($w in $wrong) { $lines += "  found:    $($w.Scope)" }
  foreach ($scope in $expected) { $lines += "  expected: $scope" }
  $lines += 'A role assignment above the namespace gives it Secret read/write on every AKS cluster under that scope.'
  $lines += 'Fix: delete the broad assignment, then run azd hooks run postprovision (it creates the namespace ones):'
  foreach ($w in $wrong) { $lines += "  az role assignment delete --ids $($w.Id)" }
  [Console]::Error.WriteLine(($lines -join [Environment]::NewLine))
  exit 1
}

# A custom role definition created by this provision may not have replicated yet: retry each assignment.
$tries = if ($env:ROTATOR_ROLE_ASSIGN_TRIES) { [int]$env:ROTATOR_ROLE_ASSIGN_TRIES } else { 12 }
$pause = if ($env:ROTATOR_ROLE_ASSIGN_PAUSE) { [int]$env:ROTATOR_ROLE_ASSIGN_PAUSE } else { 10 }
$created = 0
foreach ($want in $expected) {
  if ($seen -contains $want) { continue }
  $attempt = 1
  while ($true) {
    az role assignment create --role $role --assignee-object-id $principal --assignee-principal-type ServicePrincipal --scope $want --subscription $subscription -o none
    if ($LASTEXITCODE -eq 0) { break }
    if ($attempt -ge $tries) {
      [Console]::Error.WriteLine("postprovision: could not assign the AKS rotator role at $want after $attempt attempts (above); run: azd hooks run postprovision")
      exit 1
    }
    $attempt++
    [Console]::Error.WriteLine("postprovision: retrying in ${pause}s (a new role definition takes a while to replicate)")
    Start-Sleep -Seconds $pause
  }
  $created++
}
Write-Host "AKS role assignments: $($ok + $created) of the AKS rotator role to the app identity, all at namespace scope ($created created now)."

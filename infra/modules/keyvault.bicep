metadata description = 'Key Vault in RBAC mode (soft delete, purge protection). Deployed twice: the token vault (the app writes token versions) and the configuration vault (registry and kubeconfigs, which the app only reads).'

@description('Name of the Key Vault (3-24 characters).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region of the Key Vault.')
param location string

@description('Tags applied to the Key Vault.')
param tags object = {}

@description('What the vault holds, for its tags and description: tokens or configuration.')
@allowed([
  'tokens'
  'configuration'
])
param purpose string

@description('Principal id of the app identity.')
param appPrincipalId string

@description('What the app may do with this vault\'s secrets: write (Key Vault Secrets Officer: the token vault, a new version per rotation) or read (Key Vault Secrets User: the registry and kubeconfigs).')
@allowed([
  'write'
  'read'
])
param appAccess string

@description('Optional principal id of the deploying user, granted Key Vault Secrets Officer to upload the registry and kubeconfigs; empty for none.')
param userPrincipalId string = ''

@description('Kind of principal userPrincipalId is.')
@allowed([
  'User'
  'ServicePrincipal'
])
param userPrincipalType string = 'User'

@description('Name of the secret that holds the registry JSON (ROTATION_REGISTRY is a Key Vault reference to it).')
param registrySecretName string = 'rotation-registry'

@description('Registry JSON to store in registrySecretName; empty leaves the secret alone (upload it yourself with az keyvault secret set).')
@secure()
param registryJson string = ''

@description('Resource id of the Log Analytics workspace that receives the vault audit log; empty for none.')
param logAnalyticsId string = ''

@description('Days a deleted vault or secret stays recoverable.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

// Key Vault Secrets Officer: get/list/set secret versions and tags (the token vault: a new version per rotation).
// Key Vault Secrets User: read secret contents only (the configuration vault).
var keyVaultSecretsOfficerRoleId = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' // built-in role Key Vault Secrets Officer (Azure built-in roles)
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6' // built-in role Key Vault Secrets User (Azure built-in roles)
var appRoleId = (appAccess == 'write') ? keyVaultSecretsOfficerRoleId : keyVaultSecretsUserRoleId

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: union(tags, { 'apim-token-rotator-vault': purpose })
  // checkov:skip=CKV_AZURE_109: The Flex Consumption app has no VNet integration in this template, so a default-deny firewall would lock it out; access is RBAC-only.
  // checkov:skip=CKV_AZURE_189: Same as CKV_AZURE_109: public endpoint needed without VNet integration; every call is Entra-authenticated and RBAC-authorised.
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// A module, not a conditional resource, so the secret's own settings stay visible to static checks.
module registrySecret 'registry-secret.bicep' = if (!empty(registryJson)) {
  name: 'registry-secret-${name}'
  params: {
    vaultName: vault.name
    secretName: registrySecretName
    registryJson: registryJson
  }
}

resource appSecretsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, appRoleId)
  scope: vault
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', appRoleId)
  }
}

resource userSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(vault.id, userPrincipalId, keyVaultSecretsOfficerRoleId)
  scope: vault
  properties: {
    principalId: userPrincipalId
    principalType: userPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficerRoleId)
  }
}

resource auditLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsId)) {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

@description('Name of the Key Vault.')
output name string = vault.name

@description('Resource id of the Key Vault.')
output resourceId string = vault.id

@description('Vault URI (KEY_VAULT_URL), ending in a slash.')
output vaultUri string = vault.properties.vaultUri

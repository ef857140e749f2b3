metadata description = 'Stores the registry JSON (README, The registry) as a Key Vault secret; ROTATION_REGISTRY is a Key Vault reference to it.'

@description('Name of the existing Key Vault.')
param vaultName string

@description('Name of the secret.')
param secretName string

@description('Registry JSON.')
@secure()
param registryJson string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource registrySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: secretName
  // checkov:skip=CKV_AZURE_41: The registry is configuration, not a credential; an expiry date would silently stop every rotation when it passed.
  properties: {
    value: registryJson
    contentType: 'application/json'
  }
}

metadata description = 'Storage for the Functions host (AzureWebJobsStorage), the Flex Consumption deployment package, Event Grid dead letters and the per-gateway leases. Shared key access is disabled: everything goes through managed identities.'

@description('Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region of the storage account.')
param location string

@description('Tags applied to the storage account.')
param tags object = {}

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Blob container Event Grid writes undeliverable gateway-token events to.')
param deadLetterContainerName string = 'deadletter'

@description('Blob container of the per-gateway leases (LEASE_CONTAINER_URL): one blob per gateway, leased by every write path.')
@minLength(3)
@maxLength(63)
param leaseContainerName string = 'gateway-leases'

@description('Principal id of the app identity: Storage Blob Data Owner on the account (what identity-based AzureWebJobsStorage needs) and Storage Blob Data Contributor on the lease container.')
param appPrincipalId string

@description('Principal id of the identity Event Grid writes dead letters as: Storage Blob Data Contributor on the dead-letter container only.')
param deadLetterWriterPrincipalId string

@description('Optional principal id of the deploying user, granted Storage Blob Data Contributor for debugging; empty for none.')
param userPrincipalId string = ''

@description('Kind of principal userPrincipalId is.')
@allowed([
  'User'
  'ServicePrincipal'
])
param userPrincipalType string = 'User'

// Storage Blob Data Owner: what the Functions host needs for identity-based AzureWebJobsStorage (blob leases for the
// timer trigger and host locks) and for the deployment package (Microsoft's Flex quickstarts grant the same). It is a
// superset of what the app needs on the lease and dead-letter containers; those get their own container-scoped
// grants below so that each need is stated, and so narrowing the host grant later cannot silently break them.
var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // built-in role Storage Blob Data Owner (Azure built-in roles)
var storageBlobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // built-in role Storage Blob Data Contributor (Azure built-in roles)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  // checkov:skip=CKV_AZURE_206: Holds only host leases, the code package and dead letters, all reproducible; locally redundant storage is enough.
  // checkov:skip=CKV_AZURE_59: A Flex Consumption app without VNet integration reaches its storage over the public endpoint; access is Entra-only (shared keys disabled).
  // checkov:skip=CKV_AZURE_35: Default-deny would lock out the Flex Consumption app (no VNet integration in this template); Event Grid passes as a trusted service either way.
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource leaseContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: leaseContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Leases: create the gateway's blob once, acquire/renew/release its lease. Contributor, not Owner (no ACLs).
resource appLeaseContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(leaseContainer.id, appPrincipalId, storageBlobDataContributorRoleId)
  scope: leaseContainer
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    description: 'apim-token-rotator: per-gateway leases.'
  }
}

// Event Grid's dead-letter writer: this container only. The app reads and, on replay, deletes dead letters, which
// needs Contributor there too; its account-level Owner (host storage) already includes that.
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, deadLetterWriterPrincipalId, storageBlobDataContributorRoleId)
  scope: deadLetterContainer
  properties: {
    principalId: deadLetterWriterPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    description: 'apim-token-rotator: Event Grid dead-letter delivery.'
  }
}

resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageBlobDataOwnerRoleId)
  scope: storage
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
  }
}

resource userBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(storage.id, userPrincipalId, storageBlobDataContributorRoleId)
  scope: storage
  properties: {
    principalId: userPrincipalId
    principalType: userPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
  }
}

@description('Name of the storage account.')
output name string = storage.name

@description('Resource id of the storage account (dead-letter destination).')
output resourceId string = storage.id

@description('Blob endpoint of the storage account, ending in a slash.')
output blobEndpoint string = storage.properties.primaryEndpoints.blob

@description('Name of the dead-letter container.')
output deadLetterContainerName string = deadLetterContainer.name

@description('Name of the lease container.')
output leaseContainerName string = leaseContainer.name

@description('Name of the deployment package container.')
output deploymentContainerName string = deploymentContainer.name

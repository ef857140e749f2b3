metadata description = 'Storage for the Functions host (AzureWebJobsStorage), the Flex Consumption deployment package, Event Grid dead letters and the per-gateway leases. Shared key access is disabled: everything goes through managed identities, each granted on the containers it uses only.'

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

@description('Principal id of the app identity: Storage Blob Data Owner on the two host containers (identity-based AzureWebJobsStorage), Storage Blob Data Contributor on the deployment package, lease and dead-letter containers. Nothing on the account as a whole.')
param appPrincipalId string

@description('Principal id of the identity Event Grid writes dead letters as: Storage Blob Data Contributor on the dead-letter container only.')
param deadLetterWriterPrincipalId string

@description('Optional principal id of the deploying user, granted Storage Blob Data Contributor on the dead-letter container (to read dead letters); empty for none. azd deploys the code through the app\'s publish endpoint, not to the container.')
param userPrincipalId string = ''

@description('Kind of principal userPrincipalId is.')
@allowed([
  'User'
  'ServicePrincipal'
])
param userPrincipalType string = 'User'

// Each grant names its container; none covers the account. Storage Blob Data Owner on the Functions host's two
// containers (identity-based AzureWebJobsStorage: `azure-webjobs-hosts` for host locks and the timer's schedule status,
// azure-webjobs-sdk HostContainerNames; `azure-webjobs-secrets` for host keys, azure-functions-host
// BlobStorageSecretsRepository), created here so the host never needs to create a container; Contributor on the
// deployment package (the Flex platform reads it as the site's identity and writes it on publish), the leases and
// the dead letters (the app reads and, on replay, deletes them).
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

resource hostsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'azure-webjobs-hosts'
  properties: {
    publicAccess: 'None'
  }
}

resource secretsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'azure-webjobs-secrets'
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

// Event Grid's dead-letter writer: this container only.
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

resource appHostsOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostsContainer.id, appPrincipalId, storageBlobDataOwnerRoleId)
  scope: hostsContainer
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    description: 'apim-token-rotator: Functions host locks and timer status (AzureWebJobsStorage).'
  }
}

resource appSecretsOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secretsContainer.id, appPrincipalId, storageBlobDataOwnerRoleId)
  scope: secretsContainer
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    description: 'apim-token-rotator: Functions host keys (AzureWebJobsStorage).'
  }
}

// Any identity assigned to the site can be used by the code it runs, so the package stays writable by the app:
// a narrower scope than the account is what ARM offers here.
resource appPackageContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deploymentContainer.id, appPrincipalId, storageBlobDataContributorRoleId)
  scope: deploymentContainer
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    description: 'apim-token-rotator: the Flex Consumption deployment package.'
  }
}

resource appDeadLetterContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, appPrincipalId, storageBlobDataContributorRoleId)
  scope: deadLetterContainer
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    description: 'apim-token-rotator: read and, on replay, delete dead letters.'
  }
}

resource userDeadLetterContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(deadLetterContainer.id, userPrincipalId, storageBlobDataContributorRoleId)
  scope: deadLetterContainer
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

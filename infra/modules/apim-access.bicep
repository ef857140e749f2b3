metadata description = 'Assigns the gateway-token role to the app identity on the existing APIM service only (deployed into the APIM resource group).'

@description('Name of the existing API Management service.')
param apimServiceName string

@description('Resource id of the custom gateway-token role definition.')
param roleDefinitionId string

@description('Principal id of the app identity.')
param principalId string

@description('Create the role assignment (main.bicep: assignCustomRoles). The module always runs so that apimLocation is available to the Event Grid module.')
param assignRole bool = true

resource apim 'Microsoft.ApiManagement/service@2023-05-01-preview' existing = {
  name: apimServiceName
}

// principalType ServicePrincipal: ARM then does not look the new identity up in Entra ID first, which fails while a
// just-created identity replicates (ARM's own PrincipalNotFound message says so and links aka.ms/docs-principaltype,
// Microsoft's "Troubleshoot Azure RBAC").
resource gatewayTokenRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignRole) {
  name: guid(apim.id, principalId, roleDefinitionId)
  scope: apim
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roleDefinitionId
    description: 'apim-token-rotator: generate gateway tokens, regenerate gateway keys.'
  }
}

@description('Resource id of the APIM service.')
output apimId string = apim.id

// APIM returns its location in display form ("West Europe"); the system topic is created with the region name.
@description('Region of the APIM service as a region name (westeurope); its Event Grid system topic must live there.')
output apimLocation string = toLower(replace(apim.location, ' ', ''))

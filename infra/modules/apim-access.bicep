metadata description = 'Assigns the gateway-token role to the app identity on the existing APIM service only (deployed into the APIM resource group).'

@description('Name of the existing API Management service.')
param apimServiceName string

@description('Resource id of the custom gateway-token role definition.')
param roleDefinitionId string

@description('Principal id of the app identity.')
param principalId string

resource apim 'Microsoft.ApiManagement/service@2023-05-01-preview' existing = {
  name: apimServiceName
}

resource gatewayTokenRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
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

@description('Region of the APIM service; its Event Grid system topic must live there.')
output apimLocation string = apim.location

metadata description = 'Custom role that lets the rotator generate self-hosted gateway tokens and regenerate gateway keys - nothing else (the app never reads a gateway: rotation/adapters/arm.py calls only generateToken and regenerateKey).'

targetScope = 'subscription'

@description('Display name of the custom role; unique in the tenant.')
param roleName string

@description('Resource id of the resource group that holds the APIM service; the only assignable scope.')
param assignableScope string

resource role 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, assignableScope, roleName)
  properties: {
    roleName: roleName
    description: 'APIM token rotator: generate gateway tokens, regenerate gateway keys (two-phase key roll only).'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.ApiManagement/service/gateways/generateToken/action'
          'Microsoft.ApiManagement/service/gateways/regenerateKey/action'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      assignableScope
    ]
  }
}

@description('Resource id of the role definition.')
output roleDefinitionId string = role.id

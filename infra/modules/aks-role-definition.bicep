metadata description = 'Custom Azure RBAC for Kubernetes role: read and patch Secrets and restart Deployments, StatefulSets and DaemonSets. Narrower than the built-in Azure Kubernetes Service RBAC Writer (no pods, services, configmaps, exec, service accounts).'

targetScope = 'subscription'

@description('Display name of the custom role; unique in the tenant.')
param roleName string

resource role 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, roleName)
  properties: {
    roleName: roleName
    description: 'APIM token rotator on AKS (Azure RBAC for Kubernetes): read/patch Secrets, roll Deployments, StatefulSets and DaemonSets. Assign at namespace scope.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          'Microsoft.ContainerService/managedClusters/secrets/read'
          'Microsoft.ContainerService/managedClusters/secrets/write'
          'Microsoft.ContainerService/managedClusters/apps/deployments/read'
          'Microsoft.ContainerService/managedClusters/apps/deployments/write'
          'Microsoft.ContainerService/managedClusters/apps/statefulsets/read'
          'Microsoft.ContainerService/managedClusters/apps/statefulsets/write'
          'Microsoft.ContainerService/managedClusters/apps/daemonsets/read'
          'Microsoft.ContainerService/managedClusters/apps/daemonsets/write'
        ]
        notDataActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

@description('Resource id of the role definition.')
output roleDefinitionId string = role.id

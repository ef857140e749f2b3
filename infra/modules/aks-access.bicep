metadata description = 'For one AKS cluster with Azure RBAC for Kubernetes authorization: assigns the rotator role to the app identity at namespace scope (<cluster id>/namespaces/<ns>) for each namespace that holds a target Secret. Deployed into the cluster\'s resource group.'

@description('Name of the existing AKS cluster.')
param clusterName string

@description('Namespaces of the cluster that hold gateway token Secrets (and the workloads to restart).')
param namespaces array

@description('Resource id of the AKS rotator role definition.')
param roleDefinitionId string

@description('Principal id of the app identity.')
param principalId string

resource cluster 'Microsoft.ContainerService/managedClusters@2024-05-01' existing = {
  name: clusterName
}

// A namespace is an addressable scope for Azure RBAC for Kubernetes; the existing reference only builds its id
// (<cluster id>/namespaces/<name>) so role assignments can be scoped to it, nothing is read or created.
#disable-next-line BCP081 // reason: the namespaces type is not in every Bicep type index; it is only used to build the scope id.
resource namespaceScopes 'Microsoft.ContainerService/managedClusters/namespaces@2025-03-01' existing = [for ns in namespaces: {
  parent: cluster
  name: ns
}]

resource rotatorRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (ns, i) in namespaces: {
  name: guid(cluster.id, ns, principalId, roleDefinitionId)
  scope: namespaceScopes[i]
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roleDefinitionId
    description: 'apim-token-rotator: gateway token Secrets and workload restarts in namespace ${ns}.'
  }
}]

@description('Namespace scopes the role was assigned on.')
output scopes array = [for ns in namespaces: '${cluster.id}/namespaces/${ns}']

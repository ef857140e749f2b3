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

// A namespace is an addressable scope for Azure RBAC for Kubernetes: Microsoft's "Use Azure RBAC for Kubernetes
// authorization" assigns roles at `<cluster id>/namespaces/<name>`. ARM has no `managedClusters/namespaces` resource
// type (the managed-namespace resource is `managedClusters/managedNamespaces`), so this existing reference is never
// read: it only lets Bicep build that scope id for the role assignments (no property of it is used, so no GET).
// The same pattern as Microsoft's AKS baseline (mspnp/aks-baseline cluster-stamp.bicep), whose assignments have
// been reported to land on the resource group (mspnp/aks-baseline#408, Azure/bicep#6701): the azd postdeploy hook
// lists every assignment of this role to the identity and fails on any scope but these (docs/deploy.md, AKS).
#disable-next-line BCP081 // reason: no ARM type for this scope segment; it is only used to build the scope id.
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

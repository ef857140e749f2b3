metadata description = 'Azure Monitor workbook over the rotator\'s structured traces: rotations over time, token expiry per gateway, failures per cluster.'

@description('Display name of the workbook in the Portal.')
param displayName string

@description('Azure region of the workbook.')
param location string

@description('Tags applied to the workbook.')
param tags object = {}

@description('Resource id of the Application Insights component the workbook queries (it appears under its Workbooks blade).')
param applicationInsightsId string

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, applicationInsightsId, 'apim-token-rotator-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: toLower(applicationInsightsId)
    serializedData: loadTextContent('../workbook.json')
  }
}

@description('Resource id of the workbook.')
output resourceId string = workbook.id

metadata description = 'Metric alert on the APIM Event Grid system topic: any dead-lettered gateway-token event (delivery gave up after the retry policy).'

@description('Name of the alert rule.')
param name string

@description('Tags applied to the alert rule.')
param tags object = {}

@description('Resource id of the Event Grid system topic on the APIM service.')
param systemTopicId string

@description('Resource id of the action group notified when the rule fires; empty for none.')
param actionGroupId string = ''

resource deadLettered 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: name
  location: 'global'
  tags: tags
  properties: {
    description: 'A gateway-token event was dead-lettered: the function did not accept it within the retry policy. Replay it from the dead-letter container (DEADLETTER_BLOB_URL) after fixing the cause.'
    severity: 1
    enabled: true
    scopes: [
      systemTopicId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'DeadLettered'
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: 'DeadLetteredCount'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
        }
      ]
    }
    actions: empty(actionGroupId) ? [] : [
      {
        actionGroupId: actionGroupId
      }
    ]
  }
}

@description('Resource id of the metric alert.')
output alertRuleId string = deadLettered.id

metadata description = 'Log alert rules over the rotator\'s structured traces (DESIGN section 7): a failed rotation, and a gateway whose stored token expires within 48 hours.'

@description('Prefix of the alert rule names.')
param namePrefix string

@description('Azure region of the alert rules (same as Application Insights).')
param location string

@description('Tags applied to the alert rules.')
param tags object = {}

@description('Resource id of the Application Insights component whose traces the rules query.')
param applicationInsightsId string

@description('Resource id of the action group notified when a rule fires; empty creates the rules without notifications (they still show in the Portal).')
param actionGroupId string = ''

@description('Hours of token validity below which the expiry alert fires.')
@minValue(1)
@maxValue(720)
param expiryThresholdHours int = 48

// Rotation records, whichever way the worker ships them: App Insights customDimensions (logging "extra" fields)
// or a JSON message. d holds the fields of DESIGN section 7 (event, gatewayId, outcome, cluster, expiresAt, ...).
var rotationTraces = '''
let rotation = traces
| extend payload = iff(message startswith "{", parse_json(message), dynamic({}))
| extend d = bag_merge(todynamic(customDimensions), payload)
| extend event = tostring(d.event)
| where event startswith "rotation.";
'''

var failedRotationQuery = '''
rotation
| where (event == "rotation.target" and tostring(d.outcome) in ("failed", "timeout"))
    or (event == "rotation.reconcile" and tostring(d.outcome) == "failed")
| extend gatewayId = tostring(d.gatewayId), cluster = tostring(d.cluster)
| summarize failures = count() by gatewayId, cluster
'''

var expiringTokenQuery = '''
rotation
| where event in ("rotation.expiry", "rotation.reconcile") and isnotempty(tostring(d.expiresAt))
| extend gatewayId = tostring(d.gatewayId), expiresAt = todatetime(tostring(d.expiresAt))
| summarize arg_max(timestamp, expiresAt) by gatewayId
| extend hoursLeft = datetime_diff("minute", expiresAt, now()) / 60.0
'''

var actions = empty(actionGroupId) ? [] : [
  actionGroupId
]

resource failedRotation 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-rotation-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'APIM token rotation failed'
    description: 'A reconcile failed, or a target cluster Secret could not be updated (outcome failed or timeout). The gateway keeps its current token; look at the error field and the dead-letter container.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: '${rotationTraces}${failedRotationQuery}'
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'gatewayId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
            {
              name: 'cluster'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actions
    }
  }
}

resource expiringToken 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-token-expiring'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'APIM gateway token expires within ${expiryThresholdHours} h'
    description: 'The newest token the rotator stored for a gateway expires within ${expiryThresholdHours} hours: rotation is not keeping up (fed by the sweep\'s rotation.expiry records and every reconcile).'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT6H'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: '${rotationTraces}${expiringTokenQuery}| where hoursLeft < ${expiryThresholdHours}\n'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'gatewayId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actions
    }
  }
}

@description('Resource ids of the log alert rules.')
output alertRuleIds array = [
  failedRotation.id
  expiringToken.id
]

metadata description = 'Alerts on the rotator\'s signals: a log alert on failed reconciles (rotation.reconcile / rotation.sweep records), the token-expiry alert (a metric alert on the rotation_token_hours_left custom metric with OpenTelemetry, else a log alert on the rotation.expiry records), and an alert on silence (no rotation.sweep record in twice the sweep interval).'

@description('Prefix of the alert rule names.')
param namePrefix string

@description('Azure region of the log alert rule (same as Application Insights); metric alerts are global.')
param location string

@description('Tags applied to the alert rules.')
param tags object = {}

@description('Resource id of the Application Insights component the rules watch.')
param applicationInsightsId string

@description('Resource id of the action group notified when a rule fires; empty creates the rules without notifications (they still show in the Portal).')
param actionGroupId string = ''

@description('Whether the app sends telemetry through OpenTelemetry (main.bicep enableOpenTelemetry). Only then does it send the rotation_token_hours_left metric; without it the expiry alert is a log alert on the rotation.expiry records instead.')
param openTelemetry bool = true

@description('Minutes between two sweeps under SWEEP_SCHEDULE (60 for the default, hourly). The silence alert fires when no sweep was recorded in twice this.')
@allowed([
  5
  15
  30
  60
  120
  180
  720
  1440
])
param sweepIntervalMinutes int = 60

@description('Hours of token validity below which the expiry alert fires.')
@minValue(1)
@maxValue(720)
param expiryThresholdHours int = 48

// One record per reconcile outcome, failures before any target included (errorClass: AccessDenied,
// UpstreamError, SettingsError, ...), and one per sweep. With telemetryMode OpenTelemetry the fields are
// customDimensions; on the classic path they are only in the message (`rotation.reconcile k=v ...`), so
// each field falls back to the message.
var failedRotationQuery = '''
traces
| extend event = coalesce(tostring(customDimensions.event), extract(@"^(rotation\.\w+) ", 1, message))
| where event in ("rotation.reconcile", "rotation.sweep")
| extend outcome = coalesce(tostring(customDimensions.outcome), extract(@" outcome=(\w+)", 1, message))
| where outcome == "failed"
| extend gatewayId = coalesce(tostring(customDimensions.gatewayId), extract(@" gatewayId=(\S+)", 1, message), "(sweep)"),
    errorClass = coalesce(tostring(customDimensions.errorClass), extract(@" errorClass=(\w+)", 1, message), "TargetsFailed")
| summarize failures = count() by gatewayId, errorClass
'''

var actions = empty(actionGroupId) ? [] : [
  {
    actionGroupId: actionGroupId
  }
]

var logActions = empty(actionGroupId) ? [] : [
  actionGroupId
]

resource failedRotation 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-rotation-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'APIM token rotation failed'
    description: 'A reconcile ended failed: before any target (errorClass AccessDenied = a missing role, UpstreamError = ARM or Key Vault trouble, SettingsError = a bad app setting) or at a target (TargetsFailed); or a sweep failed. The gateway keeps its current token; the workbook shows the error, the dead-letter container the events.'
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
          query: failedRotationQuery
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
              name: 'errorClass'
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
      actionGroups: logActions
    }
  }
}

// The sweep (hourly by default) and every reconcile record the hours left of each gateway's stored token
// (an OpenTelemetry histogram: Application Insights keeps its minimum per interval). Six hours of window: a
// missed sweep does not resolve the alert. Splitting by gatewayId needs "alerting on custom metric
// dimensions" on the component, which monitoring.bicep sets (CustomMetricsOptedInType). skipMetricValidation
// lets the rule deploy before the app has sent the metric once (metricAlert_API.json 2018-03-01:
// "Allows creating an alert rule on a custom metric that isn't yet emitted"); OpenTelemetry custom metrics
// are in the metric namespace azure.applicationinsights.
resource expiringToken 'Microsoft.Insights/metricAlerts@2018-03-01' = if (openTelemetry) {
  name: '${namePrefix}-token-expiring'
  location: 'global'
  tags: tags
  properties: {
    description: 'The token the rotator stored for a gateway expires within ${expiryThresholdHours} hours (metric rotation_token_hours_left): rotation is not keeping up. Look at the rotation-failed alert and the workbook.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT6H'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'TokenHoursLeft'
          metricNamespace: 'azure.applicationinsights'
          metricName: 'rotation_token_hours_left'
          dimensions: [
            {
              name: 'gatewayId'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'LessThan'
          threshold: expiryThresholdHours
          timeAggregation: 'Minimum'
          skipMetricValidation: true
        }
      ]
    }
    actions: actions
  }
}

// The classic path (enableOpenTelemetry false) sends no custom metrics at all (rotation/telemetry.py records them
// only when OpenTelemetry is loaded), so the metric alert above would never fire. The sweep logs one rotation.expiry
// record per gateway on either path (rotation/service.py), its fields in the `rotation.expiry k=v ...` message:
// the same alert, from the latest record per gateway.
var expiringTokenQuery = '''
traces
| extend event = coalesce(tostring(customDimensions.event), extract(@"^(rotation\.\w+) ", 1, message))
| where event == "rotation.expiry"
| extend gatewayId = coalesce(tostring(customDimensions.gatewayId), extract(@" gatewayId=(\S+)", 1, message)),
    hoursLeft = todouble(coalesce(tostring(customDimensions.hoursLeft), extract(@" hoursLeft=([-0-9.]+)", 1, message)))
| where isnotempty(gatewayId) and isnotnull(hoursLeft)
| summarize arg_max(timestamp, hoursLeft) by gatewayId
| project gatewayId, hoursLeft
'''

resource expiringTokenFromLogs 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (!openTelemetry) {
  name: '${namePrefix}-token-expiring-logs'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'APIM gateway token expires within ${expiryThresholdHours} h'
    description: 'The token the rotator stored for a gateway expires within ${expiryThresholdHours} hours (the sweep\'s latest rotation.expiry record): rotation is not keeping up. Look at the rotation-failed alert and the workbook.'
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
          query: expiringTokenQuery
          timeAggregation: 'Minimum'
          metricMeasureColumn: 'hoursLeft'
          operator: 'LessThan'
          threshold: expiryThresholdHours
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
      actionGroups: logActions
    }
  }
}

// Every rule above is computed from records the app writes: if the host never starts (storage RBAC, a bad package)
// or the timer never fires, nothing fails and nothing fires. This one fires on silence: no rotation.sweep record
// (written by every sweep, ok or failed, on either telemetry path) in twice the sweep interval. `summarize count()`
// without `by` returns one row, 0, over no records, so the rule has a value to compare even when nothing came in.
// Log alert windows come from a fixed set (1 min to 2 days), hence the table: twice each allowed interval, evaluated
// often enough to notice within a fraction of it.
var silenceWindows = {
  '5': { window: 'PT10M', every: 'PT5M' }
  '15': { window: 'PT30M', every: 'PT5M' }
  '30': { window: 'PT1H', every: 'PT5M' }
  '60': { window: 'PT2H', every: 'PT15M' }
  '120': { window: 'PT4H', every: 'PT15M' }
  '180': { window: 'PT6H', every: 'PT15M' }
  '720': { window: 'P1D', every: 'PT1H' }
  '1440': { window: 'P2D', every: 'PT1H' }
}
var silenceQuery = '''
traces
| extend event = coalesce(tostring(customDimensions.event), extract(@"^(rotation\.\w+) ", 1, message))
| where event == "rotation.sweep"
| summarize sweeps = count()
'''

resource sweepSilent 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-sweep-silent'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'APIM token rotator is silent: no sweep recorded'
    description: 'No rotation.sweep record in the last ${2 * sweepIntervalMinutes} minutes (twice the sweep interval): the Function App is not running its timer, or not starting at all (storage access, a bad deployment package, a stopped app). Nothing else alerts in that case. Also fires once after the first deployment if no sweep has run yet.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: silenceWindows[string(sweepIntervalMinutes)].every
    windowSize: silenceWindows[string(sweepIntervalMinutes)].window
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: silenceQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'sweeps'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: logActions
    }
  }
}

@description('Resource ids of the alert rules.')
output alertRuleIds array = [
  failedRotation.id
  openTelemetry ? expiringToken.id : expiringTokenFromLogs.id
  sweepSilent.id
]

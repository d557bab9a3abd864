// Log Analytics workspace and workspace-based Application Insights.
// Local (instrumentation key) auth is off: telemetry is accepted only from
// Entra ID identities holding "Monitoring Metrics Publisher" (see rbac.bicep).

param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object = {}
param retentionInDays int = 30

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
    // API Management's azure-openai-emit-token-metric sends custom metrics with dimensions
    // (subscription, API, operation); without this they arrive without them.
    #disable-next-line BCP037
    CustomMetricsOptedInType: 'WithDimensions'
  }
}

output applicationInsightsId string = applicationInsights.id
output applicationInsightsName string = applicationInsights.name
output connectionString string = applicationInsights.properties.ConnectionString
output logAnalyticsId string = logAnalytics.id

// The gateway: a Python Function App on the Flex Consumption plan.

param name string
param planName string
param location string
param tags object = {}

@description('Resource id and client id of the user-assigned identity the app runs as.')
param identityId string
param identityClientId string

param storageBlobEndpoint string
param deploymentContainerName string
param applicationInsightsConnectionString string

@description('The gateway\'s own settings (shared/settings.py), set by main.bicep.')
param gatewaySettings object

@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

// No 512: the Python worker alone peaks at about 290 MB resident with 16 to 64
// concurrent streams (bench/bench.py --stream), before the Functions host's
// own memory: too little headroom in 512 MB.
@allowed([
  2048
  4096
])
@description('Memory of each Flex Consumption instance, in MB.')
param instanceMemoryMB int = 2048

@description('Most instances the app scales out to. Flex Consumption accepts 40 to 1000.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Concurrent HTTP requests per instance. Flex Consumption defaults to 1 for Python; the gateway is async and mostly waits on upstream models, so one instance can hold many streams.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

@description('Instances kept warm for the HTTP functions (billed while idle). Avoids the cold start that pays for importing LiteLLM.')
@minValue(0)
param alwaysReadyInstances int = 0

// Settings the platform and SDKs need. Flex Consumption takes the runtime
// from functionAppConfig, so FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION
// must not be set, and no storage connection string or key appears anywhere.
var platformSettings = {
  // Host storage through the managed identity.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  // Telemetry with Entra ID auth (local auth is disabled on Application Insights).
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // The gateway sets up the Azure Monitor distro itself (shared/telemetry.py: its own spans
  // and metrics, no automatic instrumentation, logs left to the host), so the Python worker
  // must not set it up a second time.
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'false'
  // DefaultAzureCredential picks the user-assigned identity by this client id.
  AZURE_CLIENT_ID: identityClientId
  // Required by the HTTP streams feature (azurefunctions-extensions-http-fastapi).
  PYTHON_ENABLE_INIT_INDEXING: '1'
}

var appSettings = union(gatewaySettings, platformSettings)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy is not offered in every Flex region; turn on zoneRedundant where the region supports it.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true // Linux
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222: the gateway is an internet-facing API; callers authenticate with project keys (and APIM subscription keys when APIM is on).
  //checkov:skip=CKV_AZURE_17: OpenAI SDK clients authenticate with API keys, not client certificates.
  //checkov:skip=CKV_AZURE_212: Flex Consumption scales instances itself (maximumInstanceCount, alwaysReady); there is no fixed instance count to set.
  //checkov:skip=CKV_AZURE_213: App Service health check (instance replacement) does not apply to Flex Consumption's scale controller; GET /health serves external probes.
  //checkov:skip=CKV_AZURE_78: Flex Consumption has no FTP(S) deployment and rejects siteConfig.ftpsState (Microsoft's Flex Consumption deprecation list); FTP and basic-auth publishing are off below (basicPublishingCredentialsPolicies).
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api' // azure.yaml service name: `azd deploy` finds the app by this tag
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Only properties Flex Consumption accepts (tests/test_infra.py checks
    // against Microsoft's Flex Consumption deprecation list): the runtime,
    // scale and deployment live in functionAppConfig below.
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: alwaysReadyInstances > 0 ? [
          {
            name: 'http' // all HTTP functions scale together in the "http" group
            instanceCount: alwaysReadyInstances
          }
        ] : []
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// No FTP or basic-auth publishing: `azd deploy` authenticates with Entra ID.
// `location` as in Azure Verified Modules (avm/res/web/site/basic-publishing-credentials-policy):
// ARM has been reported to reject these policies without it.
resource ftp 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  location: location
  properties: {
    allow: false
  }
}

resource scm 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  location: location
  properties: {
    allow: false
  }
}

output name string = app.name
output id string = app.id
output hostName string = app.properties.defaultHostName

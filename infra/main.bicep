// LLM gateway on Azure Functions (Flex Consumption), deployed to one resource group.
//
//   identity   user-assigned managed identity the app runs as
//   monitoring Log Analytics + Application Insights (Entra ID auth only)
//   storage    host storage + deployment package (no shared keys)
//   cosmos     model catalog, projects and usage (no account keys)
//   keyvault   provider secrets, RBAC mode
//   rbac       the identity's (and the deploying user's) roles, before the app starts
//   function   the Function App and its Flex Consumption plan
//   apim       optional API Management in front of the app
//
// `azd up` fills the parameters from main.parameters.json.

targetScope = 'resourceGroup'

@minLength(1)
@maxLength(64)
@description('azd environment name; part of the resource names\' hash and the azd-env-name tag.')
param environmentName string

@description('Region of every resource. Must offer Flex Consumption: `az functionapp list-flexconsumption-locations`.')
param location string = resourceGroup().location

@description('Object id of the deploying user (azd sets AZURE_PRINCIPAL_ID). Gets Key Vault Secrets Officer and Cosmos data access to run the admin steps; empty = none.')
param principalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Reported by /health as "environment" (the ENVIRONMENT setting). "production" also turns Key Vault purge protection on by default.')
param gatewayEnvironment string = 'production'

@description('Key Vault purge protection. On (production): a deleted vault can only be recovered, never purged, for 90 days, and its name stays taken, so redeploying the environment needs `az keyvault recover` first. Off (any other environment): `azd down --purge` purges the vault and the next `azd up` can reuse its name. Once on, it cannot be turned off.')
param keyVaultPurgeProtection bool = gatewayEnvironment == 'production'

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

// Flex Consumption accepts 40 to 1000 (the plan scales out to 1000 instances).
@minValue(40)
@maxValue(1000)
@description('Most instances the app scales out to. Flex Consumption accepts 40 to 1000.')
param maximumInstanceCount int = 40

@description('Concurrent HTTP requests per instance (Flex Consumption defaults to 1 for Python; the gateway is async).')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

@description('Always-ready instances (billed while idle) to avoid cold starts; 0 = scale to zero.')
@minValue(0)
param alwaysReadyInstances int = 0

@description('Cosmos DB database id (COSMOS_DATABASE_ID).')
param cosmosDatabaseName string = 'llm-proxy'

@description('Cosmos DB serverless (default). false = provisioned autoscale throughput shared by the database.')
param cosmosServerless bool = true

@description('Autoscale max RU/s of the database when cosmosServerless is false.')
@minValue(1000)
param cosmosAutoscaleMaxThroughput int = 1000

@description('Days Cosmos keeps each usage record (the usage container\'s default TTL; USAGE_RETENTION_DAYS). 0 = forever.')
@minValue(0)
param usageRetentionDays int = 0

@description('Days stored responses are kept (the responses container\'s default TTL; RESPONSES_RETENTION_DAYS). 0 = forever.')
@minValue(0)
param responsesRetentionDays int = 30

@description('Existing Azure OpenAI / AI Services accounts the app may call keylessly: names (in this resource group) or full resource ids. The identity gets "Cognitive Services OpenAI User" on each.')
param openAiAccounts array = []

@description('Put Azure API Management in front of the Function App.')
param enableApiManagement bool = false

@allowed([
  'BasicV2'
  'StandardV2'
])
@description('API Management tier (v2 tiers: long-lived streaming connections and LLM policies; see modules/apim.bicep).')
param apimSku string = 'BasicV2'

@description('API Management publisher e-mail (required by APIM; receives its notifications).')
param apimPublisherEmail string = 'admin@example.com'

param apimPublisherName string = 'LLM gateway'

@description('Tokens per minute for each API Management subscription (azure-openai-token-limit).')
@minValue(1)
param apimTokensPerMinute int = 100000

// Used once: when the Key Vault secret apim-shared-secret does not exist yet
// (apimSharedSecretExists false), the template creates it with this value;
// once it exists, Key Vault is its only home and no provision writes it again,
// whatever value this parameter has on another machine or a CI runner. azd
// generates a value on the first `azd provision` (environment configuration,
// infra.parameters.apimSharedSecret); main.parameters.json maps it to
// APIM_SHARED_SECRET too, so `azd pipeline config` can pass it to a pipeline.
@secure()
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 48
      noSpecial: true
    }
  }
})
@description('The first value of the Key Vault secret apim-shared-secret, which API Management adds to every request (X-APIM-Shared-Secret) and the app requires when API Management is on. Written only when the secret does not exist yet.')
param apimSharedSecret string

@description('Whether the Key Vault secret apim-shared-secret exists already (the preprovision hook, infra/hooks/preprovision.py, finds out): true = the template leaves it as it is.')
param apimSharedSecretExists bool = false

@description('Restore a soft-deleted API Management instance of this environment instead of creating it (set by the preprovision hook when `azd down` without --purge left one).')
param apimRestore bool = false

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'

// Existing Azure OpenAI accounts as resource ids (a bare name means this resource group).
var openAiAccountIds = [for account in openAiAccounts: contains(account, '/') ? account : resourceId('Microsoft.CognitiveServices/accounts', account)]

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    name: 'cosmos-${resourceToken}'
    location: location
    tags: tags
    databaseName: cosmosDatabaseName
    serverless: cosmosServerless
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    usageRetentionDays: usageRetentionDays
    responsesRetentionDays: responsesRetentionDays
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    enablePurgeProtection: keyVaultPurgeProtection
    apimSharedSecret: apimSharedSecret
    apimSharedSecretExists: apimSharedSecretExists
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  params: {
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    cosmosAccountName: cosmos.outputs.name
  }
}

module openAiAccess 'modules/openai-access.bicep' = [for (accountId, i) in openAiAccountIds: {
  name: 'openai-access-${i}'
  scope: resourceGroup(split(accountId, '/')[2], split(accountId, '/')[4])
  params: {
    accountName: last(split(accountId, '/'))
    principalId: identity.outputs.principalId
  }
}]

// The gateway's settings: every name in shared/settings.py SETTING_NAMES
// (tests/test_infra.py checks), with the values for Azure.
var gatewaySettings = {
  ENVIRONMENT: gatewayEnvironment
  ALLOW_ANONYMOUS: 'false' // every call needs a project key
  COSMOS_URL: cosmos.outputs.endpoint
  COSMOS_KEY: '' // empty = managed identity (the account has key auth disabled)
  COSMOS_DATABASE_ID: cosmos.outputs.databaseName
  COSMOS_CONTAINER_ID: 'models' // container ids: modules/cosmos.bicep
  COSMOS_PROJECTS_CONTAINER_ID: 'projects'
  COSMOS_USAGE_CONTAINER_ID: 'usage-by-day'
  COSMOS_LIMITS_CONTAINER_ID: 'limits'
  USAGE_RETENTION_DAYS: string(usageRetentionDays)
  COSMOS_RESPONSES_CONTAINER_ID: 'responses'
  RESPONSES_RETENTION_DAYS: string(responsesRetentionDays)
  COSMOS_VERIFY_TLS: 'true'
  KEY_VAULT_URL: keyVault.outputs.uri
  KEY_VAULT_VERIFY_CHALLENGE_RESOURCE: 'true'
  CATALOG_TTL_SECONDS: '60'
  SECRET_TTL_SECONDS: '300'
  STORE_TIMEOUT_SECONDS: '5'
  STORE_STALE_SECONDS: '900'
  MAX_REQUEST_BYTES: '26214400'
  REQUEST_TIMEOUT_SECONDS: '230' // Azure's front end ends responses at about 230 s
  STREAM_FIRST_BYTE_TIMEOUT_SECONDS: '60'
  UPSTREAM_CONNECT_SECONDS: '5' // per deployment attempt: then the next deployment or fallback
  UPSTREAM_FIRST_BYTE_SECONDS: '120'
  // With API Management, Key Vault secrets the app reads itself (shared/gate.py;
  // a platform Key Vault reference would not resolve once the vault is
  // network-restricted). Without, empty, the gate is open.
  APIM_SHARED_SECRET: enableApiManagement ? '$${keyVault.outputs.apimSharedSecretName}' : ''
  APIM_SHARED_SECRET_PREVIOUS: enableApiManagement ? '$${keyVault.outputs.apimSharedSecretPreviousName}' : ''
  // Local-file stores; unused while COSMOS_URL is set.
  MODELS_FILE: 'models.json'
  PROJECTS_FILE: 'projects.json'
  USAGE_FILE: 'usage.jsonl'
  RESPONSES_FILE: 'responses.jsonl'
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    gatewaySettings: gatewaySettings
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    alwaysReadyInstances: alwaysReadyInstances
  }
  // Roles first: the app must not start before its identity can read storage, Cosmos and secrets.
  dependsOn: [
    rbac
    openAiAccess
  ]
}

module apim 'modules/apim.bicep' = if (enableApiManagement) {
  name: 'apim'
  params: {
    name: 'apim-${resourceToken}'
    location: location
    tags: tags
    skuName: apimSku
    publisherEmail: apimPublisherEmail
    publisherName: apimPublisherName
    functionAppHostName: functionApp.outputs.hostName
    tokensPerMinute: apimTokensPerMinute
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultName: keyVault.outputs.name
    sharedSecretName: keyVault.outputs.apimSharedSecretName
    sharedSecretVersionUri: keyVault.outputs.apimSharedSecretVersionUri
    restore: apimRestore
  }
}

// Outputs become azd environment values (`azd env get-value NAME`).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output GATEWAY_URL string = 'https://${functionApp.outputs.hostName}'
output APIM_NAME string = enableApiManagement ? apim.outputs.name : ''
output APIM_GATEWAY_URL string = enableApiManagement ? apim.outputs.gatewayUrl : ''
output APIM_DEFAULT_SUBSCRIPTION string = enableApiManagement ? apim.outputs.defaultSubscriptionName : ''
output COSMOS_URL string = cosmos.outputs.endpoint
output COSMOS_ACCOUNT_NAME string = cosmos.outputs.name
output COSMOS_DATABASE_ID string = cosmos.outputs.databaseName
output KEY_VAULT_URL string = keyVault.outputs.uri
output KEY_VAULT_NAME string = keyVault.outputs.name
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString

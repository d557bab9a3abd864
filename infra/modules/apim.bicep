// Optional API Management in front of the gateway: APIM subscription keys,
// a token-per-minute limit per subscription, and token metrics. It adds the
// shared secret (a Key Vault named value) to every request it forwards; the
// app refuses requests without it (shared/gate.py), so APIM cannot be walked
// around by calling the Function App directly.
//
// Tier: BasicV2 or StandardV2. The v2 gateways keep long-running connections
// open and pass SSE streams through unbuffered, support the token-limit and
// token-metric policies (apim-llm-policy.xml), and deploy in minutes. The Consumption
// tier is excluded: it has no token-limit policy and its shared gateway is not
// meant for minutes-long streaming responses. Classic Developer/Basic/Standard
// also work but take 30-45 minutes to create.

param name string
param location string
param tags object = {}

@allowed([
  'BasicV2'
  'StandardV2'
])
param skuName string = 'BasicV2'

param publisherEmail string
param publisherName string

@description('Host name of the Function App (no scheme).')
param functionAppHostName string

@description('Tokens per minute allowed to each APIM subscription.')
@minValue(1)
param tokensPerMinute int

param applicationInsightsName string
param applicationInsightsConnectionString string

@description('Key Vault that holds the shared secret, the secret\'s name and the URI of its current version (keyvault.bicep).')
param keyVaultName string
param sharedSecretName string
param sharedSecretVersionUri string

@description('Restore the soft-deleted instance of this name (left by `azd down` without --purge) instead of creating one. API Management then ignores the other service properties.')
param restore bool = false

// "name METHOD /path" for every route of function_app.py (tests/test_infra.py
// checks the two lists agree). APIM answers 404 for anything not listed, and
// matches the method exactly: each GET route has its HEAD operation too.
var operations = [
  'health GET /health'
  'health-head HEAD /health'
  'list-models GET /v1/models'
  'list-models-head HEAD /v1/models'
  'get-model GET /v1/models/{model_id}'
  'get-model-head HEAD /v1/models/{model_id}'
  'chat-completions POST /v1/chat/completions'
  'completions POST /v1/completions'
  'responses POST /v1/responses'
  'get-response GET /v1/responses/{response_id}'
  'get-response-head HEAD /v1/responses/{response_id}'
  'delete-response DELETE /v1/responses/{response_id}'
  'response-input-items GET /v1/responses/{response_id}/input_items'
  'response-input-items-head HEAD /v1/responses/{response_id}/input_items'
  'embeddings POST /v1/embeddings'
  'image-generations POST /v1/images/generations'
  'audio-speech POST /v1/audio/speech'
  'audio-transcriptions POST /v1/audio/transcriptions'
  'audio-translations POST /v1/audio/translations'
  'own-usage GET /v1/usage'
  'own-usage-head HEAD /v1/usage'
  'own-limits GET /v1/limits'
  'own-limits-head HEAD /v1/limits'
  'admin-get-limits GET /v1/admin/projects/{project_id}/limits'
  'admin-get-limits-head HEAD /v1/admin/projects/{project_id}/limits'
  'admin-put-limits PUT /v1/admin/projects/{project_id}/limits'
  'admin-delete-limits DELETE /v1/admin/projects/{project_id}/limits'
  'admin-usage GET /v1/admin/usage'
  'admin-usage-head HEAD /v1/admin/usage'
  'admin-list-models GET /v1/admin/models'
  'admin-list-models-head HEAD /v1/admin/models'
  'admin-get-model GET /v1/admin/models/{model_id}'
  'admin-get-model-head HEAD /v1/admin/models/{model_id}'
  'admin-put-model PUT /v1/admin/models/{model_id}'
  'admin-delete-model DELETE /v1/admin/models/{model_id}'
  // Azure OpenAI's paths (openai.AzureOpenAI clients) and Azure's v1 paths.
  'azure-chat-completions POST /openai/deployments/{model}/chat/completions'
  'azure-completions POST /openai/deployments/{model}/completions'
  'azure-embeddings POST /openai/deployments/{model}/embeddings'
  'azure-image-generations POST /openai/deployments/{model}/images/generations'
  'azure-audio-speech POST /openai/deployments/{model}/audio/speech'
  'azure-audio-transcriptions POST /openai/deployments/{model}/audio/transcriptions'
  'azure-audio-translations POST /openai/deployments/{model}/audio/translations'
  'azure-responses POST /openai/responses'
  'azure-get-response GET /openai/responses/{response_id}'
  'azure-get-response-head HEAD /openai/responses/{response_id}'
  'azure-delete-response DELETE /openai/responses/{response_id}'
  'azure-response-input-items GET /openai/responses/{response_id}/input_items'
  'azure-response-input-items-head HEAD /openai/responses/{response_id}/input_items'
  'azure-list-models GET /openai/models'
  'azure-list-models-head HEAD /openai/models'
  'azure-get-model GET /openai/models/{model_id}'
  'azure-get-model-head HEAD /openai/models/{model_id}'
  'azure-v1-chat-completions POST /openai/v1/chat/completions'
  'azure-v1-completions POST /openai/v1/completions'
  'azure-v1-embeddings POST /openai/v1/embeddings'
  'azure-v1-image-generations POST /openai/v1/images/generations'
  'azure-v1-audio-speech POST /openai/v1/audio/speech'
  'azure-v1-audio-transcriptions POST /openai/v1/audio/transcriptions'
  'azure-v1-audio-translations POST /openai/v1/audio/translations'
  'azure-v1-responses POST /openai/v1/responses'
  'azure-v1-get-response GET /openai/v1/responses/{response_id}'
  'azure-v1-get-response-head HEAD /openai/v1/responses/{response_id}'
  'azure-v1-delete-response DELETE /openai/v1/responses/{response_id}'
  'azure-v1-response-input-items GET /openai/v1/responses/{response_id}/input_items'
  'azure-v1-response-input-items-head HEAD /openai/v1/responses/{response_id}/input_items'
  'azure-v1-list-models GET /openai/v1/models'
  'azure-v1-list-models-head HEAD /openai/v1/models'
  'azure-v1-get-model GET /openai/v1/models/{model_id}'
  'azure-v1-get-model-head HEAD /openai/v1/models/{model_id}'
]

// The operations that call a language model and return token usage: only
// these get the token limit and token metrics (apim-llm-policy.xml). Health,
// model lists, admin, usage reports, images, speech (binary) and transcription
// (multipart) have no tokens to count. tests/test_infra.py checks that every
// chat completions, legacy completions, responses and embeddings route,
// whatever its path shape, is listed here and nothing else is.
var tokenMeteredOperations = [
  'chat-completions'
  'completions'
  'responses'
  'embeddings'
  'azure-chat-completions'
  'azure-completions'
  'azure-responses'
  'azure-embeddings'
  'azure-v1-chat-completions'
  'azure-v1-completions'
  'azure-v1-responses'
  'azure-v1-embeddings'
]

var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

// The identity API Management reads the shared secret with. User-assigned, so
// it and its role exist while the (slow) APIM service is still being created:
// the Key Vault named value below needs the role in place when it is created.
resource secretReader 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${name}'
  location: location
  tags: tags
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource sharedSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: sharedSecretName
}

// Key Vault Secrets User on this one secret only, not on the vault.
resource sharedSecretAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(sharedSecret.id, secretReader.id, keyVaultSecretsUser)
  scope: sharedSecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: secretReader.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource apim 'Microsoft.ApiManagement/service@2024-05-01' = {
  //checkov:skip=CKV_AZURE_107: APIM is the public entry point for the gateway's clients; VNet injection needs the Premium (v2) tiers and a network design this template does not impose.
  //checkov:skip=CKV_AZURE_174: same as CKV_AZURE_107: clients reach the gateway through APIM's public endpoint, with subscription keys and project keys.
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    capacity: 1
  }
  identity: {
    // System-assigned: telemetry to Application Insights without keys.
    // User-assigned: reads the shared secret from Key Vault.
    type: 'SystemAssigned, UserAssigned'
    userAssignedIdentities: {
      '${secretReader.id}': {}
    }
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
    restore: restore
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// This role assignment lives here, not in rbac.bicep: APIM's identity exists
// only once the service does, which is after the Function App.
resource apimTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, apim.id, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: apim.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource logger 'Microsoft.ApiManagement/service/loggers@2024-05-01' = {
  parent: apim
  name: 'appinsights'
  properties: {
    loggerType: 'applicationInsights'
    resourceId: applicationInsights.id
    credentials: {
      connectionString: applicationInsightsConnectionString
      identityClientId: 'systemAssigned'
    }
  }
  dependsOn: [
    apimTelemetry
  ]
}

resource tokensPerMinuteValue 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = {
  parent: apim
  name: 'llm-tokens-per-minute'
  properties: {
    displayName: 'llm-tokens-per-minute'
    value: string(tokensPerMinute)
  }
}

// The shared secret, read from Key Vault: the version that was current at this
// provision. Pinned, not versionless: API Management must not switch to a
// rotated secret on its own (it refreshes versionless ones every four hours)
// before every app instance accepts it; it switches at the next provision.
resource sharedSecretValue 'Microsoft.ApiManagement/service/namedValues@2024-05-01' = {
  parent: apim
  name: 'apim-shared-secret'
  properties: {
    displayName: 'apim-shared-secret'
    secret: true
    keyVault: {
      secretIdentifier: sharedSecretVersionUri
      identityClientId: secretReader.properties.clientId
    }
  }
  dependsOn: [
    sharedSecretAccess
  ]
}

resource api 'Microsoft.ApiManagement/service/apis@2024-05-01' = {
  parent: apim
  name: 'llm-gateway'
  properties: {
    displayName: 'LLM gateway'
    description: 'OpenAI-compatible LLM gateway (Azure Functions).'
    path: '' // clients use base_url https://<apim>.azure-api.net/v1, as with the app itself
    protocols: [
      'https'
    ]
    serviceUrl: 'https://${functionAppHostName}'
    subscriptionRequired: true
    // The subscription key has its own header, so Authorization stays free for the gateway key.
    subscriptionKeyParameterNames: {
      header: 'Ocp-Apim-Subscription-Key'
      query: 'subscription-key'
    }
  }
}

resource apiOperations 'Microsoft.ApiManagement/service/apis/operations@2024-05-01' = [for operation in operations: {
  parent: api
  name: split(operation, ' ')[0]
  properties: {
    displayName: split(operation, ' ')[0]
    method: split(operation, ' ')[1]
    urlTemplate: split(operation, ' ')[2]
    // The gateway's path parameters: {model_id}, and {model} (an Azure deployment path's model).
    templateParameters: contains(operation, '{model_id}') ? [
      {
        name: 'model_id'
        type: 'string'
        required: true
      }
    ] : contains(operation, '{model}') ? [
      {
        name: 'model'
        type: 'string'
        required: true
      }
    ] : []
  }
}]

// Every operation: the shared secret, and streams passed through unbuffered.
resource apiPolicy 'Microsoft.ApiManagement/service/apis/policies@2024-05-01' = {
  parent: api
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: loadTextContent('apim-policy.xml')
  }
  dependsOn: [
    sharedSecretValue
  ]
}

// The language-model operations: token limit and token metrics on top.
resource tokenPolicies 'Microsoft.ApiManagement/service/apis/operations/policies@2024-05-01' = [for (operation, i) in operations: if (contains(tokenMeteredOperations, split(operation, ' ')[0])) {
  parent: apiOperations[i]
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: loadTextContent('apim-llm-policy.xml')
  }
  dependsOn: [
    tokensPerMinuteValue
  ]
}]

// Request logs and the token metrics of azure-openai-emit-token-metric ("metrics: true").
// No body bytes are logged: logging a body would make APIM buffer it.
resource apiDiagnostics 'Microsoft.ApiManagement/service/apis/diagnostics@2024-05-01' = {
  parent: api
  name: 'applicationinsights'
  properties: {
    loggerId: logger.id
    alwaysLog: 'allErrors'
    metrics: true
    sampling: {
      samplingType: 'fixed'
      percentage: 100
    }
    frontend: {
      request: {
        body: {
          bytes: 0
        }
      }
      response: {
        body: {
          bytes: 0
        }
      }
    }
    backend: {
      request: {
        body: {
          bytes: 0
        }
      }
      response: {
        body: {
          bytes: 0
        }
      }
    }
  }
}

// A product to hand out subscriptions (one per team or application).
resource product 'Microsoft.ApiManagement/service/products@2024-05-01' = {
  parent: apim
  name: 'llm-gateway'
  properties: {
    displayName: 'LLM gateway'
    description: 'Access to the LLM gateway. Each subscription has its own token-per-minute budget.'
    subscriptionRequired: true
    approvalRequired: false
    state: 'published'
  }
}

resource productApi 'Microsoft.ApiManagement/service/products/apis@2024-05-01' = {
  parent: product
  name: api.name
}

// A first subscription, so the gateway can be called through APIM right away.
resource defaultSubscription 'Microsoft.ApiManagement/service/subscriptions@2024-05-01' = {
  parent: apim
  name: 'llm-gateway-default'
  properties: {
    displayName: 'LLM gateway (default)'
    scope: '/products/${product.name}'
    state: 'active'
  }
}

output name string = apim.name
output gatewayUrl string = apim.properties.gatewayUrl
output defaultSubscriptionName string = defaultSubscription.name

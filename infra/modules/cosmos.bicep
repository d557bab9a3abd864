// Cosmos DB (NoSQL): account, database and the gateway's containers.
// Key auth is disabled: the app and admins use Entra ID with the data-plane
// role assigned in rbac.bicep.

param name string
param location string
param tags object = {}
param databaseName string

@description('Serverless (pay per request). false = provisioned autoscale throughput shared by the database.')
param serverless bool = true

@description('Autoscale max RU/s shared by all containers when serverless is false.')
@minValue(1000)
param autoscaleMaxThroughput int = 1000

@description('Days Cosmos keeps each usage record (default TTL of the usage container). 0 = forever.')
@minValue(0)
param usageRetentionDays int = 0

@description('Days Cosmos keeps each stored response (default TTL of the responses container). 0 = forever.')
@minValue(0)
param responsesRetentionDays int = 30

// The usage container's indexing policy: only what the report query filters on
// (shared/usage.py USAGE_INDEXING_POLICY; tests/test_infra.py checks).
var usageIndexingPolicy = {
  indexingMode: 'consistent'
  automatic: true
  includedPaths: [
    {
      path: '/partition/?'
    }
    {
      path: '/timestamp/?'
    }
  ]
  excludedPaths: [
    {
      path: '/*'
    }
    {
      path: '/"_etag"/?'
    }
  ]
}

// The responses container is only read by response id: nothing else is indexed
// (shared/stored_responses.py RESPONSES_INDEXING_POLICY).
var responsesIndexingPolicy = {
  indexingMode: 'consistent'
  automatic: true
  includedPaths: [
    {
      path: '/response_id/?'
    }
  ]
  excludedPaths: [
    {
      path: '/*'
    }
  ]
}

// The containers the gateway reads and writes, with their partition keys.
// Names and keys must match shared/settings.py COSMOS_CONTAINERS (tests/test_infra.py checks).
var containers = [
  {
    name: 'models' // model catalog (COSMOS_CONTAINER_ID)
    partitionKey: '/id'
    settings: {}
  }
  {
    name: 'projects' // projects and API key hashes (COSMOS_PROJECTS_CONTAINER_ID)
    partitionKey: '/id'
    settings: {}
  }
  {
    // One record per call (COSMOS_USAGE_CONTAINER_ID), partitioned by project and UTC day
    // ('<project>|YYYY-MM-DD'), so no logical partition outgrows Cosmos's 20 GB. It replaces
    // the former 'usage' container (partition key '/project'), which a redeploy leaves as it was.
    name: 'usage-by-day'
    partitionKey: '/partition'
    settings: union({ indexingPolicy: usageIndexingPolicy }, usageRetentionDays > 0 ? { defaultTtl: usageRetentionDays * 86400 } : {})
  }
  {
    // Budget and rate limit counters (COSMOS_LIMITS_CONTAINER_ID): one document per project or key,
    // limit and window, each its own partition; TTL on without a default: each document carries its
    // own `ttl` and is gone a day after its window.
    name: 'limits'
    partitionKey: '/id'
    settings: { defaultTtl: -1 }
  }
  {
    // Stored responses (COSMOS_RESPONSES_CONTAINER_ID): a response and the chunks of a large one
    // share the response's id as partition key, so each logical partition holds one response;
    // read by a query scoped to that partition: only the response id is indexed.
    name: 'responses'
    partitionKey: '/response_id'
    settings: union({ indexingPolicy: responsesIndexingPolicy }, responsesRetentionDays > 0 ? { defaultTtl: responsesRetentionDays * 86400 } : {})
  }
]

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  //checkov:skip=CKV_AZURE_101: the Flex Consumption app (no VNet integration here) and the admin CLI reach Cosmos over its public endpoint; key auth is disabled, so every request needs an Entra ID identity with the data-plane role.
  //checkov:skip=CKV_AZURE_99: same as CKV_AZURE_101: no IP rules, as Flex Consumption outbound IPs are not fixed.
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    capabilities: serverless ? [
      {
        name: 'EnableServerless'
      }
    ] : []
    disableLocalAuth: true // no account keys: Entra ID only
    disableKeyBasedMetadataWriteAccess: true // databases and containers change only through ARM (this template)
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
    options: serverless ? {} : {
      autoscaleSettings: {
        maxThroughput: autoscaleMaxThroughput
      }
    }
  }
}

resource container 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [for c in containers: {
  parent: database
  name: c.name
  properties: {
    resource: union({
      id: c.name
      partitionKey: {
        paths: [
          c.partitionKey
        ]
        kind: 'Hash'
        version: 2
      }
    }, c.settings)
  }
}]

output name string = account.name
output id string = account.id
output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name

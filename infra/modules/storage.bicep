// Storage for the Functions host (AzureWebJobsStorage) and the Flex
// Consumption deployment package. Shared keys are disabled: the app reaches
// it with its managed identity only.

param name string
param location string
param tags object = {}
@description('Blob container that holds the deployment package (Flex Consumption).')
param deploymentContainerName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches its storage over the public endpoint from changing outbound IPs, so the firewall must allow it; data access still needs the app's Entra ID identity (shared keys are off).
  //checkov:skip=CKV_AZURE_59: same as CKV_AZURE_35: the public endpoint stays reachable, every request needs Entra ID RBAC. Use VNet integration with private endpoints to close it.
  //checkov:skip=CKV_AZURE_206: LRS is enough: the account holds only host state and the deployment package, both recreated by `azd deploy`.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity-based access only
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobServices 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobServices
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob

// Key Vault for provider secrets referenced from the catalog as "$NAME"
// (secret NAME with "_" written as "-"). RBAC mode: access is granted with
// Azure roles in rbac.bicep, never with access policies.

param name string
param location string
param tags object = {}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109: the Flex Consumption app (no VNet integration here) reads secrets over the public endpoint from changing outbound IPs, and Functions are not a trusted service for the firewall bypass; RBAC (Key Vault Secrets User) guards every read.
  //checkov:skip=CKV_AZURE_189: same as CKV_AZURE_109.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri

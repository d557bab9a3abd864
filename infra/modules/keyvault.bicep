// Key Vault for provider secrets referenced from the catalog as "$NAME"
// (secret NAME with "_" written as "-"). RBAC mode: access is granted with
// Azure roles in rbac.bicep, never with access policies.

param name string
param location string
param tags object = {}

@description('Purge protection (main.bicep: on for production environments, off for development ones). On, a deleted vault cannot be purged before its 90-day retention ends and its name stays taken; once on, it cannot be turned off.')
param enablePurgeProtection bool

@secure()
@description('The first value of the secret API Management adds to every request and the app checks when API Management is on (shared/gate.py). Written only when the secret does not exist.')
param apimSharedSecret string

@description('The secret exists already: leave it alone (main.bicep, infra/hooks/preprovision.py).')
param apimSharedSecretExists bool

// The Key Vault secrets of the shared secret: the one API Management sends,
// and the previous one, which the app also accepts during a rotation (README,
// "Rotating the shared secret"; never created here).
var apimSharedSecretName = 'apim-shared-secret'
var apimSharedSecretPreviousName = 'apim-shared-secret-previous'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109: the Flex Consumption app (no VNet integration here) reads secrets over the public endpoint from changing outbound IPs, and Functions are not a trusted service for the firewall bypass; RBAC (Key Vault Secrets User) guards every read.
  //checkov:skip=CKV_AZURE_189: same as CKV_AZURE_109.
  //checkov:skip=CKV_AZURE_110: purge protection is the enablePurgeProtection parameter: on for production environments (main.bicep), off for development ones so that `azd down --purge` frees the name for the next `azd up`.
  //checkov:skip=CKV_AZURE_42: soft delete is always on; purge protection follows CKV_AZURE_110's parameter.
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
    enablePurgeProtection: enablePurgeProtection ? true : null // Key Vault rejects false: off means absent
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// Read by API Management (a Key Vault named value) and by the app (its own Key
// Vault client: APIM_SHARED_SECRET is "$apim-shared-secret") when API
// Management is on; kept either way, so turning API Management on later needs
// nothing else. Created once, on the first provision: Key Vault is its home,
// and a provision from another machine (whose azd generated another
// apimSharedSecret) leaves it as it is.
resource apimShared 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!apimSharedSecretExists) {
  //checkov:skip=CKV_AZURE_41: an expiry date would stop API Management and the app from reading the secret at that moment and take the gateway down; it is rotated by hand (README, "Rotating the shared secret").
  //checkov:skip=CKV_AZURE_114: contentType is set below; checkov does not read the properties of a conditional (`= if (...)`) resource.
  parent: vault
  name: apimSharedSecretName
  properties: {
    value: apimSharedSecret
    contentType: 'text/plain'
  }
}

resource existingApimShared 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: apimSharedSecretName
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
output apimSharedSecretName string = apimSharedSecretName
output apimSharedSecretPreviousName string = apimSharedSecretPreviousName
// The version that is current now. API Management is pinned to it, so it
// switches to a rotated secret only at the next provision, once every app
// instance knows the new value (README, "Rotating the shared secret").
output apimSharedSecretVersionUri string = apimSharedSecretExists ? existingApimShared.properties.secretUriWithVersion : apimShared.properties.secretUriWithVersion

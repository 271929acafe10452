// Key Vault for the CRM credential and the webhook key. Azure RBAC (no access policies), purge
// protection on, soft delete 90 days. The app reads the secrets through Key Vault references.
metadata description = 'Key Vault, RBAC authorization, purge protection.'

@description('Required. Vault name (3-24 characters).')
@minLength(3)
@maxLength(24)
param name string

@description('Optional. Location.')
param location string = resourceGroup().location

@description('Optional. Tags.')
param tags object = {}

@description('Required. Log Analytics workspace for the audit log.')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    //checkov:skip=CKV_AZURE_109:Key Vault references from a Function App without VNet integration, and the admin's az keyvault secret set, come over the public endpoint (App Service is not a trusted service for the vault firewall); access is Entra ID + RBAC only.
    //checkov:skip=CKV_AZURE_189:Same as CKV_AZURE_109: public network access is needed without VNet integration.
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enablePurgeProtection: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enabledForDeployment: false
    enabledForTemplateDeployment: false
    enabledForDiskEncryption: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// Who read which secret, when (AuditEvent), kept in Log Analytics.
resource auditLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

@description('The vault name.')
output name string = vault.name

@description('The vault resource id.')
output resourceId string = vault.id

@description('The vault URI (its DNS name in this cloud, ending in a slash).')
output uri string = vault.properties.vaultUri

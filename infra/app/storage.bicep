// Storage for the service: the state tables, the job queues, the Functions host's own blobs and
// the Flex Consumption deployment container. Entra ID only: no shared key, no SAS, no public blobs.
// A local module rather than AVM so that checkov (which cannot resolve registry modules) scans it.
metadata description = 'Storage account with the sync state tables, job queues and deployment container.'

@description('Required. Storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Optional. Location.')
param location string = resourceGroup().location

@description('Optional. Tags.')
param tags object = {}

@description('Optional. Redundancy. Geo-redundant by default (every region offers it); Standard_GZRS adds zone redundancy where the region has zones.')
@allowed([
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_GRS'

@description('Required. Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Required. Log Analytics workspace for the storage resource logs.')
param logAnalyticsWorkspaceId string

// The state tables (shared/state) and the job queues (functions/). Keep in step with the code.
var tableNames = [
  'SyncUsers'
  'SyncCursors'
  'SyncLeases'
  'SyncLinks'
  'SyncKeys'
  'SyncSubscriptions'
  'SyncIssues'
  'SyncDecisions'
]
var queueNames = [
  'sync-jobs'
  'sync-jobs-poison'
]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    //checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches its storage over the public endpoint and is not a trusted service for the storage firewall; access is Entra ID only (shared key off) and RBAC-scoped. For network isolation add VNet integration and private endpoints.
    //checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: the public endpoint stays reachable for the Function App; shared key and anonymous blob access are off.
    allowSharedKeyAccess: false // Entra ID only; the host uses AzureWebJobsStorage__credential=managedidentity
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
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
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [
  for tableName in tableNames: {
    parent: tableService
    name: tableName
  }
]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queueName in queueNames: {
    parent: queueService
    name: queueName
  }
]

// Resource logs of the data services: who read or wrote state, and failures (AllLogs).
resource tableLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: tableService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

resource queueLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

@description('The storage account name.')
output name string = account.name

@description('The storage account resource id.')
output resourceId string = account.id

@description('Blob endpoint (the account\'s blob service URI in this cloud, ending in a slash).')
output blobEndpoint string = account.properties.primaryEndpoints.blob

@description('Table endpoint.')
output tableEndpoint string = account.properties.primaryEndpoints.table

@description('Queue endpoint.')
output queueEndpoint string = account.properties.primaryEndpoints.queue

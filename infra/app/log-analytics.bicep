// Log Analytics workspace with local (shared key) auth off. A local module rather than AVM:
// avm/res/operational-insights/workspace 0.7.x does not expose features.disableLocalAuth.
metadata description = 'Log Analytics workspace, Entra-only access.'

@description('Required. Workspace name.')
param name string

@description('Optional. Location.')
param location string = resourceGroup().location

@description('Optional. Tags.')
param tags object = {}

@description('Optional. Days of retention.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      disableLocalAuth: true // agents and queries use Entra tokens, never the workspace keys
      enableLogAccessUsingOnlyResourcePermissions: true
    }
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

@description('The workspace name.')
output name string = workspace.name

@description('The workspace resource id.')
output resourceId string = workspace.id

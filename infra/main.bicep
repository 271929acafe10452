// Outlook <-> CRM sync: everything the service needs in one resource group.
// `azd up` deploys this file (azure.yaml); docs/deploy.md walks through it.
targetScope = 'subscription'

metadata description = 'Flex Consumption Function App (Python) with managed identity, identity-based storage, Key Vault and Application Insights.'

// ---------------------------------------------------------------------------------------------
// Parameters (azd maps environment values to them in main.parameters.json; defaults live here)
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Required. Name of the azd environment. Names the resource group and seeds resourceToken.')
param environmentName string

@minLength(1)
@description('Required. Azure region for every resource. It must offer Flex Consumption.')
@metadata({ azd: { type: 'location' } })
param location string

@description('Optional. Object id of the person or pipeline running azd (AZURE_PRINCIPAL_ID). It may write the Key Vault secrets and edit the SyncUsers table. Empty: no such access.')
param principalId string = ''

@description('Optional. Kind of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Optional. Python version of the Function App. Declared only here; CI and the README mirror it.')
@allowed([
  '3.11'
])
param runtimeVersion string = '3.11'

@description('Conditional. Base URL of the CRM API (CRM_BASE_URL). Required unless crmConnector is dataverse.')
param crmBaseUrl string = ''

@description('Optional. CRM connector (CRM_CONNECTOR).')
@allowed([
  'reference'
  'bottlecrm'
  'dataverse'
])
param crmConnector string = 'reference'

@description('Conditional. Dynamics 365 environment URL, https://<org>.crm.dynamics.com (DATAVERSE_URL). Required when crmConnector is dataverse.')
param dataverseUrl string = ''

@description('Optional. How the app signs in to Dataverse (DATAVERSE_AUTH_MODE): the managed identity as the application user, or an app registration that trusts it.')
@allowed([
  'managed-identity'
  'workload-identity'
])
param dataverseAuthMode string = 'managed-identity'

@description('Conditional. Client id of the app registration that is the Dataverse application user (DATAVERSE_CLIENT_ID). Needed when dataverseAuthMode is workload-identity.')
param dataverseClientId string = ''

@description('Optional. How the CRM credential is presented (CRM_AUTH_SCHEME).')
@allowed([
  'bearer'
  'api-key'
])
param crmAuthScheme string = 'bearer'

@description('Optional. The organisation\'s own mail domains, comma separated (ORG_DOMAINS).')
param orgDomains string = ''

@description('Optional. NCRONTAB of the safety-net sweep (SYNC_SCHEDULE).')
param syncSchedule string = '0 */5 * * * *'

@description('Optional. NCRONTAB of the Graph subscription upkeep (SUBSCRIPTION_SCHEDULE).')
param subscriptionSchedule string = '0 */30 * * * *'

@description('Optional. Longest journal body before the cut marker (JOURNAL_BODY_MAX_CHARS).')
@minValue(200)
param journalBodyMaxChars int = 20000

@description('Optional. Create the Graph app registration, its service principal and the federated credential that trusts the managed identity in this deployment. Needs Entra rights (Cloud Application Administrator; Privileged Role Administrator too when graphPermissionScope is tenant). False: an Entra admin runs scripts/graph-app.sh and you set graphClientId.')
param manageGraphApp bool = false

@description('Conditional. Needed when manageGraphApp is true: a random text of at least 16 characters, kept in the azd environment (GRAPH_APP_NAME_SUFFIX), that ends the app registration\'s uniqueName. The deployment creates or updates the app of that uniqueName; a name derived only from the subscription and environment could be registered first by any tenant member and then be adopted, permissions and trust included.')
@secure()
param graphAppNameSuffix string = ''

@description('Conditional. Client id of an app registration created outside this deployment (scripts/graph-app.sh). Needed when manageGraphApp is false; empty on the first provision.')
param graphClientId string = ''

@description('Optional. Where the Graph application permissions apply. mailbox-group: no tenant-wide grant; Exchange Online RBAC for Applications grants them for one mail-enabled group (scripts/scope-mailboxes.ps1). tenant: admin consent for every mailbox in the tenant.')
@allowed([
  'mailbox-group'
  'tenant'
])
param graphPermissionScope string = 'mailbox-group'

// The deployment flags: each Graph permission beyond Mail.Read is asked for only behind its flag
// (infra/graph-permissions.json). The app is told the same flags, so a user row asking for a stream
// the deployment has no permission for gets a warning instead of a Graph 403 on every run.
@description('Optional. True when contacts are synced (the SyncUsers column Contacts): asks for Contacts.ReadWrite.')
param contactsSync bool = false

@description('Optional. True when meetings are synced to CRM appointments (the SyncUsers column Calendar): asks for Calendars.Read.')
param calendarSync bool = false

@description('Optional. True when CRM-to-Outlook appointment push is enabled: asks for Calendars.ReadWrite instead of Calendars.Read (and syncs meetings too).')
param calendarWriteBack bool = false

@description('Optional. True when To Do tasks are synced (the SyncUsers column Tasks): asks for Tasks.ReadWrite.All, which Exchange cannot scope to a mailbox group, so it reaches every user\'s tasks in the tenant.')
param tasksSync bool = false

@description('Optional. Changes the Key Vault name. The vault is purge protected: after azd down its name stays taken for 90 days, so an azd up of the same environment within that time needs a salt (any short text) or the old vault recovered first (docs/deploy.md, "Remove").')
@maxLength(16)
param keyVaultNameSalt string = ''

@description('Optional. Client id of the Entra app registration admins sign in to for the admin API and status page (app role CrmSync.Admin; docs/deploy.md). Empty: the admin API stays closed in Azure (crmsync still works).')
param adminSignInClientId string = ''

@description('Optional. Always-ready instances for the HTTP functions, so the Graph notification endpoint answers without a cold start.')
@minValue(1)
param alwaysReadyHttpInstances int = 1

@description('Optional. Upper bound of Flex Consumption instances (the platform accepts 1 to 1000).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var serviceName = 'api' // must match the service name in azure.yaml
var functionAppName = '${abbrs.webSitesFunctions}crmsync-${resourceToken}'
var deploymentContainerName = 'app-package-${take(resourceToken, 20)}'
// Salted only when asked, so an existing deployment keeps its vault.
var keyVaultToken = empty(keyVaultNameSalt) ? resourceToken : toLower(uniqueString(resourceToken, keyVaultNameSalt))
var keyVaultName = '${abbrs.keyVaultVaults}${take(keyVaultToken, 21)}'

// Names of the Key Vault secrets the app settings reference. The values are written outside
// Bicep: the CRM credential by the admin (docs/deploy.md), the webhook key by the azd hook.
var crmSecretName = 'crm-api-token'
var webhookSecretName = 'webhook-key'
var logHashSecretName = 'log-hash-key' // written once by the admin (docs/deploy.md, step 3)

// The Graph client id comes from this deployment (manageGraphApp) or from the admin. It may be
// empty on the very first provision: the app registration's federated credential needs the managed
// identity, which that provision creates. Until it is set, the app reports
// 'GRAPH_CLIENT_ID is required' on startup (docs/deploy.md §4).
var effectiveGraphClientId = manageGraphApp ? graphApp!.outputs.appId : graphClientId

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// ---------------------------------------------------------------------------------------------
// Identity: one user-assigned managed identity for storage, Key Vault, App Insights and Graph
// ---------------------------------------------------------------------------------------------

module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}crmsync-${resourceToken}'
    location: location
    tags: tags
    enableTelemetry: false // no AVM usage telemetry deployment
  }
}

// ---------------------------------------------------------------------------------------------
// Monitoring: Log Analytics + Application Insights, both with local (key) auth off
// ---------------------------------------------------------------------------------------------

module logAnalytics 'app/log-analytics.bicep' = {
  name: 'logAnalytics'
  scope: rg
  params: {
    name: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    location: location
    tags: tags
  }
}

module appInsights 'br/public:avm/res/insights/component:0.4.1' = {
  name: 'appInsights'
  scope: rg
  params: {
    name: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    disableLocalAuth: true // ingestion only with an Entra token (Monitoring Metrics Publisher)
    enableTelemetry: false // no AVM usage telemetry deployment
  }
}

// ---------------------------------------------------------------------------------------------
// State: storage account with the state tables, the job queues and the deployment container
// ---------------------------------------------------------------------------------------------

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
  }
}

// ---------------------------------------------------------------------------------------------
// Secrets: Key Vault (RBAC, purge protection) for the CRM credential and the webhook key
// ---------------------------------------------------------------------------------------------

module keyVault 'app/key-vault.bicep' = {
  name: 'keyVault'
  scope: rg
  params: {
    name: keyVaultName
    location: location
    tags: tags
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
  }
}

// ---------------------------------------------------------------------------------------------
// Compute: Flex Consumption plan + Function App
// ---------------------------------------------------------------------------------------------

module plan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'plan'
  scope: rg
  params: {
    name: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true // Linux
    enableTelemetry: false // no AVM usage telemetry deployment
  }
}

module functionApp 'app/function-app.bicep' = {
  name: 'functionApp'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: union(tags, { 'azd-service-name': serviceName })
    planId: plan.outputs.resourceId
    runtimeVersion: runtimeVersion
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: appInsights.outputs.connectionString
    keyVaultName: keyVault.outputs.name
    crmSecretName: crmSecretName
    webhookSecretName: webhookSecretName
    logHashSecretName: logHashSecretName
    adminSignInClientId: adminSignInClientId
    graphClientId: effectiveGraphClientId
    crmBaseUrl: crmBaseUrl
    crmConnector: crmConnector
    crmAuthScheme: crmAuthScheme
    dataverseUrl: dataverseUrl
    dataverseAuthMode: dataverseAuthMode
    dataverseClientId: dataverseClientId
    orgDomains: orgDomains
    syncSchedule: syncSchedule
    subscriptionSchedule: subscriptionSchedule
    journalBodyMaxChars: journalBodyMaxChars
    contactsSync: contactsSync
    calendarSync: calendarSync
    calendarWriteBack: calendarWriteBack
    tasksSync: tasksSync
    alwaysReadyHttpInstances: alwaysReadyHttpInstances
    maximumInstanceCount: maximumInstanceCount
    logAnalyticsWorkspaceId: logAnalytics.outputs.resourceId
  }
  dependsOn: [
    rbac // the host needs its storage and Key Vault roles before it starts
  ]
}

// ---------------------------------------------------------------------------------------------
// Every Azure role assignment, in one reviewable module
// ---------------------------------------------------------------------------------------------

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    identityPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: appInsights.outputs.name
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

// ---------------------------------------------------------------------------------------------
// Microsoft Graph: app registration trusting the managed identity (optional, needs Entra rights)
// ---------------------------------------------------------------------------------------------

module graphApp 'app/graph-app.bicep' = if (manageGraphApp) {
  name: 'graphApp'
  scope: rg
  params: {
    uniqueNamePrefix: 'crmsync-${resourceToken}'
    uniqueNameSuffix: graphAppNameSuffix
    displayName: 'Outlook CRM sync (${environmentName})'
    managedIdentityPrincipalId: identity.outputs.principalId
    grantTenantWide: graphPermissionScope == 'tenant'
    contactsSync: contactsSync
    calendarSync: calendarSync
    calendarWriteBack: calendarWriteBack
    tasksSync: tasksSync
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs (azd stores UPPER_SNAKE outputs in the environment; the hooks and docs use them)
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_URL string = functionApp.outputs.webhookBaseUrl
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_TABLES_ENDPOINT string = storage.outputs.tableEndpoint
output AZURE_QUEUES_ENDPOINT string = storage.outputs.queueEndpoint
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.uri
output AZURE_CRM_SECRET_NAME string = crmSecretName
output AZURE_WEBHOOK_SECRET_NAME string = webhookSecretName
output AZURE_LOG_HASH_SECRET_NAME string = logHashSecretName
output AZURE_MANAGED_IDENTITY_NAME string = identity.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output GRAPH_CLIENT_ID string = effectiveGraphClientId
output GRAPH_PERMISSION_SCOPE string = graphPermissionScope
output APPLICATIONINSIGHTS_NAME string = appInsights.outputs.name

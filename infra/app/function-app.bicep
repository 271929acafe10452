// The Function App on Flex Consumption: Python, one user-assigned identity for everything,
// identity-based storage connections, secrets as Key Vault references, an always-ready instance
// for the HTTP functions (the Graph notification endpoint must answer fast).
// A local module rather than avm/res/web/site so that checkov scans the site and so that the app
// settings below are the literal, reviewable list tests/infra compares with shared/config.py.
metadata description = 'Flex Consumption Function App with its app settings.'

@description('Required. Function App name.')
param name string

@description('Optional. Location.')
param location string = resourceGroup().location

@description('Optional. Tags; must carry azd-service-name.')
param tags object = {}

@description('Required. Flex Consumption plan resource id.')
param planId string

@description('Required. Python version (declared once in main.bicep).')
param runtimeVersion string

@description('Required. Resource id of the user-assigned managed identity.')
param identityId string

@description('Required. Client id of the user-assigned managed identity.')
param identityClientId string

@description('Required. Storage account holding state, queues, host blobs and the deployment container.')
param storageAccountName string

@description('Required. Deployment container in that account.')
param deploymentContainerName string

@description('Required. Application Insights connection string (not a secret: local auth is off).')
param appInsightsConnectionString string

@description('Required. Key Vault holding the secrets.')
param keyVaultName string

@description('Required. Secret name of the CRM credential.')
param crmSecretName string

@description('Required. Secret name of the webhook function key.')
param webhookSecretName string

@description('Required. Secret name of the key that keys the user tags in logs (LOG_HASH_KEY).')
param logHashSecretName string

@description('Optional. Client id of the Entra app registration admins sign in to (app role CrmSync.Admin; docs/deploy.md). Empty: App Service authentication stays off and the admin API answers 401.')
param adminSignInClientId string = ''

@description('Required. Client id of the Graph app registration (may be empty before it exists).')
param graphClientId string

@description('Optional. Microsoft Graph base URL.')
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

@description('Required. CRM API base URL.')
param crmBaseUrl string

@description('Required. CRM connector name.')
param crmConnector string

@description('Required. CRM auth scheme.')
param crmAuthScheme string

@description('Required. Dynamics 365 environment URL (empty unless the connector is dataverse).')
param dataverseUrl string

@description('Required. How the app signs in to Dataverse.')
param dataverseAuthMode string

@description('Required. Client id of the app registration that is the Dataverse application user (may be empty).')
param dataverseClientId string

@description('Required. Own mail domains, comma separated.')
param orgDomains string

@description('Required. NCRONTAB of the sweep.')
param syncSchedule string

@description('Required. NCRONTAB of the subscription upkeep.')
param subscriptionSchedule string

@description('Required. Longest journal body.')
param journalBodyMaxChars int

@description('Required. The deployment asks for Contacts.ReadWrite (CONTACTS_SYNC).')
param contactsSync bool

@description('Required. The deployment asks for Calendars.Read (CALENDAR_SYNC).')
param calendarSync bool

@description('Required. The deployment asks for Calendars.ReadWrite (CALENDAR_WRITE_BACK).')
param calendarWriteBack bool

@description('Required. The deployment asks for Tasks.ReadWrite.All (TASKS_SYNC).')
param tasksSync bool

@description('Required. Always-ready instances for the http group.')
param alwaysReadyHttpInstances int

@description('Required. Maximum instances.')
param maximumInstanceCount int

@description('Optional. Instance memory (MB).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Required. Log Analytics workspace for the platform logs.')
param logAnalyticsWorkspaceId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    //checkov:skip=CKV_AZURE_17:Microsoft Graph delivers change notifications without a client certificate, so the webhook endpoint cannot require one; each notification carries the function key and the subscription's clientState secret instead.
    //checkov:skip=CKV_AZURE_222:Graph posts change notifications from the internet, so the app keeps public network access; the webhook functions require their function key, the admin API an Entra sign-in with an app role.
    //checkov:skip=CKV_AZURE_212:siteConfig.numberOfWorkers belongs to dedicated App Service plans; on Flex Consumption the platform scales instances and functionAppConfig.scaleAndConcurrency.alwaysReady keeps the HTTP group warm.
    //checkov:skip=CKV_AZURE_78:siteConfig.ftpsState is rejected on Flex Consumption (ARM error 51021, in Microsoft's list of settings Flex does not support); FTP stays off through the ftp basicPublishingCredentialsPolicies below (allow false), and azd deploys with Entra credentials.
    //checkov:skip=CKV_AZURE_213:No App Service health check on this Flex Consumption app: the platform manages instances per trigger group; health is watched in Application Insights and the SyncUsers status columns.
    serverFarmId: planId
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityId // resolve @Microsoft.KeyVault(...) settings with the UAMI
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      // No ftpsState: Flex Consumption rejects it. FTP is off through ftpBasicAuth below.
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: [
          {
            name: 'http' // every HTTP-triggered function: the Graph webhook answers without a cold start
            instanceCount: alwaysReadyHttpInstances
          }
        ]
      }
      runtime: {
        name: 'python'
        version: runtimeVersion
      }
    }
  }
}

// Every app setting the code reads (shared/config.py SETTINGS) plus the platform's own.
// tests/infra/test_app_settings.py compares this list with SETTINGS both ways.
// Not set here, on purpose: GRAPH_CLIENT_CERTIFICATE_PATH, GRAPH_CLIENT_SECRET (other Graph auth
// modes), GRAPH_STATIC_TOKEN and DATAVERSE_STATIC_TOKEN (loopback stand-ins only), AzureWebJobsStorage (a connection string;
// shared key is off, the identity-based AzureWebJobsStorage__* family replaces it).
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  //checkov:skip=CKV_AZURE_13:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is the 'appsettings' name/value list, which has no such property (App Service authentication is the authsettingsV2 resource below).
  //checkov:skip=CKV_AZURE_63:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is the 'appsettings' name/value list, which has no such property.
  //checkov:skip=CKV_AZURE_65:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is the 'appsettings' name/value list, which has no such property.
  //checkov:skip=CKV_AZURE_66:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is the 'appsettings' name/value list, which has no such property.
  //checkov:skip=CKV_AZURE_80:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is the 'appsettings' name/value list, which has no such property (and this is a Python app, not .NET).
  //checkov:skip=CKV_AZURE_88:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is the 'appsettings' name/value list, which has no such property (and Flex Consumption does not use Azure Files).
  //checkov:skip=CKV_AZURE_222:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is the 'appsettings' name/value list, which has no such property; public access is set, and explained, on the site.
  properties: {
    // Functions platform: identity-based host storage and Entra-authenticated telemetry
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
    AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
    AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    // Microsoft Graph: workload identity federation (app registration trusting the UAMI)
    GRAPH_BASE_URL: graphBaseUrl
    GRAPH_AUTH_MODE: 'workload-identity'
    GRAPH_TENANT_ID: tenant().tenantId
    GRAPH_CLIENT_ID: graphClientId
    AZURE_CLIENT_ID: identityClientId
    // CRM
    CRM_CONNECTOR: crmConnector
    CRM_BASE_URL: crmBaseUrl
    CRM_AUTH_SCHEME: crmAuthScheme
    CRM_API_TOKEN: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${crmSecretName})'
    // Dynamics 365 (CRM_CONNECTOR=dataverse): no secret; the managed identity is the application user
    DATAVERSE_URL: dataverseUrl
    DATAVERSE_AUTH_MODE: dataverseAuthMode
    DATAVERSE_CLIENT_ID: dataverseClientId
    // Sync behaviour
    ORG_DOMAINS: orgDomains
    SYNC_SCHEDULE: syncSchedule
    SUBSCRIPTION_SCHEDULE: subscriptionSchedule
    JOURNAL_BODY_MAX_CHARS: string(journalBodyMaxChars)
    // The deployment flags: which Graph permissions the app registration was given
    CONTACTS_SYNC: contactsSync ? 'true' : 'false'
    CALENDAR_SYNC: calendarSync ? 'true' : 'false'
    CALENDAR_WRITE_BACK: calendarWriteBack ? 'true' : 'false'
    TASKS_SYNC: tasksSync ? 'true' : 'false'
    // Graph change notifications reach https://<host>/api/... with this function key
    WEBHOOK_BASE_URL: 'https://${site.properties.defaultHostName}/api'
    WEBHOOK_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${webhookSecretName})'
    // Logs name users by an HMAC of the UPN keyed with this secret
    LOG_HASH_KEY: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${logHashSecretName})'
  }
}

// Admin sign-in: App Service authentication with Entra ID in front of everything but the two paths
// Graph calls (they carry the webhook function key; Graph cannot sign in). App Service then sets
// WEBSITE_AUTH_ENABLED and the X-MS-CLIENT-PRINCIPAL header, and the app lets into /api/manage/*
// only a principal with the app role CrmSync.Admin (shared/admin_access.py).
resource adminSignIn 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(adminSignInClientId)) {
  parent: site
  name: 'authsettingsV2'
  //checkov:skip=CKV_AZURE_13:false positive: this resource is App Service authentication itself (authsettingsV2, platform.enabled); checkov looks for the classic siteAuthEnabled property on every Microsoft.Web/sites/config resource.
  //checkov:skip=CKV_AZURE_63:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is 'authsettingsV2', which has no such property.
  //checkov:skip=CKV_AZURE_65:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is 'authsettingsV2', which has no such property.
  //checkov:skip=CKV_AZURE_66:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is 'authsettingsV2', which has no such property.
  //checkov:skip=CKV_AZURE_80:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is 'authsettingsV2', which has no such property (and this is a Python app, not .NET).
  //checkov:skip=CKV_AZURE_88:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is 'authsettingsV2', which has no such property (and Flex Consumption does not use Azure Files).
  //checkov:skip=CKV_AZURE_222:false positive: checkov applies its site-config (web) checks to every Microsoft.Web/sites/config resource, and this one is 'authsettingsV2'; public access is set, and explained, on the site.
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      excludedPaths: [
        '/api/notifications'
        '/api/lifecycle'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: adminSignInClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            adminSignInClientId
            'api://${adminSignInClientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

// No FTP or SCM basic-auth publishing: azd deploys Flex apps with Entra credentials. This is what
// keeps FTP off on Flex Consumption (siteConfig.ftpsState is not accepted there).
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource platformLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
  }
}

@description('The Function App name.')
output name string = site.name

@description('The Function App resource id.')
output resourceId string = site.id

@description('Base URL of the HTTP functions (https://<default host name>/api).')
output webhookBaseUrl string = 'https://${site.properties.defaultHostName}/api'

// The Microsoft Graph side, with the Microsoft Graph Bicep extension (bicepconfig.json pins it):
// an app registration whose only credential is a federated identity credential trusting the Function
// App's user-assigned managed identity (workload identity federation: no secret, no certificate),
// its service principal and, only when asked, the tenant-wide grant of the application permissions.
// Deployed when main.bicep's manageGraphApp is true; scripts/graph-app.sh does the same with az.
extension microsoftGraphV1

metadata description = 'Graph app registration trusting the managed identity, with its Graph permissions.'

@description('Required. Start of the app registration\'s immutable unique name in the tenant.')
param uniqueNamePrefix string

@description('Required. A random text (GRAPH_APP_NAME_SUFFIX in the azd environment) that ends the unique name, so that no one can register an app of that name first and have this deployment adopt it, its permissions and its trust in the managed identity.')
@secure()
@minLength(16)
param uniqueNameSuffix string

@description('Required. Display name shown to admins.')
param displayName string

@description('Required. Principal (object) id of the user-assigned managed identity to trust.')
param managedIdentityPrincipalId string

@description('Required. True: grant the permissions tenant-wide (admin consent for every mailbox). False: grant nothing here; Exchange Online RBAC for Applications grants them for one mailbox group (scripts/scope-mailboxes.ps1).')
param grantTenantWide bool

@description('Required. True when contacts are synced (Contacts.ReadWrite).')
param contactsSync bool

@description('Required. True when meetings are synced (Calendars.Read).')
param calendarSync bool

@description('Required. True when CRM-to-Outlook appointment push is on (Calendars.ReadWrite instead of Calendars.Read).')
param calendarWriteBack bool

@description('Required. True when To Do tasks are synced (Tasks.ReadWrite.All, which Exchange cannot scope: it is granted tenant-wide).')
param tasksSync bool

var graphAppId = '00000003-0000-0000-c000-000000000000' // Microsoft Graph, the same in every tenant
// The 'when' cases of infra/graph-permissions.json this deployment's flags switch on.
var cases = union(
  ['always'],
  contactsSync ? ['contacts-sync'] : [],
  calendarSync && !calendarWriteBack ? ['calendar-read-only'] : [],
  calendarWriteBack ? ['calendar-write-back'] : [],
  tasksSync ? ['tasks-sync'] : []
)
var permissions = filter(loadJsonContent('../graph-permissions.json').permissions, p => contains(cases, p.when))

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: '${uniqueNamePrefix}-${uniqueNameSuffix}'
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  // Declares the permissions so reviewers (and the portal's consent page) see exactly what is asked.
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: [
        for permission in permissions: {
          id: filter(graph.appRoles, role => role.value == permission.name)[0].id
          type: 'Role'
        }
      ]
    }
  ]

  resource trustManagedIdentity 'federatedIdentityCredentials@v1.0' = {
    name: '${app.uniqueName}/function-app-identity'
    description: 'Tokens of the Function App\'s user-assigned managed identity act as this app\'s credential.'
    audiences: [
      'api://AzureADTokenExchange'
    ]
    issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
    subject: managedIdentityPrincipalId
  }
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: app.appId
}

// Tenant-wide admin consent, only in graphPermissionScope=tenant. Entra grants are additive with
// Exchange RBAC scopes: if they existed, the mailbox-group scoping would not restrict anything. A
// permission Exchange has no role for (Tasks.ReadWrite.All: To Do) is granted here in either scope.
resource tenantWideGrants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [
  for permission in filter(permissions, p => grantTenantWide || p.exchangeRole == null): {
    appRoleId: filter(graph.appRoles, role => role.value == permission.name)[0].id
    principalId: servicePrincipal.id
    resourceId: graph.id
  }
]

@description('Client (application) id: the GRAPH_CLIENT_ID app setting.')
output appId string = app.appId

@description('Object id of the app\'s service principal (for Exchange Online New-ServicePrincipal).')
output servicePrincipalId string = servicePrincipal.id

@description('The Graph application permissions this app declares.')
output permissions array = [for permission in permissions: permission.name]

<#
.SYNOPSIS
  Limits the sync app's Microsoft Graph access to the members of one mail-enabled group, with
  Exchange Online RBAC for Applications. Idempotent: run it again after changing the permissions.

.DESCRIPTION
  Application permissions granted in Entra ID (admin consent) reach EVERY mailbox in the tenant.
  Exchange Online RBAC for Applications grants the same permissions for a management scope instead:
  here, the mailboxes that are members of -MailboxGroup. The two are additive: while a tenant-wide
  Entra grant of, say, Mail.Read exists, the app still reads every mailbox, whatever the scope says.
  So keep GRAPH_PERMISSION_SCOPE=mailbox-group (no Entra grant is made) or remove existing grants
  with `scripts/graph-app.sh revoke-tenant-wide`. The script warns when it finds one.

  The permissions come from infra/graph-permissions.json, the same list Bicep and the README use.
  Changes can take up to two hours to apply (Exchange caches application permissions).

  Needs: PowerShell 7, the ExchangeOnlineManagement module (3.x), an Exchange Administrator
  (or Organization Management) sign-in, and the Az CLI signed in to the tenant for the warning check.

.EXAMPLE
  ./scripts/scope-mailboxes.ps1 -AppId <GRAPH_CLIENT_ID> -ServicePrincipalObjectId <enterprise app object id> `
      -MailboxGroup crm-sync-users@contoso.com -TestMailbox alice@contoso.com

.EXAMPLE
  # a deployment with CONTACTS_SYNC=true and CALENDAR_SYNC=true
  ./scripts/scope-mailboxes.ps1 -AppId <GRAPH_CLIENT_ID> -ServicePrincipalObjectId <enterprise app object id> `
      -MailboxGroup crm-sync-users@contoso.com -ContactsSync -CalendarSync
#>
[CmdletBinding(SupportsShouldProcess)]
param(
    [Parameter(Mandatory)] [string] $AppId,                     # GRAPH_CLIENT_ID (application / client id)
    [Parameter(Mandatory)] [string] $ServicePrincipalObjectId,  # object id of the enterprise application (service principal)
    [Parameter(Mandatory)] [string] $MailboxGroup,              # mail-enabled security group whose members are synced
    [string] $ScopeName = 'Outlook CRM sync mailboxes',
    [switch] $ContactsSync,                                     # Contacts.ReadWrite (CONTACTS_SYNC=true)
    [switch] $CalendarSync,                                     # Calendars.Read (CALENDAR_SYNC=true)
    [switch] $CalendarWriteBack,                                # Calendars.ReadWrite instead of Calendars.Read (CALENDAR_WRITE_BACK=true)
    [switch] $TasksSync,                                        # Tasks.ReadWrite.All (TASKS_SYNC=true): not scopable, see below
    [string] $TestMailbox                                       # a member mailbox to check afterwards
)
$ErrorActionPreference = 'Stop'

# The 'when' cases of infra/graph-permissions.json the deployment flags switch on (as in graph-app.bicep
# and scripts/graph-app.sh): pass the same switches as the deployment's CONTACTS_SYNC, CALENDAR_SYNC
# CALENDAR_WRITE_BACK and TASKS_SYNC.
$cases = @('always')
if ($ContactsSync) { $cases += 'contacts-sync' }
if ($CalendarSync -and -not $CalendarWriteBack) { $cases += 'calendar-read-only' }
if ($CalendarWriteBack) { $cases += 'calendar-write-back' }
if ($TasksSync) { $cases += 'tasks-sync' }
$permissionsFile = Join-Path $PSScriptRoot '..' 'infra' 'graph-permissions.json'
$permissions = (Get-Content -Raw $permissionsFile | ConvertFrom-Json).permissions |
    Where-Object { $cases -contains $_.when }

if (-not (Get-Command Get-ConnectionInformation -ErrorAction SilentlyContinue) -or -not (Get-ConnectionInformation)) {
    Import-Module ExchangeOnlineManagement
    Connect-ExchangeOnline -ShowBanner:$false
}

# 1. Exchange's pointer to the Entra service principal.
if (-not (Get-ServicePrincipal -Identity $AppId -ErrorAction SilentlyContinue)) {
    if ($PSCmdlet.ShouldProcess($AppId, 'New-ServicePrincipal')) {
        New-ServicePrincipal -AppId $AppId -ObjectId $ServicePrincipalObjectId -DisplayName "Outlook CRM sync ($AppId)" | Out-Null
        Write-Host "registered service principal $AppId in Exchange Online"
    }
}

# 2. The management scope: direct members of the group (nested groups are not expanded).
$group = Get-Recipient -Identity $MailboxGroup
$filter = "MemberOfGroup -eq '$($group.DistinguishedName)'"
$scope = Get-ManagementScope -Identity $ScopeName -ErrorAction SilentlyContinue
if (-not $scope) {
    if ($PSCmdlet.ShouldProcess($ScopeName, 'New-ManagementScope')) {
        New-ManagementScope -Name $ScopeName -RecipientRestrictionFilter $filter | Out-Null
        Write-Host "created management scope '$ScopeName' ($filter)"
    }
} elseif ($scope.RecipientFilter -ne $filter) {
    if ($PSCmdlet.ShouldProcess($ScopeName, 'Set-ManagementScope')) {
        Set-ManagementScope -Identity $ScopeName -RecipientRestrictionFilter $filter
        Write-Host "updated management scope '$ScopeName' ($filter)"
    }
}

# 3. One role assignment per permission, limited to the scope; remove the ones no longer asked for.
#    Exchange's RBAC for Applications has no role for To Do: Tasks.ReadWrite.All cannot be scoped.
foreach ($unscoped in $permissions | Where-Object { -not $_.exchangeRole }) {
    Write-Warning ("$($unscoped.name) has no Exchange role and cannot be limited to '$MailboxGroup': it is " +
        "granted tenant-wide in Entra (admin consent) and reaches every user in the tenant.")
}
$wanted = @($permissions | Where-Object { $_.exchangeRole } | ForEach-Object { $_.exchangeRole })
$existing = @(Get-ManagementRoleAssignment -RoleAssignee $AppId -ErrorAction SilentlyContinue)
foreach ($role in $wanted) {
    if (-not ($existing | Where-Object { $_.Role -eq $role -and $_.CustomResourceScope -eq $ScopeName })) {
        if ($PSCmdlet.ShouldProcess($role, 'New-ManagementRoleAssignment')) {
            New-ManagementRoleAssignment -App $AppId -Role $role -CustomResourceScope $ScopeName | Out-Null
            Write-Host "assigned '$role' for scope '$ScopeName'"
        }
    }
}
foreach ($assignment in $existing | Where-Object { $_.Role -like 'Application *' -and $wanted -notcontains $_.Role }) {
    if ($PSCmdlet.ShouldProcess($assignment.Name, 'Remove-ManagementRoleAssignment')) {
        Remove-ManagementRoleAssignment -Identity $assignment.Name -Confirm:$false
        Write-Host "removed '$($assignment.Role)' (no longer in infra/graph-permissions.json)"
    }
}

# 4. Warn while tenant-wide Entra grants exist: they would make the scope meaningless.
if (Get-Command az -ErrorAction SilentlyContinue) {
    $graphSp = az ad sp show --id 00000003-0000-0000-c000-000000000000 --query id -o tsv
    $unscopedRoles = @($permissions | Where-Object { -not $_.exchangeRole } | ForEach-Object {
        az ad sp show --id 00000003-0000-0000-c000-000000000000 --query "appRoles[?value=='$($_.name)'].id | [0]" -o tsv })
    $grants = @(az rest --method GET --url "https://graph.microsoft.com/v1.0/servicePrincipals/$ServicePrincipalObjectId/appRoleAssignments" `
        --query "value[?resourceId=='$graphSp'].appRoleId" -o tsv) | Where-Object { $unscopedRoles -notcontains $_ }
    if ($grants) {
        Write-Warning ("The app still holds tenant-wide Graph grants; they add to this scope and reach every mailbox. " +
            "Remove them: scripts/graph-app.sh revoke-tenant-wide")
    }
}

# 5. Check one mailbox (InScope should be True for a member, False for anyone else).
if ($TestMailbox) {
    Test-ServicePrincipalAuthorization -Identity $AppId -Resource $TestMailbox |
        Format-Table RoleName, GrantedPermissions, AllowedResourceScope, InScope
}

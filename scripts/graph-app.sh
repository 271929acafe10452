#!/usr/bin/env bash
# The Microsoft Graph app registration, with the Azure CLI, for tenants where the person running
# `azd up` may not create app registrations (otherwise set MANAGE_GRAPH_APP=true and Bicep does this).
# Run by an Entra admin after the first `azd provision`, in the repository, with the azd environment
# selected (or the AZURE_* values below exported).
#
#   scripts/graph-app.sh create              app registration + service principal + federated credential
#                                            trusting the Function App's managed identity; declares the
#                                            permissions of infra/graph-permissions.json; prints the
#                                            client id and stores it in the azd environment (GRAPH_CLIENT_ID)
#   scripts/graph-app.sh grant-tenant-wide   admin consent for EVERY mailbox in the tenant
#                                            (GRAPH_PERMISSION_SCOPE=tenant). Needs Privileged Role Administrator.
#   scripts/graph-app.sh revoke-tenant-wide  removes those grants again: required before scoping to a mailbox
#                                            group with Exchange Online RBAC (scripts/scope-mailboxes.ps1),
#                                            because Entra grants and Exchange scopes add up
#   scripts/graph-app.sh show                the app, its federated credential and its tenant-wide grants
#   scripts/graph-app.sh permissions         the Graph permissions the deployment flags ask for, one a line
#
# The app registration is only ever the one recorded in GRAPH_CLIENT_ID (the azd environment): it is
# never looked up by its display name, which any tenant member can give an app of their own. `create`
# without GRAPH_CLIENT_ID makes a new registration with a unique name and records its id at once.
# Deployment flags (azd environment values, default false): CONTACTS_SYNC=true asks for
# Contacts.ReadWrite, CALENDAR_SYNC=true for Calendars.Read, CALENDAR_WRITE_BACK=true for
# Calendars.ReadWrite instead of Calendars.Read, TASKS_SYNC=true for Tasks.ReadWrite.All (To Do), which
# Exchange cannot scope to a mailbox group: grant it tenant-wide (grant-tenant-wide), and know that it
# reaches every user's tasks in the tenant.
set -euo pipefail
cd "$(dirname "$0")/.."

GRAPH_APP_ID=00000003-0000-0000-c000-000000000000 # Microsoft Graph, the same in every tenant
GRAPH=https://graph.microsoft.com/v1.0

permissions() { # the Graph application permissions the deployment flags ask for, one per line
  python3 - <<'PY'
import json, os
def flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower() or "false"
    if value not in ("true", "false"):
        raise SystemExit(f"{name} must be true or false, got {value!r}")
    return value == "true"
contacts, calendar, write_back = flag("CONTACTS_SYNC"), flag("CALENDAR_SYNC"), flag("CALENDAR_WRITE_BACK")
tasks = flag("TASKS_SYNC")
cases = {"always"}
cases |= {"contacts-sync"} if contacts else set()
cases |= {"calendar-read-only"} if calendar and not write_back else set()
cases |= {"calendar-write-back"} if write_back else set()
cases |= {"tasks-sync"} if tasks else set()
for p in json.load(open("infra/graph-permissions.json"))["permissions"]:
    if p["when"] in cases:
        print(p["name"])
PY
}

if command -v azd >/dev/null 2>&1 && [ -z "${AZURE_MANAGED_IDENTITY_PRINCIPAL_ID:-}" ]; then
  eval "$(azd env get-values)"
fi
PERMISSIONS=$(permissions) # stops here on a bad flag value
if [ "${1:-}" = permissions ]; then # needs nothing from Azure
  echo "$PERMISSIONS"
  exit 0
fi
: "${AZURE_ENV_NAME:?select the azd environment (azd env select NAME) or export AZURE_ENV_NAME}"
: "${AZURE_MANAGED_IDENTITY_PRINCIPAL_ID:?run azd provision first: the managed identity must exist}"
TENANT_ID=${AZURE_TENANT_ID:-$(az account show --query tenantId -o tsv)}

role_id() { # app role id of a Graph application permission
  az ad sp show --id "$GRAPH_APP_ID" --query "appRoles[?value=='$1' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv
}

app_id() { # the recorded app registration; never a lookup by display name
  : "${GRAPH_CLIENT_ID:?no GRAPH_CLIENT_ID recorded: run scripts/graph-app.sh create (or set the client id of your registration)}"
  az ad app show --id "$GRAPH_CLIENT_ID" --query appId -o tsv
}

sp_id() {
  az ad sp show --id "$1" --query id -o tsv
}

create() {
  local app sp name
  if [ -n "${GRAPH_CLIENT_ID:-}" ]; then
    app=$(app_id) # the recorded one, or stop: a recorded id that does not resolve is not replaced
    echo "using the recorded app registration $app (GRAPH_CLIENT_ID)"
  else
    # A new registration, with a name no one can have taken first. Only its id identifies it from now on.
    name="Outlook CRM sync ($AZURE_ENV_NAME) $(python3 -c 'import secrets; print(secrets.token_hex(4))')"
    app=$(az ad app create --display-name "$name" --sign-in-audience AzureADMyOrg --query appId -o tsv)
    echo "created app registration $name ($app)"
    if command -v azd >/dev/null 2>&1; then
      azd env set GRAPH_CLIENT_ID "$app" # recorded before anything else, so a rerun reuses it
    fi
    GRAPH_CLIENT_ID=$app
  fi
  sp=$(az ad sp show --id "$app" --query id -o tsv 2>/dev/null || az ad sp create --id "$app" --query id -o tsv)

  # Declare the permissions (what reviewers and the consent page see); granting is a separate step.
  local perm
  for perm in $PERMISSIONS; do
    az ad app permission add --id "$app" --api "$GRAPH_APP_ID" --api-permissions "$(role_id "$perm")=Role" \
      --only-show-errors >/dev/null
  done

  # The only credential: tokens of the Function App's user-assigned managed identity.
  if [ -z "$(az ad app federated-credential list --id "$app" --query "[?name=='function-app-identity'].name" -o tsv)" ]; then
    local spec
    spec=$(mktemp)
    cat >"$spec" <<JSON
{
  "name": "function-app-identity",
  "issuer": "https://login.microsoftonline.com/$TENANT_ID/v2.0",
  "subject": "$AZURE_MANAGED_IDENTITY_PRINCIPAL_ID",
  "audiences": ["api://AzureADTokenExchange"],
  "description": "Tokens of the Function App's user-assigned managed identity act as this app's credential."
}
JSON
    az ad app federated-credential create --id "$app" --parameters "@$spec" --output none
    rm -f "$spec"
    echo "federated credential trusts managed identity $AZURE_MANAGED_IDENTITY_PRINCIPAL_ID"
  fi

  echo "GRAPH_CLIENT_ID=$app  (service principal object id: $sp)"
  if command -v azd >/dev/null 2>&1; then
    echo "stored in the azd environment; run: azd provision"
  else
    echo "record it: export GRAPH_CLIENT_ID=$app (and set it for azd provision)"
  fi
}

graph_sp_id() {
  sp_id "$GRAPH_APP_ID"
}

grant_tenant_wide() {
  local app sp graph perm body
  app=$(app_id)
  sp=$(sp_id "$app")
  graph=$(graph_sp_id)
  for perm in $PERMISSIONS; do
    body=$(printf '{"principalId":"%s","resourceId":"%s","appRoleId":"%s"}' "$sp" "$graph" "$(role_id "$perm")")
    if az rest --method POST --url "$GRAPH/servicePrincipals/$sp/appRoleAssignments" --body "$body" \
      --headers Content-Type=application/json --output none 2>/dev/null; then
      echo "granted $perm for every mailbox in the tenant"
    else
      echo "$perm: already granted (or not allowed: needs Privileged Role Administrator)"
    fi
  done
}

revoke_tenant_wide() {
  local app sp graph id role keep
  app=$(app_id)
  sp=$(sp_id "$app")
  graph=$(graph_sp_id)
  # a permission Exchange cannot scope (Tasks.ReadWrite.All: To Do) stays granted tenant-wide
  keep=$(for name in $(unscoped); do role_id "$name"; done)
  az rest --method GET --url "$GRAPH/servicePrincipals/$sp/appRoleAssignments" \
    --query "value[?resourceId=='$graph'].[id, appRoleId]" -o tsv | while read -r id role; do
    if grep -qx "$role" <<<"$keep"; then
      echo "kept tenant-wide grant $id: Exchange has no role to scope it to a mailbox group"
      continue
    fi
    az rest --method DELETE --url "$GRAPH/servicePrincipals/$sp/appRoleAssignments/$id" --output none
    echo "removed tenant-wide grant $id"
  done
  echo "no other tenant-wide Graph grants left; Exchange Online RBAC decides which mailboxes the app reaches"
}

unscoped() { # the asked-for permissions with no Exchange role (To Do): always tenant-wide
  for perm in $PERMISSIONS; do
    python3 -c 'import json, sys; p = {x["name"]: x for x in json.load(open("infra/graph-permissions.json"))["permissions"]}; sys.exit(0 if p[sys.argv[1]]["exchangeRole"] is None else 1)' "$perm" && echo "$perm"
  done
  return 0
}

show() {
  local app sp graph
  app=$(app_id)
  sp=$(sp_id "$app")
  graph=$(graph_sp_id)
  echo "app registration: $(az ad app show --id "$app" --query displayName -o tsv)  client id: $app  service principal: $sp"
  az ad app federated-credential list --id "$app" --query "[].{name:name, subject:subject, issuer:issuer}" -o table
  echo "tenant-wide grants (should be empty with GRAPH_PERMISSION_SCOPE=mailbox-group):"
  az rest --method GET --url "$GRAPH/servicePrincipals/$sp/appRoleAssignments" \
    --query "value[?resourceId=='$graph'].appRoleId" -o tsv | while read -r role; do
    az ad sp show --id "$GRAPH_APP_ID" --query "appRoles[?id=='$role'].value | [0]" -o tsv
  done
}

case "${1:-}" in
  create) create ;;
  grant-tenant-wide) grant_tenant_wide ;;
  revoke-tenant-wide) revoke_tenant_wide ;;
  show) show ;;
  *)
    sed -n '2,24p' "$0"
    exit 2
    ;;
esac

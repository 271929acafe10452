#!/bin/sh
# azd postdeploy hook (azure.yaml). Makes sure the key Graph passes back on notification URLs exists:
#   1. in Key Vault (secret AZURE_WEBHOOK_SECRET_NAME), created once with 64 random URL-safe characters;
#   2. as the host-level function key "graph-webhook" of the Function App, with the same value.
# The app reads it through its WEBHOOK_KEY Key Vault reference; after a change the app is restarted
# so the reference resolves to the new value. Idempotent: a second run changes nothing.
# Needs: az (logged in), python3; the azd environment values (azd sets them for hooks).
set -eu

: "${AZURE_KEY_VAULT_NAME:?run through azd, or export the azd environment (azd env get-values)}"
: "${AZURE_FUNCTION_NAME:?}"
: "${AZURE_RESOURCE_GROUP:?}"
SECRET_NAME=${AZURE_WEBHOOK_SECRET_NAME:-webhook-key}
KEY_NAME=graph-webhook
changed=false

# Only a definite "not found" creates a new key: any other failure (e.g. a role assignment still
# propagating) stops here, so an existing key is never replaced by accident.
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
if key=$(az keyvault secret show --vault-name "$AZURE_KEY_VAULT_NAME" --name "$SECRET_NAME" \
  --query value -o tsv 2>"$errors"); then
  :
elif grep -q "SecretNotFound" "$errors"; then
  key=""
else
  cat "$errors" >&2
  echo "webhook key: cannot read Key Vault (new role assignments can take a few minutes; run azd deploy again)" >&2
  exit 1
fi
if [ -z "$key" ]; then
  key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
  umask 077
  file=$(mktemp)
  trap 'rm -f "$errors" "$file"' EXIT
  printf %s "$key" >"$file"
  az keyvault secret set --vault-name "$AZURE_KEY_VAULT_NAME" --name "$SECRET_NAME" \
    --file "$file" --encoding utf-8 --content-type "function key for Graph notifications" --output none
  echo "webhook key: created in Key Vault"
  changed=true
fi

current=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_NAME" \
  --query "functionKeys.\"$KEY_NAME\"" -o tsv 2>/dev/null || true)
if [ "$current" != "$key" ]; then
  az functionapp keys set -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_NAME" \
    --key-type functionKeys --key-name "$KEY_NAME" --key-value "$key" --output none
  echo "webhook key: set as function key $KEY_NAME"
  changed=true
fi

if [ "$changed" = true ]; then
  az functionapp restart -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_NAME" --output none
  echo "webhook key: app restarted so WEBHOOK_KEY resolves to it"
else
  echo "webhook key: in place"
fi

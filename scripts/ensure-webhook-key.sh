#!/bin/sh
# azd postdeploy hook (azure.yaml). Makes sure the key Graph passes back on notification URLs exists:
#   1. in Key Vault (secret AZURE_WEBHOOK_SECRET_NAME), created once with 64 random URL-safe characters;
#   2. as the function key "graph-webhook" of the two functions Graph calls, graph_notifications and
#      graph_lifecycle, and of nothing else. Never a host key: a host key opens every function of the
#      app, the admin API included, and this key travels in every subscription URL. A host key of
#      that name left by an earlier version of this script is deleted.
# The app reads the key through its WEBHOOK_KEY Key Vault reference. After a change the references are
# refreshed (the documented config/configreferences/appsettings/refresh call: a restart alone may
# keep a cached value for up to 24 hours) and the app is restarted.
# Right after a deployment the key API answers 404 or 400 for a while: every key call is retried
# with backoff (5 s, doubling, 7 attempts). A key listing that fails is an error, never "no key".
# Idempotent: a second run changes nothing.
# Needs: az (logged in), python3; the azd environment values (azd sets them for hooks).
set -eu

: "${AZURE_KEY_VAULT_NAME:?run through azd, or export the azd environment (azd env get-values)}"
: "${AZURE_FUNCTION_NAME:?}"
: "${AZURE_RESOURCE_GROUP:?}"
SECRET_NAME=${AZURE_WEBHOOK_SECRET_NAME:-webhook-key}
KEY_NAME=graph-webhook
WEBHOOK_FUNCTIONS="graph_notifications graph_lifecycle"
ATTEMPTS=7
FIRST_DELAY=5
changed=false

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

# retry WHAT COMMAND...: run COMMAND until it succeeds, at most ATTEMPTS times, waiting FIRST_DELAY
# seconds after the first failure and twice as long after each next one. Its output is passed on;
# the last failure's error text is shown and the script stops.
retry() {
  what=$1
  shift
  attempt=1
  delay=$FIRST_DELAY
  until "$@" 2>"$errors"; do
    if [ "$attempt" -ge "$ATTEMPTS" ]; then
      cat "$errors" >&2
      echo "webhook key: $what failed $ATTEMPTS times; run azd deploy again" >&2
      exit 1
    fi
    echo "webhook key: $what failed (attempt $attempt of $ATTEMPTS), again in ${delay}s" >&2
    sleep "$delay"
    attempt=$((attempt + 1))
    delay=$((delay * 2))
  done
}

# Only a definite "not found" creates a new key: any other failure (e.g. a role assignment still
# propagating) stops here, so an existing key is never replaced by accident.
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

for function in $WEBHOOK_FUNCTIONS; do
  current=$(retry "reading the keys of $function" az functionapp function keys list \
    -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_NAME" --function-name "$function" \
    --query "\"$KEY_NAME\"" -o tsv)
  if [ "$current" != "$key" ]; then
    retry "setting the key of $function" az functionapp function keys set \
      -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_NAME" --function-name "$function" \
      --key-name "$KEY_NAME" --key-value "$key" --output none
    echo "webhook key: set as function key $KEY_NAME of $function"
    changed=true
  fi
done

# Earlier versions made it a host key, valid for every function: remove that one.
host_key=$(retry "reading the host keys" az functionapp keys list \
  -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_NAME" --query "functionKeys.\"$KEY_NAME\"" -o tsv)
if [ -n "$host_key" ]; then
  retry "deleting the host key $KEY_NAME" az functionapp keys delete \
    -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_NAME" --key-type functionKeys --key-name "$KEY_NAME" \
    --output none
  echo "webhook key: host key $KEY_NAME deleted (it opened every function)"
fi

if [ "$changed" = true ]; then
  site=$(az functionapp show -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_NAME" --query id -o tsv)
  retry "refreshing the Key Vault references" az rest --method post \
    --url "$site/config/configreferences/appsettings/refresh?api-version=2022-03-01" --output none
  az functionapp restart -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_NAME" --output none
  echo "webhook key: Key Vault references refreshed and app restarted, so WEBHOOK_KEY resolves to it"
else
  echo "webhook key: in place"
fi

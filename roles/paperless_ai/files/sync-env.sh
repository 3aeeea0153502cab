#!/bin/sh
# Paperless-AI v3 keeps /app/data/.env and its setup check reads that file in
# preference to the container's environment. Make every managed key in the
# file equal to the value this pod was given, keep every other line (settings
# made in the web UI), and replace the file atomically: it holds secrets.
set -eu
env_file=${PAPERLESS_AI_ENV_FILE:-/app/data/.env}
keys=${MANAGED_KEYS:?MANAGED_KEYS is empty}
tmp=$(mktemp "$(dirname "$env_file")/.env.XXXXXX")
trap 'rm -f "$tmp"' EXIT
if [ -f "$env_file" ]; then
  pattern=$(printf '%s|' $keys)
  grep -Ev "^[[:space:]]*(export[[:space:]]+)?(${pattern%|})[[:space:]]*=" "$env_file" >"$tmp" || true
fi
for key in $keys; do
  value=$(printenv "$key") || { echo "sync-env: $key is managed but not set in the pod" >&2; exit 1; }
  case $value in
    *"'"* | *"
"*) echo "sync-env: the value of $key holds a single quote or a newline, which .env cannot keep" >&2; exit 1 ;;
  esac
  printf "%s='%s'\n" "$key" "$value" >>"$tmp"
done
chmod 600 "$tmp"
mv "$tmp" "$env_file"
trap - EXIT
echo "sync-env: $(echo $keys | wc -w) managed keys written to $env_file"

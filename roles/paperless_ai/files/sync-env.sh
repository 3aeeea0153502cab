#!/bin/sh
# Paperless-AI v3.0.9 keeps /app/data/.env, and its setup check reads that file,
# not the container's environment (services/setupService.js, loadConfig): each
# line is split on '=', the first two pieces are trimmed and kept, nothing is
# unquoted. So every managed key is written the way the app writes it
# (saveConfig: KEY=value), and a value that reader, or dotenv (which
# config/config.js loads the same file with), would not read back unchanged
# stops the pod before the file is touched. Every other line (settings made in
# the web UI) is kept; the file is replaced atomically: it holds secrets.
set -eu
env_file=${PAPERLESS_AI_ENV_FILE:-/app/data/.env}
keys=${MANAGED_KEYS:?MANAGED_KEYS is empty}
nl='
'
cr=$(printf '\r')

value_of() {
  # printenv ends the value with a newline; the x keeps any newline of the value's own.
  value=$(printenv "$1" && echo x) || { echo "sync-env: $1 is managed but not set in the pod" >&2; exit 1; }
  value=${value%x}
  value=${value%"$nl"}
}

for key in $keys; do
  value_of "$key"
  why=
  case $value in
    *=*) why="holds '=', and Paperless-AI reads a value only up to its first '='" ;;
    *"$nl"* | *"$cr"*) why="holds a line break, and .env keeps one line per key" ;;
    *\"* | *\'* | *\`*) why="holds a quote, which Paperless-AI keeps and dotenv strips" ;;
    *'#'*) why="holds '#', where dotenv ends a value" ;;
    [[:space:]]* | *[[:space:]]) why="starts or ends with a blank, which Paperless-AI trims" ;;
  esac
  if [ -n "$why" ]; then
    echo "sync-env: the value of $key $why; set it without = # quotes, line breaks or surrounding blanks" >&2
    exit 1
  fi
done

tmp=$(mktemp "$(dirname "$env_file")/.env.XXXXXX")
trap 'rm -f "$tmp"' EXIT
if [ -f "$env_file" ]; then
  pattern=$(printf '%s|' $keys)
  grep -Ev "^[[:space:]]*(export[[:space:]]+)?(${pattern%|})[[:space:]]*=" "$env_file" >"$tmp" || true
fi
for key in $keys; do
  value_of "$key"
  printf '%s=%s\n' "$key" "$value" >>"$tmp"
done
chmod 600 "$tmp"
mv "$tmp" "$env_file"
trap - EXIT
echo "sync-env: $(echo $keys | wc -w) managed keys written to $env_file"

#!/usr/bin/env bash
# Create (once) and print the path of a virtualenv with another LiteLLM than the
# pinned one: `scripts/litellm-venv.sh 1.108.7`, or `scripts/litellm-venv.sh newest`
# (the newest release on the package index whose proxy extra installs).
# Like scripts/venv.sh: outside the checkout, keyed by the LiteLLM version and a
# hash of the project's requirements, so it is built once per version.
# Everything else is the project's test requirements, minus the LiteLLM pin.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/install-cache.sh"
python=${PYTHON:-python3}
version=${1:?usage: $0 VERSION|newest}
if [ "$version" = newest ]; then
  # The newest release whose proxy extra installs: some releases pin companion packages
  # (litellm-proxy, litellm-enterprise, litellm-proxy-extras) that the index does not
  # offer yet. A dry run resolves each candidate, newest first (~10 s each).
  # sed, not head, keeps the 20 newest: head's early exit would fail the pipe (pipefail, SIGPIPE).
  candidates=$("$python" -m pip index versions litellm 2>/dev/null |
    sed -n 's/^Available versions: //p' | tr -d ' ' | tr ',' '\n' | grep -E '^[0-9]+\.[0-9]+\.[0-9]+$' | sed -n 1,20p)
  [ -n "$candidates" ] || { echo "could not ask the package index for litellm's releases" >&2; exit 1; }
  version=""
  for candidate in $candidates; do
    if "$python" -m pip install --quiet --dry-run --ignore-installed "litellm[proxy]==$candidate" >/dev/null 2>&1; then
      version=$candidate
      break
    fi
    echo "litellm $candidate: its proxy extra does not install from this index; trying the one before" >&2
  done
  [ -n "$version" ] || { echo "none of the 20 newest litellm releases installs with its proxy extra" >&2; exit 1; }
fi
# The pinned release is the project's own venv: no second copy of it.
if [ "$version" = "$(sed -n 's/^litellm\[proxy\]==//p' "$here/requirements-test.txt")" ]; then
  exec "$here/scripts/venv.sh"
fi
key=$(cat "$here/requirements.txt" "$here/requirements-test.txt" | sha256sum | cut -c1-12)
venv="$(install_cache_root)/litellm-$version-$key"
lock_unless_complete "$venv"
if [ ! -f "$venv/.complete" ]; then
  echo "Creating virtualenv $venv with litellm $version (one-time, a few minutes)" >&2
  reqs=$(mktemp)
  trap 'rm -f "$reqs"' EXIT
  sed -e 's#^-r requirements.txt#-r '"$here"'/requirements.txt#' \
      -e 's#^litellm\[proxy\]==.*#litellm[proxy]=='"$version"'#' \
      "$here/requirements-test.txt" >"$reqs"
  build_venv "$python" "$venv" "$reqs" || { echo "litellm $version did not install (see above)" >&2; exit 1; }
fi
echo "$venv"

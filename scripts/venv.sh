#!/usr/bin/env bash
# Create (once) and print the path of the project's virtualenv.
# The venv lives outside the checkout, keyed by a hash of the pinned
# requirements, so every clone and CI run on a machine reuses it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/install-cache.sh"
python=${PYTHON:-python3}
key=$(cat "$here/requirements.txt" "$here/requirements-test.txt" | sha256sum | cut -c1-16)
venv="$(install_cache_root)/venv-$key"
lock_unless_complete "$venv"
if [ ! -f "$venv/.complete" ]; then
  echo "Creating virtualenv $venv (one-time, a few minutes)" >&2
  build_venv "$python" "$venv" "$here/requirements-test.txt"
fi
echo "$venv"

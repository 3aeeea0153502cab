#!/usr/bin/env bash
# Create (once) and print the path of the scanner's virtualenv (requirements-scan.txt):
# outside the checkout, keyed by a hash of its pins, like scripts/venv.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/install-cache.sh"
python=${PYTHON:-python3}
key=$(sha256sum "$here/requirements-scan.txt" | cut -c1-16)
venv="$(install_cache_root)/scan-$key"
lock_unless_complete "$venv"
if [ ! -f "$venv/.complete" ]; then
  echo "Creating virtualenv $venv for the manifest scanner (one-time, about a minute)" >&2
  build_venv "$python" "$venv" "$here/requirements-scan.txt"
fi
echo "$venv"

#!/usr/bin/env bash
# Create (once) and print the path of the project's virtualenv.
# The venv lives outside the checkout, keyed by a hash of the pinned
# requirements, so every clone and CI run on a machine reuses it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
key=$(cat "$here/requirements.txt" "$here/requirements-test.txt" | sha256sum | cut -c1-16)
root=${HOMELAB_INFERENCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homelab-inference}
venv="$root/venv-$key"
# Two runs that both find it missing (two clones, make test beside a helper
# script) build it one after the other: the second finds it complete.
if [ ! -f "$venv/.complete" ]; then
  mkdir -p "$root"
  exec 9>"$root/.venv-$key.lock"
  flock 9
fi
# The marker is written last: an interrupted install is redone, never reused.
if [ ! -f "$venv/.complete" ]; then
  echo "Creating virtualenv $venv (one-time, a few minutes)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip >&2
  "$venv/bin/pip" install --quiet -r "$here/requirements-test.txt" >&2
  touch "$venv/.complete"
fi
echo "$venv"

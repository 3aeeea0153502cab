#!/usr/bin/env bash
# ansible-test sanity and units on the collection artifact, exactly as it ships:
# build it, unpack it under ansible_collections/homelab/inference with
# kubernetes.core beside it, and run ansible-test there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=$("$here/scripts/venv.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tree="$work/ansible_collections/homelab/inference"
mkdir -p "$tree"
"$venv/bin/ansible-galaxy" collection build --output-path "$work" "$here" >/dev/null
tar -xzf "$work"/homelab-inference-*.tar.gz -C "$tree"
ln -s "$("$venv/bin/python" -c 'import ansible_collections.kubernetes as k; print(list(k.__path__)[0])')" \
  "$work/ansible_collections/kubernetes"
# ansible-test bootstraps pip in its venvs from a download that may be
# unreachable; it uses this cache first (offline stand-in, see the script).
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
cp "$here/scripts/ansible-test-get-pip.py" "$cache/get_pip_24_2.py"
cd "$tree"
"$venv/bin/ansible-test" sanity --local --python 3.11 --color no "$@" 2>&1 | grep -v -e '^WARNING: Location' -e '^Looking in' -e '^Requirement already'
"$venv/bin/ansible-test" units --local --python 3.11 --color no 2>&1 | grep -v -e '^WARNING: Location'

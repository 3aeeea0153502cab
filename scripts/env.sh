# shellcheck shell=bash
# Source it from the checkout's root (`. scripts/env.sh`): the pinned virtualenv's tools
# (ansible-playbook, molecule, pytest; installed on first use) on PATH, and the Python path
# that pyproject.toml gives pytest (the lab and the test kit in tools/, this checkout's
# collection in .collections/), so that `python -m lab ...` and `python benchmarks/<name>.py`
# run as `make` runs them.
homelab_inference_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATH="$("$homelab_inference_root/scripts/venv.sh")/bin:$PATH"
PYTHONPATH="$homelab_inference_root/tools:$homelab_inference_root/.collections${PYTHONPATH:+:$PYTHONPATH}"
export PATH PYTHONPATH
unset homelab_inference_root

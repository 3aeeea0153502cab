#!/usr/bin/env bash
# `make test`: every stage CI runs, two at a time. The molecule lab
# scenario spends about half its time waiting on the lab's timed model servers,
# so it overlaps well with the rest on a 2-core machine; a third lane made the
# machine so busy that gateway deadlines failed. Labs running at once get their
# own addresses (tools/lab/address_slot.py) and ports.
# Each stage's output goes to $TEST_LOG_DIR/<stage>.log; a failed stage's log is
# printed in full, and the run fails once every lane has stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=${TEST_LOG_DIR:-tests/output/make-test}
rm -rf "$logs"
mkdir -p "$logs"
trap 'trap - INT TERM; kill 0' INT TERM
export COLUMNS=${COLUMNS:-200}  # molecule wraps at the terminal width: keep a test id on one line

make --no-print-directory system-deps

# The machine's busy CPU time so far in clock ticks, every core and process (containers included).
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }

# Seconds of CPU a stage's processes used (bash's `times`: the children it waited for, so not
# what conmon runs in a Podman container).
stage_cpu() { awk 'NR == 2 {split($0, t, /[ms]/); print int(t[1] * 60 + t[2] + t[3] * 60 + t[4] + 0.5)}' "$1"; }

lane() {  # the stages in order; a failure stops the lane
  local stage began status
  for stage in "$@"; do
    began=$(date +%s)
    if (make --no-print-directory "$stage" >"$logs/$stage.log" 2>&1; rc=$?; times >"$logs/$stage.times"; exit $rc)
    then status=passed; else status=FAILED; fi
    printf '%-20s %-7s %5d s %6d CPU s\n' "$stage" "$status" $(($(date +%s) - began)) \
      "$(stage_cpu "$logs/$stage.times")" | tee -a "$logs/summary"
    [ "$status" = passed ] || return 1
  done
}

began=$(date +%s)
busy_began=$(busy_ticks)
failed=0
lane lint sanity scan pytest &
lane molecule-lab &
# The gpu_worker scenario starts when the first lane is done, so two stages run at any time.
wait -n || failed=1
lane molecule-gpu-worker &
wait -n || failed=1
wait -n || failed=1

for log in "$logs"/*.log; do
  stage=$(basename "$log" .log)
  if grep -q "^$stage  *FAILED" "$logs/summary"; then
    printf '\n===== %s FAILED: %s =====\n' "$stage" "$log"
    cat "$log"
  else
    printf '\n===== %s: last lines of %s =====\n' "$stage" "$log"
    tail -n 3 "$log"
  fi
done
# CI keeps only the end of this output: name each failed stage's failed tests and errors last.
for stage in $(awk '$2 == "FAILED" {print $1}' "$logs/summary"); do
  printf '\n===== %s FAILED, its failures (in full above) =====\n' "$stage"
  sed 's/\x1b\[[0-9;]*m//g; s/^[[:space:]│]*//' "$logs/$stage.log" |
    grep -E '^(FAILED|ERROR) |^E  |fatal: |failed=[1-9]' | tail -n 40 || true
done
elapsed=$(($(date +%s) - began))
busy=$((($(busy_ticks) - busy_began) / $(getconf CLK_TCK)))
cores=$(nproc)
capacity=$((elapsed * cores))
printf '\nmake test: %s in %d s; the machine was busy %d CPU s of %d (%d cores, %d%%); stage times above, logs in %s\n' \
  "$([ $failed = 0 ] && echo passed || echo FAILED)" "$elapsed" "$busy" "$capacity" "$cores" \
  $((100 * busy / (capacity > 0 ? capacity : 1))) "$logs"
exit $failed

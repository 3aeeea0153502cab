#!/usr/bin/env bash
# The gateway's guarantees on the pinned LiteLLM and on the newest one: runs the
# gateway tests (the REAL proxy in front of FAKE upstreams) in each version's venv,
# then the molecule lab scenario (default)'s converge and its vLLM kill test (the whole stack
# on the lab, LiteLLM from that venv), and prints a pass/fail table per guarantee
# per version. The lab scenario's port and state are used: not while `make test` runs.
#   scripts/litellm-upgrade-check.sh            # pinned + newest installable release
#   scripts/litellm-upgrade-check.sh 1.108.7    # pinned + that release
# Exit status 0 only when every guarantee passes on every version checked.
# Not part of `make test`: the newest release changes from week to week.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
pinned_venv=$("$here/scripts/venv.sh")
export PATH="$pinned_venv/bin:$PATH"
newest_venv=$("$here/scripts/litellm-venv.sh" "${1:-newest}")
out=$(mktemp -d "${TMPDIR:-/tmp}/litellm-upgrade-check.XXXXXX")
tests=(tests/project/test_gateway.py tests/project/test_gateway_timing.py tests/project/test_gateway_kill.py
       tests/project/test_gateway_settings.py)
versions=()
venvs=("$pinned_venv")
# The newest release may be the pinned one: then it is checked once.
[ "$newest_venv" = "$pinned_venv" ] || venvs+=("$newest_venv")
for venv in "${venvs[@]}"; do
  version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')
  versions+=("$version")
  echo "== litellm $version: ${tests[*]}" >&2
  # -p no:cacheprovider: two venvs share one checkout.
  "$venv/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$out/$version.xml" "${tests[@]}" \
    >"$out/$version.log" 2>&1 || true
  tail -n 3 "$out/$version.log" >&2
  # The same kill through the cluster: the molecule lab scenario (default)'s stack (the lab's kubelet
  # runs the LiteLLM beside this venv's Python), then its kill test alone.
  echo "== litellm $version: molecule lab scenario, the kill test" >&2
  if PATH="$venv/bin:$PATH" molecule converge -s default >"$out/$version-molecule.log" 2>&1; then
    PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$out/$version-lab.xml" \
      extensions/molecule/default/tests/test_e2e.py -k test_vllm_killed >>"$out/$version-molecule.log" 2>&1 || true
  fi
  PATH="$venv/bin:$PATH" molecule destroy -s default >>"$out/$version-molecule.log" 2>&1 || true
  grep -E '^[0-9]+ (passed|failed)|^ERROR|CRITICAL.*converge' "$out/$version-molecule.log" | tail -n 1 >&2 || true
done
"$pinned_venv/bin/python" - "$out" "${versions[@]}" <<'PY'
import sys
import xml.etree.ElementTree as ET

out, versions = sys.argv[1], sys.argv[2:]
# Each guarantee, and the tests (file::name prefixes) that prove it.
GUARANTEES = [
    ("0 failed requests through a vLLM kill at c16", ["test_gateway_kill.py::test_vllm_killed"]),
    ("the same kill through the lab cluster (molecule lab)", ["test_e2e.py::test_vllm_killed"]),
    ("fallback chain: vLLM refusing/hanging, vLLM+Ollama down", [
        "test_gateway.py::test_vllm_refusing", "test_gateway.py::test_vllm_and_ollama_down",
        "test_gateway.py::test_a_hanging_vllm"]),
    ("streamed failover with content", [
        "test_gateway.py::test_vllm_refusing_falls_back_to_ollama[stream]",
        "test_gateway.py::test_a_hanging_vllm_is_found_by_its_health_probe_and_its_requests_fail_over[stream]",
        "test_gateway.py::test_vllm_and_ollama_down_falls_back_to_openai[stream]",
        "test_gateway.py::test_a_stream_that_dies"]),
    ("clear mode-mismatch error (404, one line)", [
        "test_gateway.py::test_ml_mode_answers", "test_gateway.py::test_gpu_free_mode_answers"]),
    ("slow is not dead (timing)", ["test_gateway_timing.py::"]),
    ("hook settings missing/invalid: start fails naming the file", ["test_gateway_settings.py::"]),
    ("all other gateway tests", ["test_gateway.py::"]),
]


def results(path):
    found = {}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return found
    for case in root.iter("testcase"):
        name = "%s.py::%s" % (case.get("classname", "").rsplit(".", 1)[-1], case.get("name"))
        bad = any(child.tag in ("failure", "error") for child in case)
        skipped = any(child.tag == "skipped" for child in case)
        found[name] = "skip" if skipped else ("FAIL" if bad else "pass")
    return found


table = {v: {**results("%s/%s.xml" % (out, v)), **results("%s/%s-lab.xml" % (out, v))} for v in versions}
claimed = set()
rows = []
for title, prefixes in GUARANTEES:
    row = [title]
    for version in versions:
        cases = {n: r for n, r in table[version].items() if any(n.startswith(p) for p in prefixes)
                 and (title != "all other gateway tests" or n not in claimed)}
        if title != "all other gateway tests":
            claimed.update(cases)
        if not cases:
            row.append("no tests ran")
        else:
            failed = sum(r == "FAIL" for r in cases.values())
            row.append("FAIL (%d of %d)" % (failed, len(cases)) if failed else "pass (%d)" % len(cases))
    rows.append(row)
header = ["guarantee"] + ["litellm %s" % v for v in versions]
widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
print(line(header))
print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
for row in rows:
    print(line(row))
print("logs and JUnit reports: %s" % out)
sys.exit(0 if all(not cell.startswith(("FAIL", "no tests")) for row in rows for cell in row[1:]) else 1)
PY

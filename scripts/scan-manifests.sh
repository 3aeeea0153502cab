#!/usr/bin/env bash
# `make scan`: render every object the collection can deploy (all optional parts on,
# tests/scan/render-everything.yml) and scan it with checkov, a maintained Kubernetes
# policy scanner (requirements-scan.txt, its own cached venv). Each finding that stays
# must be listed with its reason in tests/scan/accepted-findings.yml: a finding not
# listed fails, and so does a listed one that no longer occurs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scanner="$("$root/scripts/scan-venv.sh")/bin/checkov"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ansible-playbook site.yml --tags render -e render_dir="$work/render" -e @tests/scan/render-everything.yml \
  >"$work/render.log" 2>&1 || { cat "$work/render.log"; exit 1; }
# checkov exits 1 when it finds anything; the findings are judged against the list below.
"$scanner" --directory "$work/render" --framework kubernetes --output json --quiet --compact \
  --skip-download >"$work/findings.json" || [ $? = 1 ]
python "$root/scripts/scan_findings.py" "$work/findings.json" tests/scan/accepted-findings.yml

"""Judge checkov's findings (its JSON output) against the accepted list: each finding is a check
on a resource (``Kind.namespace.name``); the list names, per check, the resources it stays on and
why. Prints one line per finding not accepted and per accepted one that no longer occurs; exits 1
if there is any."""

from __future__ import annotations

import json
import sys

import yaml


def findings(report):
    """{(check id, resource): check name} of every failed check in checkov's JSON output."""
    reports = report if isinstance(report, list) else [report]
    found = {}
    for part in reports:
        for check in (part.get("results") or {}).get("failed_checks") or []:
            found[(check["check_id"], check["resource"])] = check.get("check_name") or ""
    return found


def accepted(entries):
    listed = {}
    for entry in entries:
        if not str(entry.get("reason") or "").strip():
            raise SystemExit("tests/scan/accepted-findings.yml: %s has no reason; give why it stays" % entry["check"])
        for resource in entry["resources"]:
            listed[(entry["check"], resource)] = entry["reason"]
    return listed


def main(report_path, accepted_path):
    with open(report_path) as handle:
        found = findings(json.load(handle))
    with open(accepted_path) as handle:
        listed = accepted(yaml.safe_load(handle) or [])
    new = sorted(set(found) - set(listed))
    stale = sorted(set(listed) - set(found))
    for check, resource in new:
        print("new finding: %s %s on %s; fix it, or list it with its reason in %s"
              % (check, found[(check, resource)], resource, accepted_path))
    for check, resource in stale:
        print("no longer found: %s on %s; take it off %s" % (check, resource, accepted_path))
    kept = len(set(found) & set(listed))
    print("scan: %d findings, %d accepted with a reason, %d new, %d stale" % (len(found), kept, len(new), len(stale)))
    return 1 if new or stale else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

"""Write a benchmark's report: the JSON file under benchmarks/results/, and the same on stdout."""

from __future__ import annotations

import json
import os
import sys


def write_report(report, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    json.dump(report, sys.stdout, indent=2)
    print()

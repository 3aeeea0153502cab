#!/usr/bin/env python3
"""Generate the docs that must never drift from their source.

- the model keys in roles/catalog/meta/argument_specs.yml from MODEL_KEY_TABLE in
  plugins/module_utils/_catalog.py (where the preflight checks them), so they are described once;
  the on-demand policy's keys likewise, from POLICY_KEY_TABLE in _gpu_on_demand.py;
- roles/<role>/README.md from the role's meta/argument_specs.yml;
- the model availability table in docs/clients.md from the catalog.

``--check`` writes nothing and exits 1 when a generated file is stale.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The collection as the checkout holds it (.collections links to the checkout), no Ansible needed.
sys.path.insert(0, os.path.join(ROOT, ".collections"))
from ansible_collections.homelab.inference.plugins.module_utils import (  # noqa: E402  pylint: disable=C0413
    _catalog, _gpu_on_demand)

CATALOG = os.path.join(ROOT, "roles", "catalog", "defaults", "main.yml")
CLIENT_GUIDE = os.path.join(ROOT, "docs", "clients.md")
BEGIN = "<!-- BEGIN GENERATED: model availability (scripts/gen_docs.py) -->"
END = "<!-- END GENERATED: model availability -->"
CATALOG_SPEC = os.path.join(ROOT, "roles", "catalog", "meta", "argument_specs.yml")
KEYS_BEGIN = "# BEGIN GENERATED: model keys (scripts/gen_docs.py, from MODEL_KEY_TABLE in plugins/module_utils/_catalog.py)"
KEYS_END = "# END GENERATED: model keys"
POLICY_BEGIN = ("# BEGIN GENERATED: on-demand keys (scripts/gen_docs.py, from POLICY_KEY_TABLE in "
                "plugins/module_utils/_gpu_on_demand.py)")
POLICY_END = "# END GENERATED: on-demand keys"
GENERATED_NOTE = "Generated from `meta/argument_specs.yml` by `scripts/gen_docs.py`; edit the spec, not this file."


def markup(text):
    """Ansible doc markup (C(), O(), V(), I()) as Markdown."""
    text = re.sub(r"[COV]\(([^)]*)\)", r"`\1`", str(text))
    return re.sub(r"I\(([^)]*)\)", r"*\1*", text)


def as_list(value):
    return value if isinstance(value, list) else [value]


def default_text(spec):
    if spec.get("required"):
        return "**required**"
    if "default" not in spec:
        return ""
    return "`%s`" % json.dumps(spec["default"]).replace("|", "\\|")


def role_readme(role, specs):
    main = specs["argument_specs"]["main"]
    lines = ["# homelab.inference.%s" % role, "", markup(main["short_description"]), ""]
    for paragraph in as_list(main.get("description", [])):
        lines += [markup(paragraph), ""]
    options = main.get("options", {})
    lines += ["## Variables", ""]
    if options:
        lines += ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
        for name, spec in options.items():
            kind = spec.get("type", "str")
            if spec.get("elements"):
                kind += " of " + spec["elements"]
            if spec.get("choices"):
                kind += " (" + ", ".join("`%s`" % c for c in spec["choices"]) + ")"
            description = " ".join(markup(p) for p in as_list(spec.get("description", "")))
            if spec.get("no_log"):
                description += " Secret: never logged."
            lines.append("| `%s` | %s | %s | %s |" % (name, kind, default_text(spec), description.replace("|", "\\|")))
    else:
        lines.append("None.")
    lines += ["", GENERATED_NOTE, ""]
    return "\n".join(lines)


def availability_table(catalog):
    modes = catalog["inference_gpu_modes"]
    chain = catalog["inference_fallback_chain"]
    models = catalog["inference_models"]
    rows = ["| Model | Backend | Answers in GPU modes | Role | Prompt + answer must fit (tokens) | Timeout "
            "| Free-tier quota | What it is |",
            "|---|---|---|---|---|---|---|---|"]
    head = chain[0]

    def fits(name):
        tokens, limited_by = _catalog.usable_context(models, chain, name)
        own = _catalog.model_by_name(models, name)["context"] if name != _catalog.DEFAULT_ALIAS else None
        if own is None or limited_by == name:
            return "{:,}".format(tokens) + ("" if own is not None else " (`%s` may answer)" % limited_by)
        return "{:,} (`{}` may answer; {:,} here)".format(tokens, limited_by, own)
    rows.append("| `default` | alias | as `%s`, then its fallbacks | alias of the chain's head | %s | | | the model to "
                "use when you do not care which |" % (head, fits(_catalog.DEFAULT_ALIAS)))
    for model in models:
        name = model["name"]
        if model["backend"] == "vllm":
            serving = [m for m, spec in modes.items() if spec.get("vllm_model") == name]
            available = ", ".join("`%s`" % m for m in serving)
        else:
            available = "all"
        if name in chain:
            role = "fallback chain, tier %d of %d" % (chain.index(name) + 1, len(chain))
        elif model.get("parallel"):
            role = "parallel (never in the chain)"
        else:
            role = "direct"
        if model.get("reasoning"):
            role += "; reasoning"
        quota = []
        if model.get("requests_per_minute"):
            quota.append("%d/min" % model["requests_per_minute"])
        if model.get("requests_per_day"):
            quota.append("{:,}/day".format(model["requests_per_day"]))
        rows.append("| `%s` | %s | %s | %s | %s | %s | %s | %s |" % (
            name, model["backend"], available, role, fits(name), "%ss" % model["timeout"] if "timeout" in model else "",
            ", ".join(quota), model.get("description", "")))
    mode_rows = ["", "| GPU mode | vLLM serves | What it is for |", "|---|---|---|"]
    for mode, spec in modes.items():
        default = " (default)" if mode == catalog["inference_gpu_default_mode"] else ""
        served = "`%s`" % spec["vllm_model"] if spec.get("vllm_model") else "nothing: GPU free"
        mode_rows.append("| `%s`%s | %s | %s |" % (mode, default, served, spec.get("description", "")))
    return "\n".join(rows + mode_rows)


def between(text, begin, end, body, path):
    """``text`` with the lines between the ``begin`` and ``end`` marker lines replaced by ``body``."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.strip() == begin]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        sys.exit("%s lacks the generated-block markers %r and %r" % (path, begin, end))
    return "\n".join(lines[:starts[0] + 1] + body + lines[ends[0]:])


def doc_items(docs, indent):
    """Documentation lines as YAML list items: JSON strings, which are YAML double-quoted scalars, folded at spaces."""
    items = []
    for doc in docs:
        wrapped = textwrap.wrap(json.dumps(doc), 116 - len(indent), break_long_words=False, break_on_hyphens=False)
        items.append(indent + "- " + wrapped[0])
        items.extend(indent + "  " + part for part in wrapped[1:])
    return items


def catalog_spec():
    with open(CATALOG_SPEC) as handle:
        text = handle.read()
    for begin, end, docs in ((KEYS_BEGIN, KEYS_END, _catalog.model_key_docs()),
                             (POLICY_BEGIN, POLICY_END, _gpu_on_demand.policy_key_docs())):
        marker = next((line for line in text.split("\n") if line.strip() == begin), None)
        if marker is None:
            sys.exit("%s lacks the generated-block markers %r" % (CATALOG_SPEC, begin))
        indent = marker[:len(marker) - len(marker.lstrip())]
        text = between(text, begin, end, doc_items(docs, indent), CATALOG_SPEC)
    return text


def targets():
    """(path, wanted content) for every generated file."""
    spec_text = catalog_spec()
    out = [(CATALOG_SPEC, spec_text)]
    roles_dir = os.path.join(ROOT, "roles")
    for role in sorted(os.listdir(roles_dir)):
        spec_file = os.path.join(roles_dir, role, "meta", "argument_specs.yml")
        if os.path.exists(spec_file):
            with open(spec_file) as handle:
                specs = yaml.safe_load(spec_text if spec_file == CATALOG_SPEC else handle.read())
            out.append((os.path.join(roles_dir, role, "README.md"), role_readme(role, specs)))
    with open(CATALOG) as handle:
        table = availability_table(yaml.safe_load(handle))
    with open(CLIENT_GUIDE) as handle:
        guide = handle.read()
    out.append((CLIENT_GUIDE, between(guide, BEGIN, END, table.split("\n"), CLIENT_GUIDE)))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; fail when a file is stale")
    args = parser.parse_args()
    stale = []
    for path, wanted in targets():
        current = open(path).read() if os.path.exists(path) else None
        if current != wanted:
            stale.append(os.path.relpath(path, ROOT))
            if not args.check:
                with open(path, "w") as handle:
                    handle.write(wanted)
    if args.check and stale:
        sys.exit("stale generated docs: %s; run scripts/gen_docs.py" % ", ".join(stale))
    for path in stale:
        print("updated", path)


if __name__ == "__main__":
    main()

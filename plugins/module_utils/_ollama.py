# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ollama model names and pull plans. Pure functions."""

from __future__ import annotations

import json


def canonical(name):
    """Ollama's own spelling of a model reference: a missing tag means ``latest``."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


def installed(tags_body):
    """Canonical names of the models in an ``/api/tags`` answer."""
    return sorted({canonical(m.get("name") or m.get("model")) for m in tags_body.get("models", [])})


def plan(wanted, present, state):
    """The models to pull (state=present) or delete (state=absent), in the order asked."""
    present = set(present)
    todo = []
    for name in wanted:
        is_there = canonical(name) in present
        if (state == "present" and not is_there) or (state == "absent" and is_there):
            if name not in todo:
                todo.append(name)
    return todo


def pull_outcome(stream_text):
    """(ok, message) from the NDJSON lines a streamed ``/api/pull`` answers with."""
    last = None
    for line in stream_text.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            return False, "unreadable pull progress line: %s" % line[:200]
        if event.get("error"):
            return False, event["error"]
        last = event
    if last and last.get("status") == "success":
        return True, "success"
    return False, "the pull ended without success (last status: %s)" % (last or {}).get("status", "none")

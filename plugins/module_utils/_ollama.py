# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ollama model names, pull plans and model loads. Pure functions."""

from __future__ import annotations

import datetime
import json
import re

from ansible_collections.homelab.inference.plugins.module_utils import _catalog

# An expiry this far ahead is a model kept for good: Ollama lists keep_alive -1
# (a duration of MaxInt64, some 292 years) as now plus that (server/routes.go,
# PsHandler, v0.13.5).
FOR_GOOD = datetime.timedelta(days=100 * 365)
# The controller's clock and Ollama's may disagree by this much.
CLOCK_SKEW = datetime.timedelta(minutes=5)
_TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$")


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


# -- loading a model ------------------------------------------------------------------

def keep_alive_json(value):
    """A catalog keep_alive as Ollama's API reads it (api.Duration.UnmarshalJSON, v0.13.5): a number is
    seconds (negative: for good), a string a Go duration, which needs a unit - so the string "-1" goes
    as the number -1."""
    if value is None:
        return None
    text = str(value).strip()
    if re.match(r"^[-+]?[0-9]+$", text):
        return int(text)
    return text


def running(ps_body):
    """Canonical name -> expiry (``expires_at``, as Ollama wrote it) of each model in an ``/api/ps`` answer."""
    return {canonical(m.get("name") or m.get("model")): m.get("expires_at")
            for m in (ps_body or {}).get("models") or []}


def parse_expiry(text):
    """An RFC 3339 time from Ollama (nanoseconds, any offset) as an aware UTC datetime, or None."""
    found = _TIME_RE.match(text or "")
    if not found:
        return None
    parts = [int(p) for p in found.groups()[:6]]
    micro = int(((found.group(7) or "") + "000000")[:6])
    zone = found.group(8)
    offset = datetime.timedelta(0)
    if zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        offset = sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        moment = datetime.datetime(*parts, microsecond=micro, tzinfo=datetime.timezone(offset))
        return moment.astimezone(datetime.timezone.utc)
    except (ValueError, OverflowError):
        return None


def _kept_as_asked(expiry_text, keep_alive, now):
    """Whether a loaded model's expiry agrees with ``keep_alive`` (None: any will do).

    Ollama reports only when a model expires, not the keep_alive it was given:
    kept for good, it expires centuries on; kept for a duration, within that
    duration of its last use. A model kept for good that should expire, or one
    that expires although it should be kept for good, is loaded again."""
    expiry = parse_expiry(expiry_text)
    if keep_alive is None or expiry is None:
        return True
    seconds = _catalog.keep_alive_seconds(keep_alive)
    if seconds is None:
        return expiry - now >= FOR_GOOD
    return expiry - now <= datetime.timedelta(seconds=seconds) + CLOCK_SKEW


def load_plan(wanted, loaded, keep_alive, now):
    """The models to load (in the order asked): not loaded, or loaded with an expiry ``keep_alive`` contradicts."""
    todo, seen = [], set()
    for name in wanted:
        key = canonical(name)
        if key in seen:
            continue
        seen.add(key)
        if key not in loaded or not _kept_as_asked(loaded[key], keep_alive, now):
            todo.append(name)
    return todo


def load_outcome(status, text):
    """(ok, message) of a load request (``POST /api/generate`` with no prompt)."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return False, str(body["error"]).strip().splitlines()[0][:200]
    if status != 200:
        first = (text or "").strip().splitlines()
        return False, "%s: %s" % (status, first[0][:200] if first else "no body")
    if isinstance(body, dict) and body.get("done"):
        return True, "loaded"
    return False, "Ollama's answer did not say the model is loaded: %s" % (text or "").strip()[:200]

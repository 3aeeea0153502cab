# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU mode switches as Prometheus metrics, counted from the Events every
switch records on the vLLM Deployment (whoever made it: gpu_mode, the GPU host's
``gpu-mode`` command, the boot service). Pure: the exporter (_gpu_mode_exporter)
feeds it what it reads from the API and serves what it renders.

Metrics, in the Prometheus text format 0.0.4:
- ``inference_gpu_mode{mode}``: 1 for the mode the Deployment is in, 0 for the
  catalog's other modes (``unknown`` when it cannot be told);
- ``inference_gpu_mode_switches_total{from,to,result}``: result is switched,
  rolled_back or failed (a failure is every result but switched);
- ``inference_gpu_mode_switch_phase_seconds{phase}``: a histogram of each
  phase's seconds (lock, warm, drain, patch, rollout, verify, rollback_..., total);
- ``inference_gpu_mode_drained_requests_total``: requests that drains let finish
  on the vLLM pod being replaced (the most each drain saw running or waiting);
- ``inference_gpu_mode_last_switch_timestamp_seconds``.

Counters start at 0 when the exporter starts: the Events already there then
(kube-apiserver keeps them an hour, --event-ttl) are its baseline, not counted,
so a restarted exporter never counts a switch twice (Prometheus's rate() and
increase() take a counter's reset in their stride)."""

from __future__ import annotations

import datetime
import json

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A switch's phases last from milliseconds (patch) to minutes (a cold load, a drain).
BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
REASON_RESULTS = _gpu_mode.RESULTS


def switch_of(event):
    """(key, record) of one switch's Event, or None for another Event. The record is the Event's
    SWITCH_ANNOTATION; an Event written without it (an older collection) still counts, by its reason."""
    if (event.get("source") or {}).get("component") != _gpu_mode.EVENT_SOURCE or \
            event.get("reason") not in REASON_RESULTS:
        return None
    metadata = event.get("metadata") or {}
    try:
        record = json.loads((metadata.get("annotations") or {}).get(_gpu_mode.SWITCH_ANNOTATION) or "{}")
    except ValueError:
        record = {}
    if not isinstance(record, dict):
        record = {}
    record.setdefault("result", REASON_RESULTS[event["reason"]])
    record["at"] = _stamp(event.get("lastTimestamp") or event.get("firstTimestamp"))
    return metadata.get("uid") or metadata.get("name"), record


def _stamp(text):
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


class SwitchMetrics:
    """The counters, fed the switch Events listed at each scrape."""

    def __init__(self):
        self.seen = None          # the keys of the Events counted or taken as the baseline
        self.switches = {}        # (from, to, result) -> count
        self.phases = {}          # phase -> [count per bucket..., +Inf count, sum]
        self.drained = 0
        self.last_switch = None

    def observe(self, events):
        """Count the switches among ``events`` not seen before; the first call only takes the baseline."""
        found = dict(item for item in (switch_of(e) for e in events) if item)
        for record in found.values():
            if record["at"] is not None and (self.last_switch is None or record["at"] > self.last_switch):
                self.last_switch = record["at"]
        if self.seen is not None:
            for key, record in found.items():
                if key not in self.seen:
                    self._count(record)
        # Events expire: remembering only what is listed now keeps this small.
        self.seen = set(found)

    def _count(self, record):
        key = (str(record.get("from") or "unknown"), str(record.get("to") or "unknown"), str(record["result"]))
        self.switches[key] = self.switches.get(key, 0) + 1
        for phase, seconds in sorted((record.get("seconds") or {}).items()):
            if not isinstance(seconds, (int, float)):
                continue
            row = self.phases.setdefault(str(phase), [0] * (len(BUCKETS) + 1) + [0.0])
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    row[index] += 1
            row[len(BUCKETS)] += 1
            row[-1] += seconds
        if isinstance(record.get("drained"), int):
            self.drained += record["drained"]


def _labels(**labels):
    return "{%s}" % ",".join('%s="%s"' % (k, str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
                             for k, v in labels.items())


def _number(value):
    return repr(float(value)) if isinstance(value, float) else str(value)


def render(metrics, modes, current):
    """The exposition text: ``modes`` the catalog's mode names, ``current`` the Deployment's mode or None."""
    lines = ["# HELP inference_gpu_mode The GPU mode the vLLM Deployment is in (1), and the catalog's others (0).",
             "# TYPE inference_gpu_mode gauge"]
    for mode in modes:
        lines.append("inference_gpu_mode%s %d" % (_labels(mode=mode), mode == current))
    if current not in modes:
        lines.append("inference_gpu_mode%s 1" % _labels(mode="unknown"))
    lines += ["# HELP inference_gpu_mode_switches_total GPU mode switches since the exporter started, by outcome "
              "(switched, rolled_back, failed).",
              "# TYPE inference_gpu_mode_switches_total counter"]
    for (source, target, result), count in sorted(metrics.switches.items()):
        lines.append("inference_gpu_mode_switches_total%s %d" % (_labels(**{"from": source, "to": target,
                                                                            "result": result}), count))
    lines += ["# HELP inference_gpu_mode_switch_phase_seconds Seconds each phase of a GPU mode switch took.",
              "# TYPE inference_gpu_mode_switch_phase_seconds histogram"]
    for phase, row in sorted(metrics.phases.items()):
        for bound, count in zip(BUCKETS + ("+Inf",), row):
            lines.append("inference_gpu_mode_switch_phase_seconds_bucket%s %d"
                         % (_labels(phase=phase, le=bound), count))
        lines.append("inference_gpu_mode_switch_phase_seconds_sum%s %s" % (_labels(phase=phase), _number(row[-1])))
        lines.append("inference_gpu_mode_switch_phase_seconds_count%s %d" % (_labels(phase=phase), row[len(BUCKETS)]))
    lines += ["# HELP inference_gpu_mode_drained_requests_total Requests the switches' drains let finish on the "
              "vLLM pod being replaced.",
              "# TYPE inference_gpu_mode_drained_requests_total counter",
              "inference_gpu_mode_drained_requests_total %d" % metrics.drained]
    if metrics.last_switch is not None:
        lines += ["# HELP inference_gpu_mode_last_switch_timestamp_seconds When the last recorded switch ended.",
                  "# TYPE inference_gpu_mode_last_switch_timestamp_seconds gauge",
                  "inference_gpu_mode_last_switch_timestamp_seconds %s" % _number(float(metrics.last_switch))]
    return "\n".join(lines) + "\n"

"""The switch metrics, counted from the Events switches record, read back with Prometheus's own Python
client's parser (prometheus-client), so the text is what a Prometheus scrape accepts."""

from __future__ import annotations

import datetime
import json

from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode, _gpu_mode_metrics

MODES = ["ml", "r1", "gaming"]
INVOLVED = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm-server", "namespace": "ml"}


def event(reason, source, target, seconds, drained=None, at=0):
    now = datetime.datetime(2026, 12, 1, 10, 0, at, tzinfo=datetime.timezone.utc)
    record = _gpu_mode.switch_record(source, target, "me@host/1", seconds, drained, reason)
    return _gpu_mode.switch_event(INVOLVED, reason, "text for people", reason == "GpuModeSwitched", now, record)


def samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_switches_before_the_start_are_the_baseline_and_later_ones_are_counted():
    metrics = _gpu_mode_metrics.SwitchMetrics()
    old = event("GpuModeSwitched", "ml", "r1", {"rollout": 40.0, "total": 41.0}, drained=2, at=1)
    metrics.observe([old])
    assert metrics.switches == {} and metrics.drained == 0
    new = [event("GpuModeSwitched", "r1", "gaming", {"drain": 1.5, "rollout": 3.0, "total": 4.7}, drained=3, at=2),
           event("GpuModeRolledBack", "gaming", "ml", {"rollout": 700.0, "total": 701.0}, at=3)]
    metrics.observe([old] + new)
    metrics.observe([old] + new)  # listed again at the next scrape: not counted twice
    got = samples(_gpu_mode_metrics.render(metrics, MODES, "ml"))
    assert got[("inference_gpu_mode_switches_total", (("from", "r1"), ("result", "switched"), ("to", "gaming")))] == 1
    assert got[("inference_gpu_mode_switches_total", (("from", "gaming"), ("result", "rolled_back"), ("to", "ml")))] == 1
    assert not any(k[0] == "inference_gpu_mode_switches_total" and ("from", "ml") in k[1] for k in got)
    assert got[("inference_gpu_mode_drained_requests_total", ())] == 3
    assert got[("inference_gpu_mode_switch_phase_seconds_count", (("phase", "total"),))] == 2
    assert got[("inference_gpu_mode_switch_phase_seconds_sum", (("phase", "total"),))] == 705.7
    # 4.7 s falls in le=5, 701 s only in +Inf
    assert got[("inference_gpu_mode_switch_phase_seconds_bucket", (("le", "2.5"), ("phase", "total")))] == 0
    assert got[("inference_gpu_mode_switch_phase_seconds_bucket", (("le", "5.0"), ("phase", "total")))] == 1
    assert got[("inference_gpu_mode_switch_phase_seconds_bucket", (("le", "600.0"), ("phase", "total")))] == 1
    assert got[("inference_gpu_mode_switch_phase_seconds_bucket", (("le", "+Inf"), ("phase", "total")))] == 2
    assert got[("inference_gpu_mode_switch_phase_seconds_count", (("phase", "drain"),))] == 1
    assert got[("inference_gpu_mode_last_switch_timestamp_seconds", ())] == datetime.datetime(
        2026, 12, 1, 10, 0, 3, tzinfo=datetime.timezone.utc).timestamp()


def test_the_mode_gauge_names_the_current_mode_or_unknown():
    metrics = _gpu_mode_metrics.SwitchMetrics()
    metrics.observe([])
    got = samples(_gpu_mode_metrics.render(metrics, MODES, "r1"))
    assert [got[("inference_gpu_mode", (("mode", m),))] for m in MODES] == [0, 1, 0]
    assert ("inference_gpu_mode", (("mode", "unknown"),)) not in got
    got = samples(_gpu_mode_metrics.render(metrics, MODES, None))
    assert got[("inference_gpu_mode", (("mode", "unknown"),))] == 1 and got[("inference_gpu_mode", (("mode", "ml"),))] == 0
    assert ("inference_gpu_mode_last_switch_timestamp_seconds", ()) not in got


def test_other_events_are_ignored_and_an_event_without_the_annotation_counts_by_its_reason():
    metrics = _gpu_mode_metrics.SwitchMetrics()
    metrics.observe([])
    plain = event("GpuModeSwitchFailed", "ml", "gaming", {})
    del plain["metadata"]["annotations"]
    other = dict(event("GpuModeSwitched", "ml", "r1", {}), source={"component": "deployment-controller"})
    scaled = dict(event("GpuModeSwitched", "ml", "r1", {}), reason="ScalingReplicaSet")
    metrics.observe([plain, other, scaled])
    assert metrics.switches == {("unknown", "unknown", "failed"): 1}


def test_a_broken_annotation_or_odd_values_do_not_stop_the_count():
    metrics = _gpu_mode_metrics.SwitchMetrics()
    metrics.observe([])
    broken = event("GpuModeSwitched", "ml", "r1", {})
    broken["metadata"]["annotations"][_gpu_mode.SWITCH_ANNOTATION] = "{not json"
    odd = event("GpuModeSwitched", "ml", "r1", {"total": "slow", "rollout": 2})
    odd["metadata"]["name"] += "x"
    metrics.observe([broken, odd])
    assert metrics.switches == {("unknown", "unknown", "switched"): 1, ("ml", "r1", "switched"): 1}
    assert list(metrics.phases) == ["rollout"]


def test_label_values_are_escaped():
    metrics = _gpu_mode_metrics.SwitchMetrics()
    metrics.observe([])
    record = event("GpuModeSwitched", 'a"b\\c', "r1", {})
    metrics.observe([record])
    got = samples(_gpu_mode_metrics.render(metrics, MODES, "r1"))
    assert got[("inference_gpu_mode_switches_total", (("from", 'a"b\\c'), ("result", "switched"), ("to", "r1")))] == 1


def test_the_record_on_the_event_is_compact_json():
    record = event("GpuModeSwitched", None, "r1", {"total": 1.0})["metadata"]["annotations"][_gpu_mode.SWITCH_ANNOTATION]
    assert json.loads(record) == {"from": "unknown", "to": "r1", "by": "me@host/1", "result": "switched",
                                  "seconds": {"total": 1.0}, "drained": None}
    assert " " not in record

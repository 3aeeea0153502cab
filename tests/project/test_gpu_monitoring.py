"""The gpu_monitoring role on a converged lab: the GPU mode exporter runs as shipped (the official Python
image's command, the module's code from its ConfigMap, the pod's ServiceAccount over TLS), counts the
switches gpu_mode.yml makes, with their phases and outcomes, asks the API only what its Role grants, and
the FAKE DCGM exporter shows the GPU's memory follow the mode."""

from __future__ import annotations

import json
import os
import re
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from helpers import ansible_playbook, gpu_mode_result
from lab_fixture import call, start_lab, wait_for
from test_gpu_mode_rbac import attributes, rule_allows

MONITORING = ("-e", "inference_monitoring=true", "-e", "gpu_monitoring_dcgm_exporter=true")


def scrape(lab, namespace, service):
    """{(name, labels): value} of a /metrics, through the API server's service proxy, as Prometheus reads it."""
    url = "http://127.0.0.1:%d/api/v1/namespaces/%s/services/%s/proxy/metrics" % (lab.port, namespace, service)
    with urllib.request.urlopen(url, timeout=30) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def switches(samples):
    return {dict(labels)["from"] + ">" + dict(labels)["to"] + ":" + dict(labels)["result"]: value
            for (name, labels), value in samples.items() if name == "inference_gpu_mode_switches_total"}


def mode(samples):
    return [dict(labels)["mode"] for (name, labels), value in samples.items()
            if name == "inference_gpu_mode" and value == 1]


def gpu_used(lab):
    return [v for (name, labels), v in scrape(lab, "kube-system", "dcgm-exporter:9400").items()
            if name == "DCGM_FI_DEV_FB_USED"]


def exporter_ready(lab):
    pods = lab.store.list("pods", "ml", label_selector="app.kubernetes.io/name=gpu-mode-exporter")
    return [p for p in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                   for c in (p.get("status") or {}).get("conditions") or [])]


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    base = tmp_path_factory.mktemp("monitoring")
    lab = start_lab(base, load_delay=0.5)
    os.makedirs(str(base / "tmp"))
    env = {"LAB_STATE_DIR": lab.state_dir, "TMPDIR": str(base / "tmp")}
    try:
        converge = ansible_playbook("site.yml", "--skip-tags", "verify", *MONITORING, env=env)
        assert converge.returncode == 0, converge.stdout[-3000:]
        again = ansible_playbook("site.yml", "--tags", "gpu_monitoring", *MONITORING, env=env)
        seen = {"before": scrape(lab, "ml", "gpu-mode-exporter:9102"), "gpu_ml": gpu_used(lab), "results": {},
                "dcgm": scrape(lab, "kube-system", "dcgm-exporter:9400"),
                "dashboard": lab.store.get("configmaps", "ml", "gpu-mode-exporter-dashboard")}
        lab.api.request_log = []
        for target in ("r1", "gaming"):
            seen["results"][target] = gpu_mode_result(env, target)
        # DCGM samples every 30 s (its -c default): the freed memory shows within one interval.
        seen["gpu_gaming"] = wait_for(lambda: [v for v in gpu_used(lab) if v <= 1024], 45, 1)
        lab.faults["fail_models"]["vllm-qwen"] = "oom"
        seen["results"]["failed"] = gpu_mode_result(env, "ml")   # rolled back to gaming
        lab.faults["fail_models"].pop("vllm-qwen")
        seen["results"]["ml"] = gpu_mode_result(env, "ml")
        seen["after"] = scrape(lab, "ml", "gpu-mode-exporter:9102")
        seen["log"], lab.api.request_log = lab.api.request_log, None
        # A new exporter pod: what is recorded already is its baseline, not counted again.
        [pod] = exporter_ready(lab)
        call(lab, "DELETE", "/api/v1/namespaces/ml/pods/%s" % pod["metadata"]["name"])
        wait_for(lambda: [p for p in exporter_ready(lab) if p["metadata"]["name"] != pod["metadata"]["name"]], 60)
        seen["restarted"] = scrape(lab, "ml", "gpu-mode-exporter:9102")
        seen["again"] = again
        yield seen
    finally:
        lab.stop()


def test_the_role_applies_once_and_then_changes_nothing(monitored):
    assert monitored["again"].returncode == 0
    assert "changed=0" in monitored["again"].stdout and "failed=0" in monitored["again"].stdout


def test_the_exporter_shows_the_mode_and_no_switch_after_the_converge(monitored):
    assert mode(monitored["before"]) == ["ml"]
    assert switches(monitored["before"]) == {}
    assert monitored["before"][("inference_gpu_mode_drained_requests_total", ())] == 0


def test_each_switch_is_counted_by_outcome(monitored):
    results = monitored["results"]
    assert [results[k]["mode"] for k in ("r1", "gaming", "failed", "ml")] == ["r1", "gaming", "gaming", "ml"]
    assert results["failed"]["rolled_back"] is True
    assert switches(monitored["after"]) == {"ml>r1:switched": 1, "r1>gaming:switched": 1,
                                            "gaming>ml:rolled_back": 1, "gaming>ml:switched": 1}
    assert mode(monitored["after"]) == ["ml"]


def test_the_phase_times_are_the_switches_own(monitored):
    after = monitored["after"]
    totals = [r["timings"]["total"] for r in monitored["results"].values()]
    assert after[("inference_gpu_mode_switch_phase_seconds_count", (("phase", "total"),))] == 4
    assert after[("inference_gpu_mode_switch_phase_seconds_sum", (("phase", "total"),))] == pytest.approx(sum(totals))
    # a rollout that failed is not timed as one; the rolled-back switch's second rollout is timed on its own
    rollouts = [r["timings"].get("rollout", 0) for r in monitored["results"].values()]
    assert after[("inference_gpu_mode_switch_phase_seconds_sum", (("phase", "rollout"),))] == pytest.approx(
        sum(rollouts))
    phases = {dict(labels)["phase"]: value for (name, labels), value in after.items()
              if name == "inference_gpu_mode_switch_phase_seconds_count"}
    assert phases.get("rollback_rollout") == 1, (phases, monitored["results"]["failed"]["msg"])
    drained = sum(r.get("drained") or 0 for r in monitored["results"].values())
    assert after[("inference_gpu_mode_drained_requests_total", ())] == drained


def test_a_restarted_exporter_counts_from_zero_and_not_twice(monitored):
    assert switches(monitored["restarted"]) == {}
    assert mode(monitored["restarted"]) == ["ml"]
    assert monitored["restarted"][("inference_gpu_mode_last_switch_timestamp_seconds", ())] == \
        monitored["after"][("inference_gpu_mode_last_switch_timestamp_seconds", ())]


def test_the_exporter_asks_only_what_its_role_grants(monitored, tmp_path):
    """The exporter's requests at a scrape - listing the Events and reading the vLLM Deployment (which
    gpu_mode.yml reads too, under the same right) - are each allowed by the shipped Role."""
    ansible_playbook("playbooks/deploy.yml", "--tags", "render", "-e", "render_dir=%s" % tmp_path, *MONITORING,
                     check=True)
    with open(str(tmp_path / "gpu-monitoring.yaml")) as handle:
        role = next(o for o in yaml.safe_load_all(handle) if o and o["kind"] == "Role")
    exporter = [attributes(m, p, q) for m, p, q in monitored["log"]
                if p.startswith("/api/v1/namespaces/ml/events") and m == "GET" or
                p == "/apis/apps/v1/namespaces/ml/deployments/vllm-server" and m == "GET"]
    event_lists = [r for r in exporter if r["resource_name"] == "events"]
    assert event_lists, "the exporter was scraped while the switches ran"
    for request in exporter:
        assert request["namespace"] == role["metadata"]["namespace"]
        assert any(rule_allows(rule, request) for rule in role["rules"]), request


def test_the_fake_dcgm_exporter_shows_the_gpu_memory_follow_the_mode(monitored):
    [in_ml] = monitored["gpu_ml"]
    [in_gaming] = monitored["gpu_gaming"]
    assert in_ml > 10000 and in_gaming <= 1024, (in_ml, in_gaming)


def test_the_dashboards_gpu_panels_ask_for_what_the_dcgm_exporter_serves(monitored):
    dashboard = json.loads(monitored["dashboard"]["data"]["gpu-modes.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"] if "DCGM_" in t["expr"]]
    asked = {name for expr in exprs for name in re.findall(r"\b(DCGM_FI_\w+)", expr)}
    served = {name: dict(labels) for (name, labels) in monitored["dcgm"]}
    assert asked and asked <= set(served), asked - set(served)
    grouped = {label for expr in exprs for by in re.findall(r"by \(([^)]*)\)", expr) for label in by.split(", ")}
    for name in asked:
        assert grouped <= set(served[name]), (name, grouped, served[name])

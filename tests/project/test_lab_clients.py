"""kubernetes.core's modules run against the lab unchanged."""

from __future__ import annotations

import json

from helpers import ansible_playbook
from lab_fixture import call, start_lab


def test_kubernetes_core_modules_work_against_the_lab(tmp_path):
    lab = start_lab(tmp_path)
    try:
        report = tmp_path / "report.json"
        ansible_playbook("tests/project/playbooks/lab_clients.yml", "-e",
                         "kubeconfig=%s/kubeconfig" % lab.state_dir, "-e", "report=%s" % report, check=True)
        result = json.loads(report.read_text())
        assert result == {"dry": True, "first": True, "second": False, "ready": 1, "found": ["web"],
                          "scaled": True, "replicas": 0, "deleted": True}
        assert call(lab, "GET", "/apis/apps/v1/namespaces/clients/deployments/web")[0] == 404
    finally:
        lab.stop()

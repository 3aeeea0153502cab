"""The boot mode's wait: the node must show this boot (its kubelet's bootID) and Ready, because a rebooted
node shows its last boot's status, Ready included, until its kubelet posts again."""

from __future__ import annotations

import json

import pytest

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode_boot, _gpu_mode_cli
from ansible_collections.homelab.inference.plugins.module_utils._api_errors import KubeError

BOOT = "5a8f0c1e-0000-4000-8000-000000000002"
LAST_BOOT = "5a8f0c1e-0000-4000-8000-000000000001"


def node(boot_id, ready="True"):
    return {"metadata": {"name": "gpu-1"},
            "status": {"nodeInfo": {"bootID": boot_id},
                       "conditions": [{"type": "Ready", "status": ready, "message": "kubelet is posting ready status"
                                       if ready == "True" else "Kubelet stopped posting node status."}]}}


class Answers:
    """kube.node() answering each of ``answers`` in turn (the last one again), on a clock that sleeps."""

    def __init__(self, *answers):
        self.answers, self.now, self.asked = list(answers), 0.0, 0

    def node(self, name):
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_it_waits_past_the_last_boots_ready_status_and_an_api_not_up_yet():
    kube = Answers(KubeError("reading node gpu-1 at https://10.0.0.2:6443: connection refused"), node(LAST_BOOT),
                   node(BOOT, ready="Unknown"), node(BOOT))
    _gpu_mode_boot.wait_for_this_boot(kube, "gpu-1", BOOT, 60, kube.clock, kube.sleep)
    assert kube.asked == 4 and kube.now == 3 * _gpu_mode_boot.RETRY


def test_a_boot_never_seen_fails_in_one_line_saying_why():
    kube = Answers(node(LAST_BOOT))
    with pytest.raises(_gpu_mode_boot.NotBooted) as raised:
        _gpu_mode_boot.wait_for_this_boot(kube, "gpu-1", BOOT, 20, kube.clock, kube.sleep)
    assert str(raised.value) == ("node gpu-1 did not show this boot within 20s: its kubelet has not reported this "
                                 "boot yet (bootID %s, this boot %s)" % (LAST_BOOT, BOOT))
    assert kube.now == 20


def test_a_refusal_fails_at_once():
    kube = Answers(KubeError("reading node gpu-1 at https://10.0.0.2:6443: 403 Forbidden; grant list on nodes",
                             status=403))
    with pytest.raises(_gpu_mode_boot.NotBooted, match="403 Forbidden"):
        _gpu_mode_boot.wait_for_this_boot(kube, "gpu-1", BOOT, 600, kube.clock, kube.sleep)
    assert kube.asked == 1


def test_a_node_not_registered_and_one_not_ready_are_named():
    assert _gpu_mode_boot.node_state(None, BOOT) == "not registered"
    assert _gpu_mode_boot.node_state(node(BOOT, "False"), BOOT) == "not Ready: Kubelet stopped posting node status."
    assert _gpu_mode_boot.node_state(node(BOOT), BOOT) is None


@pytest.mark.parametrize("boot, expected", [
    ({"policy": "sometimes"}, "boot.policy: 'sometimes' is not a boot policy; use default (enter the default "
                              "mode) or keep"),
    ({"policy": "default", "mode": "ml"}, "boot: the default policy needs mode, node and boot_id_file; re-run the "
                                          "role homelab.inference.gpu_mode_host"),
])
def test_a_bad_boot_section_is_one_line_and_exit_code_2(tmp_path, capsys, boot, expected):
    config = tmp_path / "gpu-mode.json"
    config.write_text(json.dumps({"api_server": "http://127.0.0.1:9", "params": {"modes": {}}, "boot": boot}))
    assert _gpu_mode_cli.main(["boot", "--config", str(config)]) == 2
    assert capsys.readouterr().err == "gpu-mode: %s: %s\n" % (config, expected)


def test_keep_asks_nothing_of_the_cluster(tmp_path, capsys):
    config = tmp_path / "gpu-mode.json"
    config.write_text(json.dumps({"api_server": "http://127.0.0.1:9", "params": {"modes": {}},
                                  "boot": {"policy": "keep"}}))
    assert _gpu_mode_cli.main(["boot", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "GPU mode at boot: kept (boot policy keep)\n"


@pytest.mark.parametrize("content, expected", [
    (None, "cannot be read (No such file or directory); install it with the role homelab.inference.gpu_mode_host, "
           "or give --config"),
    ("{", "is not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); re-run the "
          "role homelab.inference.gpu_mode_host"),
    ("{}", ": needs api_server and params; re-run the role homelab.inference.gpu_mode_host"),
])
def test_a_missing_or_broken_configuration_is_one_line(tmp_path, capsys, content, expected):
    config = tmp_path / "gpu-mode.json"
    if content is not None:
        config.write_text(content)
    assert _gpu_mode_cli.main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu-mode: %s" % config) and err.endswith(expected + "\n"), err


def test_an_unreadable_token_names_the_file_and_the_fix(tmp_path, capsys):
    config = tmp_path / "gpu-mode.json"
    (tmp_path / "token").write_text("\n")
    config.write_text(json.dumps({"api_server": "http://127.0.0.1:9", "params": {"modes": {}},
                                  "token_file": str(tmp_path / "token")}))
    assert _gpu_mode_cli.main(["status", "--config", str(config)]) == 2
    assert capsys.readouterr().err == ("gpu-mode: %s: token_file names %s, which is empty; re-run the role "
                                       "homelab.inference.gpu_mode_host\n" % (config, tmp_path / "token"))


def test_a_missing_ca_names_the_file_and_where_k3s_keeps_it(tmp_path, capsys):
    config = tmp_path / "gpu-mode.json"
    config.write_text(json.dumps({"api_server": "https://10.0.0.2:6443", "params": {"modes": {}},
                                  "ca_file": str(tmp_path / "server-ca.crt")}))
    assert _gpu_mode_cli.main(["status", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        "gpu-mode: %s: ca_file names %s, which is not a readable CA certificate (No such file or directory); on a k3s "
        "agent it is /var/lib/rancher/k3s/agent/server-ca.crt once the agent joined\n"
        % (config, tmp_path / "server-ca.crt"))

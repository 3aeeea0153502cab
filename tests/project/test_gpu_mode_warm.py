"""The fallback is warm before the GPU goes, on the lab.

On the reference system a cold load of the CPU tier (qwen2.5:3b on Ollama) took
60 to 164 s, and a switch to `gaming` checked that tier with a 60 s request: a
cold Ollama failed the switch, which rolled back to `ml`. The ollama role now
leaves the chain's model loaded, and gpu_mode warms the tier before it takes
vLLM away.

The lab runs the `realistic` timing profile with every delay scaled by SCALE
(Ollama's cold load: the profile's 90 s), and gpu_mode's time limits get the
same scale: a cold load takes longer than verification may, as on the
reference system."""

from __future__ import annotations

import datetime
import os

import pytest

from helpers import ansible_playbook, gpu_mode_result
from lab.timing_profiles import PROFILES
from lab_fixture import call, start_lab, wait_for

SCALE = 1 / 20
COLD_LOAD = PROFILES["realistic"]["ollama"]["cold_load"] * SCALE   # 90 s -> 4.5 s
VERIFY_TIMEOUT = round(60 * SCALE)                                 # gpu_mode's default, 60 s -> 3 s
WARM_TIMEOUT = round(300 * SCALE)                                  # gpu_mode's default, 300 s -> 15 s
PS = "/api/v1/namespaces/ml/services/ollama:11434/proxy/api/ps"


def gpu_mode(env, mode, *extra):
    return gpu_mode_result(env, mode, *extra)


def loaded(lab):
    """Ollama's own list of the models in memory: name -> expiry."""
    status, body = call(lab, "GET", PS)
    assert status == 200, body
    return {m["name"]: m["expires_at"] for m in body["models"]}


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    base = tmp_path_factory.mktemp("warm")
    assert VERIFY_TIMEOUT < COLD_LOAD < WARM_TIMEOUT
    lab = start_lab(base, load_delay=None, profile="realistic", time_scale=SCALE)
    os.makedirs(str(base / "tmp"))
    env = {"LAB_STATE_DIR": lab.state_dir, "TMPDIR": str(base / "tmp")}
    try:
        # verify.yml's checks are not the point here (the lab scenario runs them).
        result = ansible_playbook("site.yml", "--skip-tags", "verify", env=env)
        assert result.returncode == 0, result.stdout[-3000:]
        yield {"lab": lab, "env": env}
    finally:
        lab.stop()


def test_site_yml_leaves_the_fallback_model_loaded_for_good(converged):
    expiry = loaded(converged["lab"])["qwen2.5:3b"]
    # keep_alive -1: Ollama lists it as expiring centuries on
    assert int(expiry[:4]) > datetime.datetime.now().year + 100, expiry


def test_a_cold_ollama_does_not_fail_a_switch_to_gaming(converged):
    lab, env = converged["lab"], converged["env"]
    # Ollama restarts (a node reboot, a new pod): nothing is loaded any more.
    assert call(lab, "POST", "/lab/kill", {"namespace": "ml", "app": "ollama"})[1]["killed"]
    wait_for(lambda: call(lab, "GET", PS)[0] == 200 and loaded(lab) == {}, timeout=60, interval=0.2)

    result = gpu_mode(env, "gaming", "-e", "gpu_mode_verify_timeout=%d" % VERIFY_TIMEOUT,
                      "-e", "gpu_mode_warm_timeout=%d" % WARM_TIMEOUT)
    assert not result.get("failed"), result.get("msg")
    assert (result["changed"], result["mode"], result["rolled_back"]) == (True, "gaming", False)
    assert result["invocation"]["module_args"]["verify_timeout"] == VERIFY_TIMEOUT
    assert result["invocation"]["module_args"]["warm_timeout"] == WARM_TIMEOUT
    # warmed through LiteLLM by the CPU tier itself, before vLLM went; then verified
    assert result["warmed"] == {"model": "ollama-qwen", "status": 200, "answered_by": "ollama-qwen"}
    assert result["verified"]["litellm"]["answered_by"] == "ollama-qwen"
    assert result["verified"]["vllm_pods"] == 0
    assert "warm" in result["timings"]
    assert "qwen2.5:3b" in loaded(lab)

    back = gpu_mode(env, "ml")
    assert not back.get("failed"), back.get("msg")
    assert back["changed"] is True and "warmed" not in back, "from a GPU-free mode there is nothing to warm"

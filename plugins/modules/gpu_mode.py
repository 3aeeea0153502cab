#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: gpu_mode
short_description: Switch the GPU worker between modes (vLLM models, or GPU free), verified and reversible
version_added: 0.1.0
author:
  - homelab.inference maintainers (@homelab-inference)
description:
  - Puts the vLLM Deployment into a GPU mode from the catalog's mode table - a mode that loads one vLLM model, or a
    GPU-free mode (0 replicas) - and proves it worked.
  - Reads the current mode from the Deployment (0 replicas is the GPU-free mode; otherwise the recorded
    C(homelab.inference/gpu-mode) label, cross-checked with the C(--served-model-name) argument).
  - Already in the mode, rolled out and verified - C(changed=false), no write.
  - Otherwise takes a lock (a C(coordination.k8s.io/v1) Lease with holder and expiry; an expired lease is taken over,
    a live one is waited for up to O(lock_timeout)), applies the mode with one patch, waits for the rollout (failing
    fast with the pod's reason - OOMKilled, CrashLoopBackOff, ImagePullBackOff, Pending for lack of a free GPU), verifies,
    and releases the lock whatever happens.
  - Before a switch that takes away the model vLLM serves (to a GPU-free mode, or to another model), it warms the
    fallback tier - a 1-token request for O(gpu_free_model) through LiteLLM, answered by that tier itself, within
    O(warm_timeout) - and only then patches. A cold CPU tier loads on its first request, which takes minutes; without
    this, that load would land on the clients and on the verification. A tier that cannot be warmed fails the switch
    before vLLM is touched, with nothing changed.
  - Verification - vLLM's C(/v1/models) lists exactly the mode's model and LiteLLM answers a 1-token request for it
    from vLLM itself; in a GPU-free mode, the vLLM pods are gone, no pod on the GPU node holds C(nvidia.com/gpu), the
    driver shows at most O(gpu_free_max_mib) used, and LiteLLM still answers O(gpu_free_model).
  - The driver is asked by C(nvidia-smi) in a short pod of the vLLM image on the GPU node (C(<deployment>-gpu-free-check),
    removed afterwards), with C(NVIDIA_VISIBLE_DEVICES=all), the Deployment's runtime class, node selector and
    tolerations, and C(hostPID) so that nvidia-smi can name the host's processes.
  - Before the Deployment changes, vLLM is drained - its Service is pointed at the new mode's pods (label
    C(homelab.inference/gpu-mode)), so new connections to the old pod are refused and the gateway falls back from it at
    once, while the requests it runs finish. The pod is replaced once its C(/metrics) (read through the API server's
    pod proxy) shows no request running or waiting, and at least O(drain_settle) seconds have passed for the gateway's
    probes to stop sending to it; at the latest after O(drain_timeout). The new mode's pod joins the Service when
    ready.
  - Each switch it made or tried is recorded as an Event on the vLLM Deployment (C(kubectl describe deployment)) -
    reason C(GpuModeSwitched), C(GpuModeRolledBack) or C(GpuModeSwitchFailed), and a message with the modes, who
    switched, each phase's seconds and the outcome. An Event that cannot be written is a warning, not a failure.
  - On failure it rolls back to the previous mode when O(rollback) is true, verifies that, and fails saying both. A
    GPU-free mode whose GPU memory stays held is not rolled back, as vLLM could not load beside it; the failure names
    the processes holding it.
  - Endpoints are reached through the Kubernetes API's service proxy, or at O(vllm_url) and O(litellm_url) when given.
extends_documentation_fragment:
  - homelab.inference.attributes
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    details: Reads the Deployment and reports the switch that would happen; takes no lock and writes nothing.
  diff_mode:
    support: full
    details: The mode and model before and after.
  idempotent:
    support: full
options:
  mode:
    description:
      - The mode to switch to, a key of O(modes); or V(status) to report the current mode and change nothing.
    type: str
    required: true
  modes:
    description:
      - The mode table, as the C(homelab.inference.gpu_mode_table) filter builds it from the catalog - each mode maps
        to C(vllm_model) (the served model name, or null for a GPU-free mode) and C(args) (the vLLM container's
        arguments in that mode, or null).
    type: dict
    required: true
  namespace:
    description: Namespace of the vLLM Deployment, its pods and the lock.
    type: str
    default: ml
  deployment:
    description: Name of the vLLM Deployment.
    type: str
    default: vllm-server
  container:
    description: Name of the vLLM container in the Deployment.
    type: str
    default: vllm
  rollout_timeout:
    description: Seconds to wait for the new mode's pod to be ready (a model load takes minutes on a first download).
    type: int
    default: 600
  rollback:
    description: On a failed switch, switch back to the previous mode and verify it.
    type: bool
    default: true
  verify:
    description: Verify the mode through vLLM and LiteLLM (and the GPU node, for a GPU-free mode).
    type: bool
    default: true
  verify_timeout:
    description:
      - Seconds verification may take, each of its requests included. LiteLLM may skip a tier it found down for its
        cooldown, so a check through it is retried until then.
      - The playbook C(gpu_mode.yml) takes it as C(gpu_mode_verify_timeout).
    type: int
    default: 60
  warm_timeout:
    description:
      - Seconds the fallback tier (O(gpu_free_model)) may take to answer through LiteLLM before a switch takes away
        the model vLLM serves; a cold load of the CPU tier took up to 164 s on the reference system. Asked again
        until then, each request bounded by the time left.
      - The tier's own timeout in LiteLLM (the catalog's C(timeout)) must cover a cold load too - Ollama abandons a
        load whose request goes away.
      - The playbook C(gpu_mode.yml) takes it as C(gpu_mode_warm_timeout).
    type: int
    default: 300
  drain_timeout:
    description:
      - Seconds the vLLM pod being replaced may take to finish the requests it runs; those still running then are cut
        (a warning says how many). V(0) replaces it at once.
      - The playbook C(gpu_mode.yml) takes it from the catalog's C(inference_gpu_drain_timeout).
    type: int
    default: 120
  drain_settle:
    description:
      - Seconds a drain waits at least after taking vLLM out of its Service, for the gateway to stop sending to it -
        LiteLLM's probe sees refused connections within one probe interval plus its retries.
      - The playbook C(gpu_mode.yml) derives it from C(litellm_probe_interval).
    type: float
    default: 3.0
  gpu_node_selector:
    description: Label selector of the GPU node(s), checked for pods holding C(nvidia.com/gpu) in a GPU-free mode.
    type: str
    default: nvidia.com/gpu=true
  gpu_free_max_mib:
    description:
      - In a GPU-free mode, the most GPU memory (MiB) the driver may show used for the GPU to count as free. A display
        on the card takes a few hundred MiB; a vLLM that did not let go holds gigabytes (O(gpu_free_max_mib) of a 12 GB
        card at its default C(--gpu-memory-utilization) 0.9 is 11059).
      - V(-1) skips the check, and with it the check pod (a cluster that forbids C(hostPID) pods).
      - The playbook C(gpu_mode.yml) takes it from the catalog's C(inference_gpu_free_max_mib).
    type: int
    default: 1024
  gpu_free_model:
    description:
      - Model asked through LiteLLM to verify a GPU-free mode, and to warm before a switch takes away vLLM's model -
        the chain's first tier off the GPU, for example the CPU tier V(ollama-qwen). Empty skips both. Asking a chain
        head that falls back (V(default)) would put the vLLM tier in LiteLLM's cooldown and slow the next switch back.
    type: str
    default: ""
  vllm_service:
    description: Service in front of vLLM, in O(namespace).
    type: str
    default: vllm-api
  vllm_port:
    description: Port of the vLLM Service.
    type: int
    default: 8000
  vllm_url:
    description: Reach vLLM at this base URL instead of through the API server's service proxy.
    type: str
  litellm_namespace:
    description: Namespace of the LiteLLM Service.
    type: str
    default: ml
  litellm_service:
    description: Name of the LiteLLM Service; empty skips the check through LiteLLM.
    type: str
    default: litellm
  litellm_port:
    description: Port of the LiteLLM Service.
    type: int
    default: 4000
  litellm_url:
    description: Reach LiteLLM at this base URL instead of through the API server's service proxy.
    type: str
  litellm_api_key:
    description:
      - A LiteLLM key for the verification request, sent as C(x-litellm-api-key) (the API server's proxy does not pass
        C(Authorization) on).
    type: str
  lock_name:
    description: Name of the Lease that serialises switches.
    type: str
    default: gpu-mode
  lock_timeout:
    description: Seconds to wait for another run's live lock before failing with its holder's name.
    type: int
    default: 120
  lock_duration:
    description:
      - Seconds a lock lives without renewal, after which another run may take it over (a crashed run's lock).
        Default - long enough for a warm-up, a switch and a rollback.
    type: int
requirements:
  - kubernetes >= 24.2.0
notes:
  - Polls adaptively (50 ms growing to 250 ms), so a finished rollout is noticed within a quarter of a second.
  - The Kubernetes RBAC rights it needs are granted by the role R(homelab.inference.gpu_mode_access,
    ansible_collections.homelab.inference.gpu_mode_access_role) (off by default); a 403 names the missing one.
seealso:
  - name: The gpu_mode.yml playbook
    description: Switches with the catalog's mode table and prints a summary.
    link: https://example.invalid/homelab/inference/blob/main/gpu_mode.yml
"""

EXAMPLES = r"""
- name: Switch to the reasoning model
  homelab.inference.gpu_mode:
    mode: r1
    modes: "{{ inference_models | homelab.inference.gpu_mode_table(inference_gpu_modes, vllm_common_args, 8000) }}"
    litellm_api_key: "{{ litellm_master_key }}"
    kubeconfig: ~/.kube/config
  register: switched

- name: Free the GPU
  homelab.inference.gpu_mode:
    mode: gaming
    modes: "{{ gpu_mode_table }}"

- name: Which mode is the GPU in?
  homelab.inference.gpu_mode:
    mode: status
    modes: "{{ gpu_mode_table }}"
"""

RETURN = r"""
summary:
  description:
    - The run in one line, as C(gpu_mode.yml) and the GPU host's C(gpu-mode) command print it.
  returned: success
  type: str
  sample: "GPU mode: r1 (vllm-r1), was ml, in 41.2 s; verified: vllm_models, litellm"
mode:
  description: The mode the GPU is in after the run (the previous one after a rollback).
  returned: always
  type: str
  sample: r1
previous_mode:
  description: The mode before the run; null when it could not be told.
  returned: always
  type: str
  sample: ml
model:
  description: The vLLM model served in O(mode); null in a GPU-free mode.
  returned: always
  type: str
  sample: vllm-r1
verified:
  description: What verification checked and saw.
  returned: when verification ran
  type: dict
  sample: {"vllm_models": ["vllm-r1"], "litellm": {"model": "vllm-r1", "status": 200, "answered_by": "vllm-r1"}}
  contains:
    gpu_memory:
      description: In a GPU-free mode, what nvidia-smi showed on the GPU node (absent with O(gpu_free_max_mib=-1)).
      returned: when a GPU-free mode was verified
      type: dict
      sample: {"used_mib": 310, "max_mib": 1024, "processes": [{"pid": 1843, "name": "/usr/lib/xorg/Xorg",
               "used_mib": 304}]}
warmed:
  description: The fallback tier's answer through LiteLLM before vLLM's model was taken away.
  returned: when a switch took away the model vLLM served
  type: dict
  sample: {"model": "ollama-qwen", "status": 200, "answered_by": "ollama-qwen"}
timings:
  description:
    - Seconds spent taking the lock, warming the fallback tier, draining vLLM, patching, waiting for the rollout,
      verifying, and in total.
  returned: when a switch or verification ran
  type: dict
  sample: {"lock": 0.01, "warm": 0.4, "drain": 3.1, "patch": 0.02, "rollout": 91.3, "verify": 0.2, "total": 95.1}
drained:
  description: The most requests the vLLM pod being replaced was seen running or waiting while it drained.
  returned: when a switch replaced a serving vLLM pod
  type: int
  sample: 3
rolled_back:
  description: Whether a failed switch was rolled back to the previous mode.
  returned: always
  type: bool
  sample: false
ready:
  description: With O(mode=status), whether the Deployment is rolled out and available.
  returned: when O(mode=status)
  type: bool
  sample: true
pod_problems:
  description: With O(mode=status), why pods are not becoming ready, if they are not.
  returned: when O(mode=status)
  type: list
  elements: str
  sample: ["pod vllm-server-5d9c: container vllm was OOMKilled (exit code 137)"]
"""

import copy

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode_run
from ansible_collections.homelab.inference.plugins.module_utils._gpu_mode_rights import ROLE as RIGHTS_ROLE
from ansible_collections.homelab.inference.plugins.module_utils._gpu_switch import SwitchFailed
from ansible_collections.homelab.inference.plugins.module_utils._kube_access import KubeAccess, KubeError
from ansible_collections.homelab.inference.plugins.module_utils._service_http import ServiceEndpoint
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule


def argument_spec():
    """The options of DOCUMENTATION; their defaults are _gpu_mode_run.DEFAULTS, shared with the host command."""
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    types = dict(mode=str, modes=dict, vllm_url=str, litellm_url=str, litellm_api_key=str, lock_duration=int)
    spec.update((name, dict(type=kind.__name__)) for name, kind in types.items())
    spec.update((name, dict(type=type(value).__name__, default=value))
                for name, value in _gpu_mode_run.DEFAULTS.items())
    spec["mode"]["required"] = spec["modes"]["required"] = True
    spec["litellm_api_key"]["no_log"] = True
    return spec


def endpoints(module):
    params = module.params
    vllm = ServiceEndpoint(module, params["namespace"], params["vllm_service"], params["vllm_port"], params["vllm_url"],
                           rights_role=RIGHTS_ROLE)
    litellm = None
    if params["litellm_url"] or params["litellm_service"]:
        litellm = ServiceEndpoint(module, params["litellm_namespace"], params["litellm_service"],
                                  params["litellm_port"], params["litellm_url"], rights_role=RIGHTS_ROLE)
    return vllm, litellm


def pod_endpoint(module):
    """A vLLM pod's own endpoint (the pod proxy), for its /metrics while it drains; with O(vllm_url), that URL."""
    params = module.params
    if params["vllm_url"]:
        return lambda pod: ServiceEndpoint(module, params["namespace"], pod, params["vllm_port"], params["vllm_url"])
    return lambda pod: ServiceEndpoint(module, params["namespace"], pod, params["vllm_port"], rights_role=RIGHTS_ROLE,
                                       kind="pods")


def run_module(module, kube_factory=KubeAccess):
    found = _gpu_mode_run.problems(module.params)
    if found:
        module.fail_json(msg="; ".join(found))
    params = _gpu_mode_run.with_lock_duration(module.params)
    try:
        kube = kube_factory(module)
        vllm, litellm = endpoints(module)
        result = _gpu_mode_run.execute(kube, params, vllm, litellm, pod_endpoint(module), module.check_mode,
                                       module.warn)
    except SwitchFailed as failure:
        module.fail_json(msg=str(failure), **failure.result)
    except KubeError as err:
        module.fail_json(msg=str(err))
    if not module._diff:
        result.pop("diff", None)
    result["summary"] = _gpu_mode_run.summary(result, module.check_mode)
    module.exit_json(**result)


def main():
    module = AnsibleK8SModule(argument_spec=argument_spec(), supports_check_mode=True, check_pyyaml=False)
    run_module(module)


if __name__ == "__main__":
    main()

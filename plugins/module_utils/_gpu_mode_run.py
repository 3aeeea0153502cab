# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the gpu_mode module and the GPU host's ``gpu-mode`` command share
around a switch (_gpu_switch): the checks of their input, the lock's defaults,
running it, and the one-line summary both print. Standard library only."""

from __future__ import annotations

import getpass
import os
import socket

from ansible_collections.homelab.inference.plugins.module_utils._gpu_mode import OPERATOR
from ansible_collections.homelab.inference.plugins.module_utils._gpu_switch import GpuModeSwitch

STATUS = "status"

# The switch's parameters with a default: the module's options (its argument spec is built from these) and
# what the host command's configuration may leave out.
DEFAULTS = dict(
    namespace="ml", deployment="vllm-server", container="vllm", rollout_timeout=600, rollback=True, verify=True,
    verify_timeout=60, warm_timeout=300, gpu_node_selector="nvidia.com/gpu=true", gpu_free_max_mib=1024,
    drain_timeout=120, drain_settle=3.0, gpu_free_model="", vllm_service="vllm-api", vllm_port=8000,
    litellm_namespace="ml", litellm_service="litellm", litellm_port=4000, lock_name="gpu-mode", lock_timeout=120)


def table_problems(mode, modes):
    """One-line errors for a bad mode or mode table, before any API call."""
    if not modes:
        return ["modes: the mode table is empty; pass the catalog's, built by the gpu_mode_table filter"]
    problems = []
    for name, entry in modes.items():
        if not isinstance(entry, dict) or "vllm_model" not in entry or "args" not in entry:
            problems.append("modes.%s: needs vllm_model and args (build the table with the gpu_mode_table filter)"
                            % name)
        elif entry["vllm_model"] and not (isinstance(entry["args"], list) and entry["args"]):
            problems.append("modes.%s: a mode with a model needs its container args" % name)
    if mode != STATUS and mode not in modes:
        problems.append("mode: '%s' is not a mode; use one of %s, or status" % (mode, ", ".join(sorted(modes))))
    return problems


def problems(params):
    """Every one-line error in the switch's parameters (the module's options)."""
    found = table_problems(params["mode"], params["modes"])
    for name in ("drain_timeout", "drain_settle"):
        if params[name] < 0:
            found.append("%s: %s is negative; give the seconds, or 0" % (name, params[name]))
    if params["gpu_free_max_mib"] < -1:
        found.append("gpu_free_max_mib: %s is below -1; give the most MiB a free GPU may show used, or -1 to skip "
                     "the check" % params["gpu_free_max_mib"])
    return found


def with_lock_duration(params):
    """The parameters with the lock held, unless given, through the longest switch: a warm-up, a switch and
    its rollback, a minute more."""
    params = dict(params)
    if params.get("lock_duration") is None:
        params["lock_duration"] = (params["warm_timeout"] + 2 * (params["rollout_timeout"] + params["verify_timeout"])
                                   + 60)
    return params


def holder(host=None):
    """Who takes the lock, as the Lease and the switch's Event name it: user@host/pid (``host``: a pod's
    name, which is its hostname in a real pod)."""
    return "%s@%s/%d" % (getpass.getuser(), host or socket.gethostname(), os.getpid())


def execute(kube, params, vllm, litellm, vllm_pod, check_mode, warn, source=OPERATOR, host=None):
    """The switch to ``params["mode"]`` (or its status); ``warn`` gets each warning, also when it fails.
    ``source`` is what kind of switch it is, recorded on the Deployment (_gpu_mode.SOURCES); ``host``
    names where it runs, in its holder identity. Raises _gpu_switch.SwitchFailed or _api_errors.KubeError."""
    switch = GpuModeSwitch(kube, params, vllm, litellm, holder(host), vllm_pod=vllm_pod, source=source)
    if params["mode"] == STATUS:
        return switch.status()
    try:
        return switch.run(check_mode)
    finally:
        for warning in switch.warnings:
            warn(warning)


def summary(result, check_mode=False):
    """The one line a switch ends with, e.g. 'GPU mode: r1 (vllm-r1), was ml, in 41.2 s; verified: vllm_models,
    litellm'."""
    line = "%s: %s (%s)" % ("Would switch the GPU" if check_mode and result.get("changed") else "GPU mode",
                            result["mode"], result.get("model") or "GPU free")
    line += ", was %s" % result["previous_mode"] if result.get("changed") else ", unchanged"
    if "total" in (result.get("timings") or {}):
        line += ", in %s s" % result["timings"]["total"]
    if result.get("verified"):
        line += "; verified: %s" % ", ".join(result["verified"])
    return line

# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU modes: how a vLLM Deployment says which mode it is in. Pure functions."""

from __future__ import annotations

MODE_LABEL = "homelab.inference/gpu-mode"
MODEL_ANNOTATION = "homelab.inference/model"


def served_model_name(deployment):
    """The ``--served-model-name`` of the Deployment's first container, or None."""
    try:
        args = deployment["spec"]["template"]["spec"]["containers"][0].get("args") or []
    except (KeyError, IndexError, TypeError):
        return None
    for index, arg in enumerate(args):
        if arg == "--served-model-name" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--served-model-name="):
            return arg.split("=", 1)[1]
    return None


def mode_of_deployment(deployment, modes):
    """The GPU mode a vLLM Deployment is in, or None when it cannot be told.

    0 replicas means the GPU is released (the first GPU-free mode); otherwise the
    recorded label, when it agrees with the model the container serves; otherwise
    the mode whose model the container serves.
    """
    if not deployment:
        return None
    spec = deployment.get("spec") or {}
    free_modes = [name for name, mode in modes.items() if not mode.get("vllm_model")]
    if spec.get("replicas", 1) == 0:
        return free_modes[0] if free_modes else None
    served = served_model_name(deployment)
    label = ((deployment.get("metadata") or {}).get("labels") or {}).get(MODE_LABEL)
    if label in modes and modes[label].get("vllm_model") == served:
        return label
    matches = [name for name, mode in modes.items() if served and mode.get("vllm_model") == served]
    return matches[0] if matches else None

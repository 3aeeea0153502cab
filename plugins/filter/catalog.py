# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters over the model catalog (validation and derived values)."""

from __future__ import annotations

from ansible_collections.homelab.inference.plugins.module_utils import _catalog, _gpu_mode, _gpu_on_demand


def catalog_errors(models, chain, modes, default_mode, on_demand=None):
    errors = _catalog.catalog_errors(models, chain, modes, default_mode)
    if isinstance(modes, dict) and modes:  # the policy names modes: checked once they are a mapping
        errors += _gpu_on_demand.policy_errors(on_demand, modes, default_mode)
    return errors


def models_of_backend(models, backend):
    return [entry for entry in models if entry["backend"] == backend]


def modes_serving(models, modes):
    """Map each model name to the GPU modes it answers in ('all' when any)."""
    return {
        entry["name"]: (_catalog.modes_serving(entry["name"], modes) if entry["backend"] == "vllm" else ["all"])
        for entry in models
    }


def gpu_mode_table(models, modes, common_args, port):
    """Each GPU mode's vLLM model and container args (shared with the gpu_mode module)."""
    return _gpu_mode.mode_table(models, modes, common_args, port)


def usable_context(models, chain, name):
    """{'tokens': N, 'model': M}: the smallest context among the models that may answer ``name``."""
    tokens, model = _catalog.usable_context(models, chain, name)
    return {"tokens": tokens, "model": model}


def paperless_ai_budget(context, response_tokens):
    """Paperless-AI's TOKEN_LIMIT and RESPONSE_TOKENS for a model path of ``context`` tokens."""
    return _catalog.paperless_ai_budget(context, response_tokens)


def gpu_mode_of(deployment, modes):
    """The GPU mode a vLLM Deployment is in ('' when none can be told)."""
    return _gpu_mode.mode_of_deployment(deployment, modes) or ""


class FilterModule:
    def filters(self):
        return {
            "catalog_errors": catalog_errors,
            "models_of_backend": models_of_backend,
            "modes_serving": modes_serving,
            "gpu_mode_of": gpu_mode_of,
            "gpu_mode_table": gpu_mode_table,
            "usable_context": usable_context,
            "paperless_ai_budget": paperless_ai_budget,
        }

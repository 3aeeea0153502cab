# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that judge what verify.yml saw: each returns summary rows (see _verify)."""

from __future__ import annotations

from ansible_collections.homelab.inference.plugins.plugin_utils import _verify


class FilterModule:
    def filters(self):
        return {
            "verify_gpu_node": _verify.gpu_node,
            "verify_gpu_holders": _verify.gpu_holders,
            "verify_driver": _verify.driver,
            "verify_driver_skipped": _verify.driver_skipped,
            "verify_key_states": _verify.key_states,
            "verify_gateway_plan": _verify.gateway_plan,
            "verify_gateway_rows": _verify.gateway_rows,
            "verify_secret": _verify.secret_placeholder,
            "verify_ollama_models": _verify.ollama_models,
            "verify_paperless": _verify.paperless,
            "verify_table": _verify.table,
            "verify_failures": _verify.failures,
        }

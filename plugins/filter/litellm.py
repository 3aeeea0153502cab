# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn the catalog into LiteLLM's config and the gateway hook's settings."""

from __future__ import annotations

from ansible_collections.homelab.inference.plugins.plugin_utils import _litellm_config


def litellm_config(models, chain, settings):
    return _litellm_config.build_config(models, chain, settings)


def litellm_gateway_settings(models, chain, modes, settings):
    return _litellm_config.build_gateway_settings(models, chain, modes, settings)


class FilterModule:
    def filters(self):
        return {
            "litellm_config": litellm_config,
            "litellm_gateway_settings": litellm_gateway_settings,
            "litellm_client_key_table": _litellm_config.client_key_table,
            "litellm_client_key_errors": _litellm_config.client_key_errors,
        }

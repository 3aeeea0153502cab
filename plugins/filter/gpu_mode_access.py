# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The RBAC rules of the gpu_mode_access role, from the rights the gpu_mode module's calls need."""

from __future__ import annotations

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode_rights


def gpu_mode_rbac_rules(targets):
    """``targets``: the gpu_mode options that name what it touches (namespace, deployment, lock_name,
    vllm_service, vllm_port, litellm_namespace, litellm_service, litellm_port); missing ones take the
    module's defaults. Returns the ClusterRole's rules and each namespace's Role rules."""
    return _gpu_mode_rights.rules(dict(targets))


class FilterModule:
    def filters(self):
        return {"gpu_mode_rbac_rules": gpu_mode_rbac_rules}

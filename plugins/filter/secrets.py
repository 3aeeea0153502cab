# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The preflight's check of the vault's keys (never showing them)."""

from __future__ import annotations

from ansible_collections.homelab.inference.plugins.plugin_utils import _verify


class FilterModule:
    def filters(self):
        return {"secret_errors": _verify.secret_errors}

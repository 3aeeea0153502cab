# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters pairing the NVIDIA driver with the CUDA of the vLLM image (see _cuda_driver)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.homelab.inference.plugins.plugin_utils import _cuda_driver


def vllm_cuda_requirement(image):
    """``image | homelab.inference.vllm_cuda_requirement`` -> ``{"image", "tag", "cuda", "min_driver"}``."""
    try:
        return _cuda_driver.vllm_cuda_requirement(image)
    except ValueError as err:
        raise AnsibleFilterError("vllm_cuda_requirement: %s" % err) from None


def vllm_cuda_requirement_error(image):
    """Why ``vllm_cuda_requirement`` would refuse this image, or ``""``: for a preflight that names its own variable."""
    try:
        _cuda_driver.vllm_cuda_requirement(image)
    except ValueError as err:
        return str(err)
    return ""


def cuda_min_driver(cuda):
    """``"12.8.1" | homelab.inference.cuda_min_driver`` -> ``"570.26"``."""
    try:
        return _cuda_driver.cuda_min_driver(cuda)
    except ValueError as err:
        raise AnsibleFilterError("cuda_min_driver: %s" % err) from None


def driver_satisfies(version, min_driver):
    """``"570.86.15" | homelab.inference.driver_satisfies("570.26")`` -> true; a bare branch (``"580"``) works too."""
    try:
        return _cuda_driver.driver_satisfies(version, min_driver)
    except ValueError as err:
        raise AnsibleFilterError("driver_satisfies: %s" % err) from None


class FilterModule:
    def filters(self):
        return {
            "vllm_cuda_requirement": vllm_cuda_requirement,
            "vllm_cuda_requirement_error": vllm_cuda_requirement_error,
            "cuda_min_driver": cuda_min_driver,
            "driver_satisfies": driver_satisfies,
        }

# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The errors of the GPU mode switch's two boundaries, the Kubernetes API and
the Services it reaches through it. Python's standard library only: the switch
also runs without Ansible (the host's ``gpu-mode`` command, _gpu_mode_cli)."""

from __future__ import annotations


class KubeError(Exception):
    """A failed API call, in one line."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class Conflict(KubeError):
    """409: the object changed or exists already (the caller retries)."""


class ServiceError(Exception):
    """A request that got no usable answer; the message is one line for the user."""

    def __init__(self, message, status=None, timed_out=False):
        super().__init__(message)
        self.status = status
        self.timed_out = timed_out  # connected, then no answer within the timeout: slow, not unreachable


class ServiceForbidden(ServiceError):
    """The API server refused the proxy request (RBAC): asking again cannot help."""

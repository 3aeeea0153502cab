# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP to one in-cluster Service port (or one pod's), through the Kubernetes
API's proxy: what every transport shares - the 403 that names the missing
right, JSON answers, one-line errors. How a request is sent is a subclass's
``_proxied`` (and ``_direct`` for a plain URL): the kubernetes client in the
modules (_service_http), the standard library on the GPU host (_kube_rest)."""

from __future__ import annotations

import json

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode_rights
from ansible_collections.homelab.inference.plugins.module_utils._api_errors import ServiceError, ServiceForbidden


class Endpoint:
    """One Service port, e.g. ``ml/ollama:11434``; with ``kind="pods"`` one pod's port, e.g. a vLLM pod
    already out of its Service. ``url``: straight there instead of through the proxy.

    ``rights_role``: the role shipping the caller's RBAC rights, named when the API server refuses the proxy."""

    def __init__(self, namespace, service, port, url=None, rights_role=None, kind="services"):
        self.namespace = namespace
        self.service = service
        self.port = port
        self.url = url.rstrip("/") if url else None
        self.rights_role = rights_role
        self.kind = kind

    @property
    def label(self):
        return self.url or "%s %s/%s:%s" % (self.kind[:-1], self.namespace, self.service, self.port)

    @property
    def proxy_path(self):
        return "/api/v1/namespaces/%s/%s/%s:%s/proxy/" % (self.namespace, self.kind, self.service, self.port)

    def request(self, method, path, body=None, timeout=30, headers=None):
        """(status, text) of a request; raises ServiceError when nothing usable came back."""
        status, text, dummy = self.exchange(method, path, body, timeout, headers)
        return status, text

    def exchange(self, method, path, body=None, timeout=30, headers=None, follow_redirects=True):
        """(status, text, response headers with lower-case names); with ``follow_redirects`` false a
        redirect is the answer (through the proxy its Location is the proxy's own path)."""
        headers = dict(headers or {}, **{"Content-Type": "application/json"})
        if self.url:
            return self._direct(method, path, json.dumps(body) if body is not None else None, timeout, headers,
                                follow_redirects)
        status, text, response_headers = self._proxied(method, path, body, timeout, headers, follow_redirects)
        if status == 403 and refused_by_api(text):
            name = "%s:%s" % (self.service, self.port)
            right = _gpu_mode_rights.describe(_gpu_mode_rights.HTTP_VERBS.get(method.upper(), method.lower()), "",
                                              self.kind + "/proxy", self.namespace,
                                              name if self.kind == "services" else None)
            raise ServiceForbidden(_gpu_mode_rights.forbidden("%s %s on %s" % (method, path, self.label), right,
                                                              text, self.rights_role), status)
        return status, text, response_headers

    def request_json(self, method, path, body=None, timeout=30, headers=None):
        status, text = self.request(method, path, body, timeout, headers)
        try:
            return status, json.loads(text) if text.strip() else {}
        except ValueError:
            raise ServiceError("%s %s on %s answered %s with a body that is not JSON: %s"
                               % (method, path, self.label, status, text[:200]), status)

    def _direct(self, method, path, data, timeout, headers, follow_redirects=True):
        """(status, text, headers) of ``data`` (serialised JSON) sent to ``url``."""
        raise NotImplementedError

    def _proxied(self, method, path, body, timeout, headers, follow_redirects=True):
        """(status, text, headers) of ``body`` (not serialised) sent through the API server's proxy."""
        raise NotImplementedError


def no_answer(label, timeout):
    return "%s did not answer within %ss" % (label, timeout)


def refused_by_api(text):
    """Whether a 403 is the API server's own refusal (a Status naming the Service), not the backend's answer."""
    try:
        body = json.loads(text)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("kind") == "Status" and body.get("reason") == "Forbidden" \
        and (body.get("details") or {}).get("kind") in ("services", "pods")


def lower(headers):
    return {str(k).lower(): v for k, v in (headers or {}).items()}


def describe_unavailable(endpoint, status, text):
    """One line for a proxy answer that means 'no pod behind the Service'."""
    detail = text.strip().splitlines()[0][:200] if text.strip() else "no body"
    if status == 503:
        return "%s has no ready pod (503: %s)" % (endpoint.label, detail)
    if status == 404:
        return "%s does not exist (404: %s)" % (endpoint.label, detail)
    return "%s answered %s: %s" % (endpoint.label, status, detail)

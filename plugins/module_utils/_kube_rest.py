# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The switch's API calls and Service requests with Python's standard library
only: for the GPU host's ``gpu-mode`` command, which has neither Ansible nor the
kubernetes client. One API server URL, a bearer token (a least-privilege
ServiceAccount's, homelab.inference.gpu_mode_access) and the cluster's CA."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.homelab.inference.plugins.module_utils._api_errors import (Conflict, KubeError,
                                                                                    ServiceError)
from ansible_collections.homelab.inference.plugins.module_utils._kube_calls import SMP, KubeCalls
from ansible_collections.homelab.inference.plugins.module_utils._service_endpoint import Endpoint, lower, no_answer

# The API group and version of each resource the switch calls (_gpu_mode_rights.CALLS).
PREFIXES = {"deployments": "/apis/apps/v1", "leases": "/apis/coordination.k8s.io/v1", "pods": "/api/v1",
            "nodes": "/api/v1", "events": "/api/v1", "services": "/api/v1"}
METHODS = {"get": "GET", "list": "GET", "log": "GET", "create": "POST", "patch": "PATCH", "replace": "PUT",
           "delete": "DELETE"}
API_TIMEOUT = 30


def status_line(status, text):
    """'<status> <message>' of a refusal on one line: the API's Status message, else its body."""
    try:
        detail = json.loads(text).get("message") or text
    except (ValueError, AttributeError):
        detail = text
    return "%s %s" % (status, " ".join(str(detail).split())[:300])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 3xx is the answer


class KubeRest(KubeCalls):
    def __init__(self, server, token=None, ca_file=None):
        self.host = server.rstrip("/")
        self.token = token
        context = ssl.create_default_context(cafile=ca_file) if self.host.startswith("https:") else None
        handlers = [urllib.request.HTTPSHandler(context=context)] if context else []
        self._open = urllib.request.build_opener(*handlers).open
        self._open_no_redirect = urllib.request.build_opener(_NoRedirect, *handlers).open

    def raw(self, method, path, body=None, timeout=API_TIMEOUT, headers=None, follow_redirects=True):
        """(status, text, headers with lower-case names) of one request to the API server; OSError when
        nothing came back (TimeoutError when it connected but no answer came within ``timeout``)."""
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(self.host + path, data=data, method=method, headers=headers)
        opener = self._open if follow_redirects else self._open_no_redirect
        try:
            with opener(request, timeout=timeout) as response:
                return response.status, response.read().decode("utf-8", "replace"), lower(response.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode("utf-8", "replace"), lower(err.headers)
        except urllib.error.URLError as err:
            reason = err.reason if isinstance(err.reason, OSError) else OSError(str(err.reason))
            raise reason

    def _send(self, doing, right, action, resource, namespace=None, name=None, body=None, query=None):
        path = PREFIXES[resource] + ("/namespaces/%s" % namespace if namespace else "") + "/" + resource
        path += "/" + name if name else ""
        path += "/log" if action == "log" else ""
        query = {k: v for k, v in (query or {}).items() if v}
        path += "?" + urllib.parse.urlencode(query) if query else ""
        content_type = SMP if action == "patch" else "application/json"
        try:
            status, text, dummy = self.raw(METHODS[action], path, json.dumps(body) if body is not None else None,
                                           headers={"Content-Type": content_type, "Accept": "application/json"})
        except OSError as err:
            raise KubeError("%s at %s: %s; check the API server address and that it is reachable"
                            % (doing, self.host, " ".join(str(err).split())[:300] or type(err).__name__))
        if status < 300:
            if action == "log":
                return text
            return json.loads(text) if text.strip() else {}
        if status == 404:
            return None
        explained = self.explain_status(doing, status, right, text)
        if explained:
            raise KubeError(explained, status)
        raise (Conflict if status == 409 else KubeError)("%s: %s" % (doing, status_line(status, text)), status)


class RestEndpoint(Endpoint):
    """An Endpoint reached through a KubeRest's API server."""

    def __init__(self, api, namespace, service, port, rights_role=None, kind="services"):
        super().__init__(namespace, service, port, rights_role=rights_role, kind=kind)
        self.api = api

    def _proxied(self, method, path, body, timeout, headers, follow_redirects=True):
        try:
            return self.api.raw(method, self.proxy_path + path.lstrip("/"),
                                json.dumps(body) if body is not None else None, timeout,
                                dict(headers, Accept="*/*"), follow_redirects)
        except TimeoutError:
            raise ServiceError(no_answer(self.label, timeout) + " (through the Kubernetes API's service proxy)",
                               timed_out=True)
        except OSError as err:
            raise ServiceError("cannot reach the Kubernetes API at %s for %s: %s; check the API server address"
                               % (self.api.host, self.label, err))


def switch_endpoints(api, params, rights_role):
    """(vLLM's Service, LiteLLM's or None without a key, pod name -> that vLLM pod) of a switch's
    ``params``, each reached through ``api``'s service proxy."""
    vllm = RestEndpoint(api, params["namespace"], params["vllm_service"], params["vllm_port"], rights_role=rights_role)
    litellm = RestEndpoint(api, params["litellm_namespace"], params["litellm_service"], params["litellm_port"],
                           rights_role=rights_role) if params["litellm_service"] and params["litellm_api_key"] else None

    def vllm_pod(pod):
        return RestEndpoint(api, params["namespace"], pod, params["vllm_port"], rights_role=rights_role, kind="pods")
    return vllm, litellm, vllm_pod

# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP to an in-cluster Service: through the Kubernetes API's service proxy by
default (the controller needs no ingress and no ``kubectl exec``), or straight to
a URL when one is given."""

from __future__ import annotations

import json

from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode_rights

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error
    from urllib3.exceptions import ReadTimeoutError
    from urllib3.util.retry import Retry
except ImportError:  # reported by the module through AnsibleK8SModule's requires()
    ApiException = Urllib3Error = ReadTimeoutError = Retry = None


class ServiceError(Exception):
    """A request that got no usable answer; the message is one line for the user."""

    def __init__(self, message, status=None, timed_out=False):
        super().__init__(message)
        self.status = status
        self.timed_out = timed_out  # connected, then no answer within the timeout: slow, not unreachable


class ServiceForbidden(ServiceError):
    """The API server refused the proxy request (RBAC): asking again cannot help."""


class ServiceEndpoint:
    """One Service port, e.g. ``ml/ollama:11434``, reached by proxy or by URL; with ``kind="pods"``
    one pod's port (through the API server's pod proxy), e.g. a vLLM pod already out of its Service.

    ``rights_role``: the role shipping the caller's RBAC rights, named when the API server refuses the proxy."""

    def __init__(self, module, namespace, service, port, url=None, rights_role=None, kind="services"):
        self.module = module
        self.namespace = namespace
        self.service = service
        self.port = port
        self.url = url.rstrip("/") if url else None
        self.rights_role = rights_role
        self.kind = kind
        self._api = None

    @property
    def label(self):
        return self.url or "%s %s/%s:%s" % (self.kind[:-1], self.namespace, self.service, self.port)

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
        # The kubernetes client serialises the body itself.
        status, text, response_headers = self._proxied(method, path, body, timeout, headers, follow_redirects)
        if status == 403 and _refused_by_api(text):
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
        try:
            response = open_url(self.url + "/" + path.lstrip("/"), method=method, data=data, timeout=timeout,
                                headers=headers, follow_redirects="urllib2" if follow_redirects else "none")
            return response.getcode(), to_text(response.read()), _lower(response.headers)
        except HTTPError as err:
            return err.code, to_text(err.read()), _lower(err.headers)
        except (URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, TimeoutError):  # socket.timeout: connected, then no answer in time
                raise ServiceError(_no_answer(self.label, timeout), timed_out=True)
            raise ServiceError("cannot reach %s: %s" % (self.label, to_native(reason)))

    def connect(self):
        """Set the Kubernetes client up (once; before requests are sent from several threads)."""
        if self._api is None and not self.url:
            try:
                self._api = get_api_client(module=self.module).client.client
            except Exception as err:  # the kubernetes client raises many kinds here
                raise ServiceError("cannot set up the Kubernetes client: %s; check kubeconfig, context and host"
                                   % to_native(err))

    def _proxied(self, method, path, data, timeout, headers, follow_redirects=True):
        self.connect()
        resource = "/api/v1/namespaces/{namespace}/%s/{name}/proxy/{path}" % self.kind
        params = {"namespace": self.namespace, "name": "%s:%s" % (self.service, self.port),
                  "path": path.lstrip("/")}
        headers = dict(headers, Accept="*/*")
        try:
            if hasattr(self._api, "param_serialize"):  # kubernetes >= 31 (the newer generated client)
                method, url, header_params, payload = self._api.param_serialize(
                    method, resource, path_params=params, header_params=headers, body=data,
                    auth_settings=["BearerToken"])[:4]
                # Straight to the client's pool (same URL, credentials and TLS settings), as one request: the
                # client's call_api would retry a GET's read timeout 3 times (urllib3's default Retry(3)),
                # so a 30 s timeout waited 120 s, and it always follows redirects.
                response = self._api.rest_client.pool_manager.request(
                    method, url, body=json.dumps(payload) if payload is not None else None, headers=header_params,
                    timeout=timeout, preload_content=False, redirect=follow_redirects,
                    retries=Retry(total=None, connect=0, read=0, status=0, other=0,
                                  redirect=5 if follow_redirects else 0, raise_on_redirect=False))
                return response.status, to_text(response.read()), _lower(response.headers)
            response = self._api.call_api(
                resource, method, path_params=params, header_params=headers, body=data,
                auth_settings=["BearerToken"], _preload_content=False, _request_timeout=timeout,
                _return_http_data_only=True)
            return response.status, to_text(response.data), _lower(response.headers)
        except ApiException as err:
            return err.status, to_text(err.body or err.reason), _lower(err.headers)
        except Urllib3Error as err:
            # The kubernetes client wraps a read timeout in MaxRetryError: the service is slow, not unreachable.
            if isinstance(err, ReadTimeoutError) or isinstance(getattr(err, "reason", None), ReadTimeoutError):
                raise ServiceError(_no_answer(self.label, timeout) + " (through the Kubernetes API's service proxy)",
                                   timed_out=True)
            raise ServiceError("cannot reach the Kubernetes API for %s: %s; check kubeconfig, context and host"
                               % (self.label, to_native(err)))


def _no_answer(label, timeout):
    return "%s did not answer within %ss" % (label, timeout)


def _refused_by_api(text):
    """Whether a 403 is the API server's own refusal (a Status naming the Service), not the backend's answer."""
    try:
        body = json.loads(text)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("kind") == "Status" and body.get("reason") == "Forbidden" \
        and (body.get("details") or {}).get("kind") in ("services", "pods")


def _lower(headers):
    return {str(k).lower(): v for k, v in (headers or {}).items()}


def describe_unavailable(endpoint, status, text):
    """One line for a proxy answer that means 'no pod behind the Service'."""
    detail = text.strip().splitlines()[0][:200] if text.strip() else "no body"
    if status == 503:
        return "%s has no ready pod (503: %s)" % (endpoint.label, detail)
    if status == 404:
        return "%s does not exist (404: %s)" % (endpoint.label, detail)
    return "%s answered %s: %s" % (endpoint.label, status, detail)

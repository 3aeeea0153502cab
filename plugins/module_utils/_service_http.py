# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP to an in-cluster Service from a module: through the Kubernetes API's
service proxy by default (the controller needs no ingress and no ``kubectl
exec``), with the kubernetes client and the module's kubeconfig options, or
straight to a URL when one is given. What every transport shares is
_service_endpoint's."""

from __future__ import annotations

import json

from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

from ansible_collections.homelab.inference.plugins.module_utils._api_errors import ServiceError
from ansible_collections.homelab.inference.plugins.module_utils._service_endpoint import Endpoint, lower, no_answer

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error
    from urllib3.exceptions import ReadTimeoutError
    from urllib3.util.retry import Retry
except ImportError:  # reported by the module through AnsibleK8SModule's requires()
    ApiException = Urllib3Error = ReadTimeoutError = Retry = None


class ServiceEndpoint(Endpoint):
    """An Endpoint reached with the kubernetes client of ``module``'s kubeconfig options."""

    def __init__(self, module, namespace, service, port, url=None, rights_role=None, kind="services"):
        super().__init__(namespace, service, port, url, rights_role, kind)
        self.module = module
        self._api = None

    def _direct(self, method, path, data, timeout, headers, follow_redirects=True):
        try:
            response = open_url(self.url + "/" + path.lstrip("/"), method=method, data=data, timeout=timeout,
                                headers=headers, follow_redirects="urllib2" if follow_redirects else "none")
            return response.getcode(), to_text(response.read()), lower(response.headers)
        except HTTPError as err:
            return err.code, to_text(err.read()), lower(err.headers)
        except (URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, TimeoutError):  # socket.timeout: connected, then no answer in time
                raise ServiceError(no_answer(self.label, timeout), timed_out=True)
            raise ServiceError("cannot reach %s: %s" % (self.label, to_native(reason)))

    def connect(self):
        """Set the Kubernetes client up (once; before requests are sent from several threads)."""
        if self._api is None and not self.url:
            try:
                self._api = get_api_client(module=self.module).client.client
            except Exception as err:  # the kubernetes client raises many kinds here
                raise ServiceError("cannot set up the Kubernetes client: %s; check kubeconfig, context and host"
                                   % to_native(err))

    def _proxied(self, method, path, body, timeout, headers, follow_redirects=True):
        self.connect()
        resource = "/api/v1/namespaces/{namespace}/%s/{name}/proxy/{path}" % self.kind
        params = {"namespace": self.namespace, "name": "%s:%s" % (self.service, self.port),
                  "path": path.lstrip("/")}
        headers = dict(headers, Accept="*/*")
        try:
            if hasattr(self._api, "param_serialize"):  # kubernetes >= 31 (the newer generated client)
                method, url, header_params, payload = self._api.param_serialize(
                    method, resource, path_params=params, header_params=headers, body=body,
                    auth_settings=["BearerToken"])[:4]
                # Straight to the client's pool (same URL, credentials and TLS settings), as one request: the
                # client's call_api would retry a GET's read timeout 3 times (urllib3's default Retry(3)),
                # so a 30 s timeout waited 120 s, and it always follows redirects.
                response = self._api.rest_client.pool_manager.request(
                    method, url, body=json.dumps(payload) if payload is not None else None, headers=header_params,
                    timeout=timeout, preload_content=False, redirect=follow_redirects,
                    retries=Retry(total=None, connect=0, read=0, status=0, other=0,
                                  redirect=5 if follow_redirects else 0, raise_on_redirect=False))
                return response.status, to_text(response.read()), lower(response.headers)
            response = self._api.call_api(
                resource, method, path_params=params, header_params=headers, body=body,
                auth_settings=["BearerToken"], _preload_content=False, _request_timeout=timeout,
                _return_http_data_only=True)
            return response.status, to_text(response.data), lower(response.headers)
        except ApiException as err:
            return err.status, to_text(err.body or err.reason), lower(err.headers)
        except Urllib3Error as err:
            # The kubernetes client wraps a read timeout in MaxRetryError: the service is slow, not unreachable.
            if isinstance(err, ReadTimeoutError) or isinstance(getattr(err, "reason", None), ReadTimeoutError):
                raise ServiceError(no_answer(self.label, timeout) + " (through the Kubernetes API's service proxy)",
                                   timed_out=True)
            raise ServiceError("cannot reach the Kubernetes API for %s: %s; check kubeconfig, context and host"
                               % (self.label, to_native(err)))

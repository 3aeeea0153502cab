# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The few Kubernetes API calls gpu_mode makes, each failure turned into one
line that says what to fix (for a 403, the right the call needed, from
_gpu_mode_rights). This is the module's client boundary: unit tests replace it
with an in-memory fake of the same methods."""

from __future__ import annotations

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode_rights

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
    from kubernetes.dynamic.exceptions import ConflictError, DynamicApiError, NotFoundError
    from urllib3.exceptions import HTTPError as Urllib3Error
except ImportError:  # reported by the module through AnsibleK8SModule's requires()
    class DynamicApiError(Exception):
        pass

    class ConflictError(DynamicApiError):
        pass

    class NotFoundError(DynamicApiError):
        pass

    class Urllib3Error(Exception):
        pass

SMP = "application/strategic-merge-patch+json"


class KubeError(Exception):
    """A failed API call, in one line."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class Conflict(KubeError):
    """409: the object changed or exists already (the caller retries)."""


def _plain(obj):
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


class KubeAccess:
    def __init__(self, module):
        try:
            self.client = get_api_client(module=module)
            self.host = self.client.configuration.host
            resources = self.client.client.resources
            self._deployments = resources.get(api_version="apps/v1", kind="Deployment")
            self._pods = resources.get(api_version="v1", kind="Pod")
            self._nodes = resources.get(api_version="v1", kind="Node")
            self._leases = resources.get(api_version="coordination.k8s.io/v1", kind="Lease")
            self._events = resources.get(api_version="v1", kind="Event")
            self._services = resources.get(api_version="v1", kind="Service")
        except Exception as err:  # any failure here means: no usable API
            raise KubeError(self._explain(err, "cannot use the Kubernetes API"))

    def _explain(self, err, doing, right=None):
        status = getattr(err, "status", None)
        host = getattr(self, "host", None) or "the configured API server"
        if status == 401:
            return "%s at %s: 401 Unauthorized; check the kubeconfig's credentials or api_key" % (doing, host)
        if status == 403 and right:
            return _gpu_mode_rights.forbidden("%s at %s" % (doing, host), right,
                                              to_native(getattr(err, "body", None) or err))
        if status == 403:
            # Every authenticated user may read API discovery (the system:discovery ClusterRole).
            return "%s at %s: 403 Forbidden on API discovery, so the request was anonymous; give the kubeconfig " \
                   "a token or client certificate" % (doing, host)
        if isinstance(err, DynamicApiError):
            summary = getattr(err, "summary", None)
            detail = summary() if callable(summary) else to_native(err)
            return "%s: %s%s" % (doing, "%s " % status if status else "", " ".join(str(detail).split())[:300])
        reason = getattr(err, "reason", None) or err
        return "%s at %s: %s; check kubeconfig, context and host" % (doing, host, " ".join(to_native(reason).split())[:300])

    def _call(self, doing, right, func, *args, **kwargs):
        """``right``: the right the call needs, in words (_gpu_mode_rights.right), named when it gets a 403."""
        try:
            return _plain(func(*args, **kwargs))
        except NotFoundError:
            return None
        except ConflictError as err:
            raise Conflict(self._explain(err, doing), 409)
        except (DynamicApiError, Urllib3Error, OSError) as err:
            raise KubeError(self._explain(err, doing, right), getattr(err, "status", None))

    # deployments and pods -----------------------------------------------------

    def get_deployment(self, namespace, name):
        return self._call("reading Deployment %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("get_deployment", namespace, name),
                          self._deployments.get, name=name, namespace=namespace)

    def patch_deployment(self, namespace, name, patch):
        return self._call("patching Deployment %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("patch_deployment", namespace, name),
                          self._deployments.patch, body=patch, name=name, namespace=namespace, content_type=SMP)

    def list_pods(self, namespace, label_selector):
        found = self._call("listing pods in %s" % namespace, _gpu_mode_rights.right("list_pods", namespace),
                           self._pods.get, namespace=namespace, label_selector=label_selector)
        return (found or {}).get("items") or []

    def get_service(self, namespace, name):
        return self._call("reading Service %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("get_vllm_service", namespace, name),
                          self._services.get, name=name, namespace=namespace)

    def patch_service(self, namespace, name, patch):
        return self._call("patching Service %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("patch_vllm_service", namespace, name),
                          self._services.patch, body=patch, name=name, namespace=namespace, content_type=SMP)

    def nodes(self, label_selector):
        found = self._call("listing nodes", _gpu_mode_rights.right("list_nodes"), self._nodes.get,
                           label_selector=label_selector)
        return [n["metadata"]["name"] for n in (found or {}).get("items") or []]

    def pods_on_node(self, node):
        found = self._call("listing pods on node %s" % node, _gpu_mode_rights.right("list_pods_on_node"),
                           self._pods.get, field_selector="spec.nodeName=%s" % node)
        return (found or {}).get("items") or []

    # the GPU-free check pod --------------------------------------------------------

    def get_pod(self, namespace, name):
        return self._call("reading pod %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("get_check_pod", namespace, name), self._pods.get, name=name,
                          namespace=namespace)

    def create_pod(self, namespace, body):
        return self._call("creating pod %s/%s" % (namespace, body["metadata"]["name"]),
                          _gpu_mode_rights.right("create_check_pod", namespace), self._pods.create, body=body,
                          namespace=namespace)

    def delete_pod(self, namespace, name):
        return self._call("deleting pod %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("delete_check_pod", namespace, name), self._pods.delete,
                          name=name, namespace=namespace)

    def read_pod_log(self, namespace, name, container):
        response = self._call("reading the log of pod %s/%s" % (namespace, name),
                              _gpu_mode_rights.right("read_check_pod_log", namespace, name), self._pods.log.get,
                              name=name, namespace=namespace, serialize=False, query_params={"container": container})
        return response.data.decode("utf-8", "replace") if response is not None else None

    def create_event(self, namespace, body):
        return self._call("recording Event %s/%s" % (namespace, body["metadata"]["name"]),
                          _gpu_mode_rights.right("create_event", namespace), self._events.create, body=body,
                          namespace=namespace)

    # the lock -----------------------------------------------------------------

    def get_lease(self, namespace, name):
        return self._call("reading Lease %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("get_lease", namespace, name), self._leases.get, name=name,
                          namespace=namespace)

    def create_lease(self, namespace, body):
        return self._call("creating Lease %s/%s" % (namespace, body["metadata"]["name"]),
                          _gpu_mode_rights.right("create_lease", namespace), self._leases.create,
                          body=body, namespace=namespace)

    def replace_lease(self, namespace, body):
        name = body["metadata"]["name"]
        return self._call("updating Lease %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("update_lease", namespace, name), self._leases.replace,
                          body=body, namespace=namespace)

    def delete_lease(self, namespace, name):
        return self._call("deleting Lease %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("delete_lease", namespace, name), self._leases.delete,
                          name=name, namespace=namespace)

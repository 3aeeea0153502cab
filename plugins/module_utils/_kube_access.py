# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The module's way to send the calls of _kube_calls: the kubernetes client's
dynamic API with the module's kubeconfig options, each failure turned into one
line that says what to fix (for a 403, the right the call needed)."""

from __future__ import annotations

from ansible.module_utils.common.text.converters import to_native

from ansible_collections.homelab.inference.plugins.module_utils._api_errors import Conflict, KubeError
from ansible_collections.homelab.inference.plugins.module_utils._kube_calls import SMP, KubeCalls

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


def _plain(obj):
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


class KubeAccess(KubeCalls):
    """The calls through the kubernetes client's dynamic API, with the module's kubeconfig options."""

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
        explained = self.explain_status(doing, status, right, to_native(getattr(err, "body", None) or err))
        if explained:
            return explained
        if isinstance(err, DynamicApiError):
            summary = getattr(err, "summary", None)
            detail = summary() if callable(summary) else to_native(err)
            return "%s: %s%s" % (doing, "%s " % status if status else "", " ".join(str(detail).split())[:300])
        reason = getattr(err, "reason", None) or err
        host = self.host or "the configured API server"
        return "%s at %s: %s; check kubeconfig, context and host" % (doing, host,
                                                                     " ".join(to_native(reason).split())[:300])

    def _send(self, doing, right, action, resource, namespace=None, name=None, body=None, query=None):
        api = getattr(self, "_" + resource)
        query = query or {}
        where = {"namespace": namespace} if namespace else {}
        try:
            if action == "log":
                response = api.log.get(name=name, serialize=False, query_params=query, **where)
                return response.data.decode("utf-8", "replace")
            if action in ("get", "delete"):
                found = getattr(api, action)(name=name, **where)
            elif action == "list":
                found = api.get(label_selector=query.get("labelSelector"), field_selector=query.get("fieldSelector"),
                                **where)
            elif action == "patch":
                found = api.patch(body=body, name=name, content_type=SMP, **where)
            else:  # create, replace
                found = getattr(api, action)(body=body, **where)
            return _plain(found)
        except NotFoundError:
            return None
        except ConflictError as err:
            raise Conflict(self._explain(err, doing), 409)
        except (DynamicApiError, Urllib3Error, OSError) as err:
            raise KubeError(self._explain(err, doing, right), getattr(err, "status", None))

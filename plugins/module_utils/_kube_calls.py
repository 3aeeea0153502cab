# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Kubernetes API calls a GPU mode switch makes, by name, each with what it
does in words and the right it needs (_gpu_mode_rights); how a call is sent is
a subclass's ``_send``: the kubernetes client in the module (_kube_access), the
standard library on the GPU host (_kube_rest). Unit tests replace the whole
boundary with an in-memory fake of these methods."""

from __future__ import annotations

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode_rights

SMP = "application/strategic-merge-patch+json"


class KubeCalls:
    host = None

    def _send(self, doing, right, action, resource, namespace=None, name=None, body=None, query=None):
        """One call: ``action`` is get, list, create, patch (strategic merge), replace, delete or log; returns
        the object (a dict), None for a 404, or the log's text; raises _api_errors.KubeError (Conflict for a
        409)."""
        raise NotImplementedError

    def explain_status(self, doing, status, right=None, detail=""):
        """The one line for an answer the API refused, or None when the transport words it itself."""
        host = self.host or "the configured API server"
        if status == 401:
            return "%s at %s: 401 Unauthorized; check the kubeconfig's credentials or api_key" % (doing, host)
        if status == 403 and right:
            return _gpu_mode_rights.forbidden("%s at %s" % (doing, host), right, detail)
        if status == 403:
            # Every authenticated user may read API discovery (the system:discovery ClusterRole).
            return "%s at %s: 403 Forbidden on API discovery, so the request was anonymous; give the kubeconfig " \
                   "a token or client certificate" % (doing, host)
        return None

    # deployments and pods -----------------------------------------------------

    def get_deployment(self, namespace, name):
        return self._send("reading Deployment %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("get_deployment", namespace, name), "get", "deployments",
                          namespace, name)

    def patch_deployment(self, namespace, name, patch):
        return self._send("patching Deployment %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("patch_deployment", namespace, name), "patch", "deployments",
                          namespace, name, body=patch)

    def list_pods(self, namespace, label_selector):
        found = self._send("listing pods in %s" % namespace, _gpu_mode_rights.right("list_pods", namespace), "list",
                           "pods", namespace, query={"labelSelector": label_selector})
        return (found or {}).get("items") or []

    def get_service(self, namespace, name):
        return self._send("reading Service %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("get_vllm_service", namespace, name), "get", "services",
                          namespace, name)

    def patch_service(self, namespace, name, patch):
        return self._send("patching Service %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("patch_vllm_service", namespace, name), "patch", "services",
                          namespace, name, body=patch)

    def nodes(self, label_selector):
        found = self._send("listing nodes", _gpu_mode_rights.right("list_nodes"), "list", "nodes",
                           query={"labelSelector": label_selector})
        return [n["metadata"]["name"] for n in (found or {}).get("items") or []]

    def node(self, name):
        """One node, or None (listed by name: the right to list nodes is the one the switch has)."""
        found = self._send("reading node %s" % name, _gpu_mode_rights.right("list_nodes"), "list", "nodes",
                           query={"fieldSelector": "metadata.name=%s" % name})
        items = (found or {}).get("items") or []
        return items[0] if items else None

    def pods_on_node(self, node):
        found = self._send("listing pods on node %s" % node, _gpu_mode_rights.right("list_pods_on_node"), "list",
                           "pods", query={"fieldSelector": "spec.nodeName=%s" % node})
        return (found or {}).get("items") or []

    # the GPU-free check pod --------------------------------------------------------

    def get_pod(self, namespace, name):
        return self._send("reading pod %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("get_check_pod", namespace, name), "get", "pods", namespace, name)

    def create_pod(self, namespace, body):
        return self._send("creating pod %s/%s" % (namespace, body["metadata"]["name"]),
                          _gpu_mode_rights.right("create_check_pod", namespace), "create", "pods", namespace,
                          body=body)

    def delete_pod(self, namespace, name):
        return self._send("deleting pod %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("delete_check_pod", namespace, name), "delete", "pods", namespace,
                          name)

    def read_pod_log(self, namespace, name, container):
        return self._send("reading the log of pod %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("read_check_pod_log", namespace, name), "log", "pods", namespace,
                          name, query={"container": container})

    def create_event(self, namespace, body):
        return self._send("recording Event %s/%s" % (namespace, body["metadata"]["name"]),
                          _gpu_mode_rights.right("create_event", namespace), "create", "events", namespace, body=body)

    # the lock -----------------------------------------------------------------

    def get_lease(self, namespace, name):
        return self._send("reading Lease %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("get_lease", namespace, name), "get", "leases", namespace, name)

    def create_lease(self, namespace, body):
        return self._send("creating Lease %s/%s" % (namespace, body["metadata"]["name"]),
                          _gpu_mode_rights.right("create_lease", namespace), "create", "leases", namespace, body=body)

    def replace_lease(self, namespace, body):
        name = body["metadata"]["name"]
        return self._send("updating Lease %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("update_lease", namespace, name), "replace", "leases", namespace,
                          name, body=body)

    def delete_lease(self, namespace, name):
        return self._send("deleting Lease %s/%s" % (namespace, name),
                          _gpu_mode_rights.right("delete_lease", namespace, name), "delete", "leases", namespace,
                          name)

"""ServiceAccounts as kube-controller-manager keeps them, and their tokens.

- Every namespace that is not terminating has a ServiceAccount ``default``
  (pkg/controller/serviceaccount/serviceaccounts_controller.go) and a ConfigMap
  ``kube-root-ca.crt`` holding the API's CA as ``ca.crt``
  (pkg/controller/certificates/rootcacertpublisher/publisher.go), v1.31.
- Tokens: the real API signs a JWT bound to the pod; until the lab checks
  tokens (it authorises every request), it issues each (namespace,
  ServiceAccount) one opaque token, 43 URL-safe characters, kept in the state
  directory (``secrets/serviceaccount-tokens.json``) so it stays the same
  across restarts of the lab.
"""

from __future__ import annotations

import json
import os
import secrets
import threading

from .rollouts import deleting

ROOT_CA = "kube-root-ca.crt"


class Tokens:
    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, "secrets", "serviceaccount-tokens.json")
        self.lock = threading.Lock()

    def token(self, namespace, name):
        key = "%s/%s" % (namespace, name)
        with self.lock:
            try:
                with open(self.path) as handle:
                    issued = json.load(handle)
            except (OSError, ValueError):
                issued = {}
            if key not in issued:
                issued[key] = secrets.token_urlsafe(32)
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                descriptor = os.open(self.path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    json.dump(issued, handle, indent=1, sort_keys=True)
                os.replace(self.path + ".tmp", self.path)
            return issued[key]


def reconcile(store, ca_pem):
    """One pass of both controllers: what is missing or stale is written, nothing else."""
    for namespace in store.list("namespaces"):
        reconcile_namespace(store, namespace, ca_pem)


def reconcile_namespace(store, namespace, ca_pem):
    """The same for one namespace (also run just before a controller creates a pod in it, as the real
    controllers are faster than any ReplicaSet's first pod)."""
    if namespace is None or deleting(namespace):
        return
    name = namespace["metadata"]["name"]
    if not store.get("serviceaccounts", name, "default"):
        store.create("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                         "metadata": {"name": "default", "namespace": name}})
    current = store.get("configmaps", name, ROOT_CA)
    if current is None:
        store.create("configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "data": {"ca.crt": ca_pem},
            # the annotation the publisher sets (publisher.go, Description)
            "metadata": {"name": ROOT_CA, "namespace": name,
                         "annotations": {"kubernetes.io/description": _DESCRIPTION}}})
    elif (current.get("data") or {}).get("ca.crt") != ca_pem:
        current["data"] = dict(current.get("data") or {}, **{"ca.crt": ca_pem})
        store.put("configmaps", current)


_DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints "
                "such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across "
                "distributions of Kubernetes clusters.")

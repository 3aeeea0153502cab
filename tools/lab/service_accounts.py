"""ServiceAccounts as kube-controller-manager keeps them, and their tokens.

- Every namespace that is not terminating has a ServiceAccount ``default``
  (pkg/controller/serviceaccount/serviceaccounts_controller.go) and a ConfigMap
  ``kube-root-ca.crt`` holding the API's CA as ``ca.crt``
  (pkg/controller/certificates/rootcacertpublisher/publisher.go), v1.31.
- Tokens: the real API signs JWTs; the lab issues opaque ones (43 URL-safe
  characters) and keeps them in the state directory, so they stay valid across
  restarts of the lab, and authenticates them as the real API does
  (pkg/serviceaccount/claims.go and legacy.go, v1.31): a token names a
  ServiceAccount, and stops working when that ServiceAccount is deleted, when it
  expires (a TokenRequest's), or when its Secret is deleted (a Secret of type
  ``kubernetes.io/service-account-token``, filled in by the token controller,
  pkg/controller/serviceaccount/tokens_controller.go). Three kinds:
  - a pod's projected token: one per (namespace, ServiceAccount)
    (``secrets/serviceaccount-tokens.json``);
  - TokenRequest (``kubectl create token``): each its own, with its expiry
    (``secrets/requested-tokens.json``);
  - a Secret's token, kept in the Secret itself.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time

from .rollouts import deleting

ROOT_CA = "kube-root-ca.crt"
TOKEN_SECRET = "kubernetes.io/service-account-token"
# Only these Secrets are copied out of the store (its field selector filters before copying): the controller
# loop and the authenticator look at them on every pass and every unknown token.
TOKEN_SECRETS = "type=%s" % TOKEN_SECRET
SA_NAME = "kubernetes.io/service-account.name"
SA_UID = "kubernetes.io/service-account.uid"


def _write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    descriptor = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(value, handle, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def _read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


class Tokens:
    def __init__(self, state_dir):
        self.path = os.path.join(state_dir, "secrets", "serviceaccount-tokens.json")
        self.requested_path = os.path.join(state_dir, "secrets", "requested-tokens.json")
        self.lock = threading.Lock()

    def token(self, namespace, name):
        """A pod's token for its ServiceAccount."""
        key = "%s/%s" % (namespace, name)
        with self.lock:
            issued = _read_json(self.path)
            if key not in issued:
                issued[key] = secrets.token_urlsafe(32)
                _write_json(self.path, issued)
            return issued[key]

    def request(self, namespace, name, seconds):
        """A TokenRequest's token and its expiry (seconds since the epoch)."""
        token, expires = secrets.token_urlsafe(32), int(time.time()) + seconds
        with self.lock:
            requested = _read_json(self.requested_path)
            requested = {t: r for t, r in requested.items() if r["expires"] > time.time()}
            requested[token] = {"namespace": namespace, "name": name, "expires": expires}
            _write_json(self.requested_path, requested)
        return token, expires

    def account_of(self, token, store):
        """(namespace, name) of the ServiceAccount a token authenticates as, or None: unknown, expired, its
        Secret deleted, or its ServiceAccount gone."""
        with self.lock:
            found = next((tuple(key.split("/", 1)) for key, value in _read_json(self.path).items()
                          if secrets.compare_digest(value.encode(), token.encode())), None)
            if found is None:
                entry = _read_json(self.requested_path).get(token)
                if entry and entry["expires"] > time.time():
                    found = (entry["namespace"], entry["name"])
        uid = None
        if found is None:
            found, uid = _secret_account(store, token)
        account = store.get("serviceaccounts", found[0], found[1]) if found else None
        if account is None or (uid is not None and account["metadata"].get("uid") != uid):
            return None
        return found


def _secret_account(store, token):
    """((namespace, name), uid) of the ServiceAccount a token Secret holding ``token`` names (legacy.go checks
    the uid too: a ServiceAccount deleted and made again does not inherit the old tokens)."""
    encoded = base64.b64encode(token.encode()).decode()
    for secret in store.list("secrets", field_selector=TOKEN_SECRETS):
        if (secret.get("data") or {}).get("token") == encoded:
            annotations = secret["metadata"].get("annotations") or {}
            return (secret["metadata"]["namespace"], annotations.get(SA_NAME)), annotations.get(SA_UID, "")
    return None, None


def fill_token_secrets(store, ca_pem):
    """The token controller: a Secret of type kubernetes.io/service-account-token naming an existing
    ServiceAccount gets its token, the CA and its namespace, and the ServiceAccount's uid
    (tokens_controller.go, generateTokenIfNeeded); one naming no ServiceAccount is left empty."""
    for secret in store.list("secrets", field_selector=TOKEN_SECRETS):
        if (secret.get("data") or {}).get("token") or deleting(secret):
            continue
        namespace = secret["metadata"]["namespace"]
        annotations = secret["metadata"].get("annotations") or {}
        account = store.get("serviceaccounts", namespace, annotations.get(SA_NAME))
        if account is None:
            continue
        secret["metadata"]["annotations"] = dict(annotations, **{SA_UID: account["metadata"]["uid"]})
        secret["data"] = dict(secret.get("data") or {}, **{
            key: base64.b64encode(value.encode()).decode()
            for key, value in (("token", secrets.token_urlsafe(32)), ("ca.crt", ca_pem), ("namespace", namespace))})
        store.put("secrets", secret)


def reconcile(store, ca_pem):
    """One pass of the three controllers: what is missing or stale is written, nothing else."""
    for namespace in store.list("namespaces"):
        reconcile_namespace(store, namespace, ca_pem)
    fill_token_secrets(store, ca_pem)


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

"""Credentials narrower than the lab's admin: a ServiceAccount's token, and a kubeconfig that
uses it where the lab authenticates every request (its TLS endpoint, tools/lab/api/authn.py)."""

from __future__ import annotations

import os
import urllib.parse

import yaml

from .api_client import api_request


def _port(state_dir):
    """The lab's API port, from the admin kubeconfig it wrote."""
    with open(os.path.join(state_dir, "kubeconfig")) as handle:
        return urllib.parse.urlsplit(yaml.safe_load(handle)["clusters"][0]["cluster"]["server"]).port


def lab_endpoint(state_dir):
    """(the lab's TLS address as a URL, its CA file) for the lab kept in ``state_dir``."""
    with open(os.path.join(state_dir, "address-slot")) as handle:
        slot = int(handle.read())
    # tools/lab/cluster.py: the API's in-cluster address is the first of the lab's Service range.
    return "https://127.%d.0.1:%d" % (150 + slot, _port(state_dir)), os.path.join(state_dir, "pki", "ca.crt")


def service_account_token(state_dir, namespace, name, seconds=3600):
    """A TokenRequest's token for the ServiceAccount (as `kubectl create token` gets one)."""
    status, answer = api_request(_port(state_dir), "POST", "/api/v1/namespaces/%s/serviceaccounts/%s/token" % (namespace, name),
                                 {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                  "spec": {"expirationSeconds": seconds}})
    if status != 201:
        raise RuntimeError("no token for %s/%s: %s" % (namespace, name, answer.get("message", answer)))
    return answer["status"]["token"]


def token_kubeconfig(state_dir, token, path):
    """Write a kubeconfig that talks to the lab over TLS with ``token``; return its path."""
    server, ca_file = lab_endpoint(state_dir)
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "scoped", "preferences": {},
              "clusters": [{"name": "lab", "cluster": {"server": server, "certificate-authority": ca_file}}],
              "contexts": [{"name": "scoped", "context": {"cluster": "lab", "user": "scoped"}}],
              "users": [{"name": "scoped", "user": {"token": token}}]}
    descriptor = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        yaml.safe_dump(config, handle)
    return str(path)

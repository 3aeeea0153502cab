# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Kubernetes API as a pod of the collection's own (the GPU mode exporter, the on-demand
switcher) reaches it with its ServiceAccount: standard library only."""

from __future__ import annotations

import json
import os

from ansible_collections.homelab.inference.plugins.module_utils._kube_rest import KubeRest, status_line

# What the kubelet mounts for a pod's ServiceAccount (client-go rest.InClusterConfig reads the same).
ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class InClusterError(Exception):
    """The pod cannot reach the API as its ServiceAccount; one line naming the fix."""


class InClusterApi(KubeRest):
    """The API server as client-go's rest.InClusterConfig finds it; the token is read again before each
    use (renew_token), as the kubelet renews a projected ServiceAccount token (hourly) in place.
    ``component`` and ``role`` name the pod and the role that deploys it in the errors."""

    component = "the pod"
    role = "homelab.inference"

    def __init__(self, account=ACCOUNT, environ=None):
        environ = os.environ if environ is None else environ
        host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise InClusterError("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: %s runs in a pod "
                                 "of the cluster (role %s)" % (self.component, self.role))
        self.account = account
        try:
            super().__init__("https://%s:%s" % ("[%s]" % host if ":" in host else host, port),
                             None, os.path.join(account, "ca.crt"))
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            raise InClusterError("the cluster's CA (%s/ca.crt) cannot be read (%s): keep "
                                 "automountServiceAccountToken on" % (account, getattr(err, "strerror", None) or err))

    def renew_token(self):
        try:
            with open(os.path.join(self.account, "token")) as handle:
                self.token = handle.read().strip()
        except OSError as err:
            raise InClusterError("the ServiceAccount token cannot be read (%s): keep automountServiceAccountToken on"
                                 % (err.strerror or err))


def read_json(api, doing, path, rights_hint):
    """GET ``path`` (``api``: a KubeRest) as JSON, or None when it is not there (404); anything else is
    an InClusterError of one line, starting with ``doing``, ending with ``rights_hint`` on 401 and 403."""
    try:
        status, text, dummy = api.raw("GET", path, headers={"Accept": "application/json"})
    except OSError as err:
        raise InClusterError("the API server at %s does not answer: %s" % (api.host, err))
    if status == 200:
        try:
            return json.loads(text)
        except ValueError:
            raise InClusterError("%s: the API server at %s answered 200 with no JSON: %s"
                                 % (doing, api.host, " ".join(text.split())[:120]))
    if status == 404:
        return None
    raise InClusterError("%s: %s%s" % (doing, status_line(status, text),
                                       "; %s" % rights_hint if status in (401, 403) else ""))

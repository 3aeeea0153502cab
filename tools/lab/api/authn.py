"""Authentication as k3s's API server does it (kube-apiserver v1.31 with
``--anonymous-auth=false``), for the lab's two kinds of credentials:

- the admin kubeconfig's bearer token: user ``system:admin`` in ``system:masters``,
  the identity of the admin client certificate k3s writes into
  /etc/rancher/k3s/k3s.yaml (the lab writes a token instead of a certificate,
  kept in ``secrets/admin-token``, as ``--token-auth-file`` would serve it);
- ServiceAccount tokens (service_accounts.Tokens): user
  ``system:serviceaccount:<namespace>:<name>`` in ``system:serviceaccounts``,
  ``system:serviceaccounts:<namespace>`` and ``system:authenticated``
  (pkg/serviceaccount/util.go, UserInfo).

A request without credentials, with another scheme, an empty token or a token no
authenticator knows is answered 401 with the API's Status body
(k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go via
filters/authentication.go, Unauthorized). The scheme is matched without regard to
case (authenticator/request/bearertoken/bearertoken.go).

One exception, tooling only: the lab's plain HTTP port on 127.0.0.1 serves a
request that carries no Authorization header without authentication or
authorisation, as kube-apiserver's ``--insecure-port`` on localhost did until
v1.20. The tests' raw API calls and the lab's own command line use it; every
kubeconfig the lab writes carries a token, so Ansible, kubectl and pods are
always authenticated and authorised."""

from __future__ import annotations

import hmac
import os
import secrets

from .errors import ApiError
from .rbac import AUTHENTICATED, MASTERS, User

ADMIN = User("system:admin", [MASTERS, AUTHENTICATED])


def unauthorized():
    return ApiError(401, "Unauthorized", reason="Unauthorized")


def admin_token(state_dir):
    """The admin kubeconfig's token, made once per lab state (mode 0600)."""
    path = os.path.join(state_dir, "secrets", "admin-token")
    try:
        with open(path) as handle:
            token = handle.read().strip()
        if token:
            return token
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token


class Authenticator:
    def __init__(self, store, tokens, admin):
        self.store, self.tokens, self.admin = store, tokens, admin

    def authenticate(self, headers, insecure_port):
        """The request's User; None on the insecure port without credentials; ApiError 401 otherwise."""
        header = headers.get("Authorization") if headers is not None else None
        if header is None:
            if insecure_port:
                return None
            raise unauthorized()
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized()
        if hmac.compare_digest(token.encode(), self.admin.encode()):
            return ADMIN
        account = self.tokens.account_of(token, self.store)
        if account is None:
            raise unauthorized()
        namespace, name = account
        return User("system:serviceaccount:%s:%s" % (namespace, name),
                    ["system:serviceaccounts", "system:serviceaccounts:%s" % namespace, AUTHENTICATED])

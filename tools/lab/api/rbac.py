"""Authorisation as kube-apiserver v1.31 decides it with k3s's modes (Node,RBAC), for
the lab's users: the request's attributes, RBAC's decision and the 403 it answers.

- Attributes: k8s.io/apiserver/pkg/endpoints/request/requestinfo.go (the verb from
  the HTTP method, list/watch for a collection GET, a list or watch narrowed to one
  name by ``fieldSelector=metadata.name=...``, deletecollection, subresources).
- Decision: plugin/pkg/auth/authorizer/rbac/rbac.go and rbac/rule.go (RuleAllows,
  ResourceMatches with ``*`` and ``*/subresource``, resourceNames, nonResourceURLs
  with a trailing ``*``): a RoleBinding grants its Role's or ClusterRole's rules in
  its own namespace only; a ClusterRoleBinding everywhere; a binding whose role
  does not exist grants nothing and says so in the reason.
- The users k3s starts with: ``system:masters`` may do anything (the
  privileged-group shortcut, pkg/kubeapiserver/authorizer/config.go); every authenticated
  user gets the bootstrap ClusterRoles system:discovery, system:basic-user and
  system:public-info-viewer (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go),
  evaluated here without being stored as objects.
- The 403: k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go
  (forbiddenMessage) wrapped by apimachinery's NewForbidden.

Not emulated: ClusterRole aggregation (aggregationRule), the Node authorizer's
grants to kubelets (no kubelet calls the lab's API over HTTP), impersonation."""

from __future__ import annotations

import urllib.parse

from .errors import ApiError

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
# requestinfo.go: a subresource such as services/proxy takes its HTTP method's verb too.
HTTP_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
# bootstrappolicy/policy.go: the ClusterRoles bound to system:authenticated by the bootstrap
# ClusterRoleBindings of the same names.
BOOTSTRAP_ROLES = {
    "system:discovery": [
        {"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                               "/openapi", "/openapi/*", "/readyz", "/version", "/version/"]}],
    "system:basic-user": [
        {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
         "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
        {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]}],
    "system:public-info-viewer": [
        {"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"]}],
}


class User:
    """An authenticated user: a name and its groups (k8s.io/apiserver/pkg/authentication/user)."""

    def __init__(self, name, groups):
        self.name, self.groups = name, list(groups)

    def __repr__(self):
        return "User(%r, %r)" % (self.name, self.groups)


def attributes(method, path, query=""):
    """The authorisation attributes of a request, as requestinfo.go derives them."""
    decoded = urllib.parse.unquote(path)  # Go routes on the decoded path
    parts = decoded.strip("/").split("/")
    non_resource = {"resource": False, "verb": method.lower(), "path": decoded}
    if len(parts) < 3 or parts[0] not in ("api", "apis") or (parts[0] == "apis" and len(parts) < 4):
        return non_resource
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    verb = HTTP_VERBS.get(method, method.lower())
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    params = urllib.parse.parse_qs(query)
    if not name and verb == "get":
        verb = "watch" if params.get("watch", ["false"])[0].lower() not in ("false", "0") else "list"
    if not name and verb in ("list", "watch"):
        # fields.Selector.RequiresExactMatch("metadata.name"): one of the selector's terms (= or ==)
        for term in params.get("fieldSelector", [""])[0].split(","):
            field, equals, value = term.partition("=")
            if field.strip() == "metadata.name" and equals and not value.startswith("!"):
                name = value[1:] if value.startswith("=") else value
                break
    if not name and verb == "delete":
        verb = "deletecollection"
    return {"resource": True, "verb": verb, "group": group, "resource_name": resource, "subresource": subresource,
            "namespace": namespace, "name": name}


def rule_allows(rule, request):
    """rule.go, RuleAllows: a resource rule for a resource request, a nonResourceURLs rule for the others."""
    verbs = rule.get("verbs") or []
    if request["verb"] not in verbs and "*" not in verbs:
        return False
    if not request["resource"]:
        return any(url == "*" or url == request["path"] or (url.endswith("*") and request["path"].startswith(url[:-1]))
                   for url in rule.get("nonResourceURLs") or [])
    groups = rule.get("apiGroups") or []
    if request["group"] not in groups and "*" not in groups:
        return False
    combined = request["resource_name"] + ("/" + request["subresource"] if request["subresource"] else "")
    if not any(r in (combined, "*") or (request["subresource"] and r == "*/" + request["subresource"])
               for r in rule.get("resources") or []):
        return False
    names = rule.get("resourceNames") or []
    return not names or request["name"] in names


def _matching_subject(binding, user, binding_namespace):
    """rbac.go, appliesToUser: the first subject that is the user - a User by name, a Group by membership,
    a ServiceAccount by namespace and name (its namespace defaulting to the binding's)."""
    for subject in binding.get("subjects") or []:
        kind = subject.get("kind")
        if (kind == "User" and subject.get("name") == user.name
                or kind == "Group" and subject.get("name") in user.groups
                or kind == "ServiceAccount" and user.name == "system:serviceaccount:%s:%s" % (
                    subject.get("namespace") or binding_namespace, subject.get("name"))):
            return subject
    return None


def _describe(binding, subject, binding_namespace):
    """rbac.go's describers: which binding allowed a request, for the decision's reason."""
    ref = binding.get("roleRef") or {}
    name = subject.get("name")
    if subject.get("kind") == "ServiceAccount":
        name = "%s/%s" % (name, subject.get("namespace") or binding_namespace)
    whom = "%s %s" % (subject.get("kind"), _quote(name))
    if binding_namespace:
        return "RoleBinding %s of %s %s to %s" % (_quote("%s/%s" % (binding["metadata"]["name"], binding_namespace)),
                                                  ref.get("kind"), _quote(ref.get("name")), whom)
    return "ClusterRoleBinding %s of %s %s to %s" % (_quote(binding["metadata"]["name"]), ref.get("kind"),
                                                     _quote(ref.get("name")), whom)


class Authorizer:
    def __init__(self, store):
        self.store = store

    def rules_of(self, user, namespace):
        """([(rule, the binding it comes from)] that apply to ``user`` in ``namespace`` (cluster scope: ""),
        [errors met on the way]), in rbac.go's order: ClusterRoleBindings, then the namespace's RoleBindings."""
        found, errors = [], []
        if AUTHENTICATED in user.groups:
            for role, rules in BOOTSTRAP_ROLES.items():
                source = 'ClusterRoleBinding %s of ClusterRole %s to Group "%s"' % (_quote(role), _quote(role),
                                                                                   AUTHENTICATED)
                found.extend((rule, source) for rule in rules)
        bindings = [(b, "") for b in self.store.list("clusterrolebindings")]
        if namespace:
            bindings += [(b, namespace) for b in self.store.list("rolebindings", namespace)]
        for binding, binding_namespace in bindings:
            subject = _matching_subject(binding, user, binding_namespace)
            if subject is None:
                continue
            ref = binding.get("roleRef") or {}
            if ref.get("kind") == "Role" and binding_namespace:
                role = self.store.get("roles", binding_namespace, ref.get("name"))
                missing = 'role.rbac.authorization.k8s.io "%s" not found' % ref.get("name")
            else:
                role = self.store.get("clusterroles", "", ref.get("name"))
                missing = 'clusterrole.rbac.authorization.k8s.io "%s" not found' % ref.get("name")
            if role is None:
                errors.append(missing)
                continue
            source = _describe(binding, subject, binding_namespace)
            found.extend((rule, source) for rule in role.get("rules") or [])
        return found, errors

    def authorize(self, user, request):
        """(allowed, reason): the union of k3s's Node and RBAC authorisers (the Node one has no opinion on
        the lab's users); system:masters is let through first, with no reason."""
        if MASTERS in user.groups:
            return True, ""
        rules, errors = self.rules_of(user, request.get("namespace", ""))
        for rule, source in rules:
            if rule_allows(rule, request):
                return True, "RBAC: allowed by %s" % source
        if not errors:
            return False, ""
        return False, "RBAC: %s" % (errors[0] if len(errors) == 1 else "[%s]" % ", ".join(errors))


def forbidden(user, request, reason=""):
    """The 403 kube-apiserver answers (responsewriters.Forbidden, apierrors.NewForbidden)."""
    if not request["resource"]:
        message = "User %s cannot %s path %s" % (_quote(user.name), request["verb"], _quote(request["path"]))
        resource, group, name = "", "", ""
    else:
        resource, group, name = request["resource_name"], request["group"], request["name"]
        shown = resource + ("/" + request["subresource"] if request["subresource"] else "")
        where = ("in the namespace %s" % _quote(request["namespace"]) if request["namespace"]
                 else "at the cluster scope")
        message = "User %s cannot %s resource %s in API group %s %s" % (
            _quote(user.name), request["verb"], _quote(shown), _quote(group), where)
    if reason:
        message = "%s: %s" % (message, reason)
    qualified = resource + ("." + group if group and resource else "")
    if not qualified:
        text = "forbidden: %s" % message
    elif not name:
        text = "%s is forbidden: %s" % (qualified, message)
    else:
        text = "%s %s is forbidden: %s" % (qualified, _quote(name), message)
    # StatusDetails' fields are omitempty; the details object itself is always there.
    details = {key: value for key, value in (("name", name), ("group", group), ("kind", resource)) if value}
    return ApiError(403, text, reason="Forbidden", details=details)


def _quote(text):
    """Go's %q for the plain strings of names and paths."""
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')

"""Access reviews, the questions `kubectl auth can-i` asks the API server.

The lab's API authorises every request (it has no RBAC evaluation yet), so every
review is answered "allowed", as a real API server answers an admin in
system:masters: kube-apiserver v1.31 lets that group through before RBAC
(pkg/kubeapiserver/authorizer/config.go, NewPrivilegedGroups), with an empty
reason. The checks of the review itself follow
pkg/apis/authorization/validation/validation.go and the review REST handlers
(pkg/registry/authorization/*/rest.go): the object is echoed back with a status
and nothing is stored.
"""

from __future__ import annotations

from .errors import ApiError

# What RBAC's rules review lists for cluster-admin (its ClusterRole's two rules).
ALL_RESOURCES = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
ALL_URLS = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]


def _invalid(kind, message, field):
    return ApiError(422, '%s.authorization.k8s.io "" is invalid: %s' % (kind, message),
                    details={"group": "authorization.k8s.io", "kind": kind,
                             "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]})


def answer(kind, namespace, review):
    """The review of ``kind`` (its Kind name) with its status filled in."""
    if not isinstance(review, dict) or not isinstance(review.get("spec"), dict):
        raise _invalid(kind, "spec: Required value", "spec")
    spec = review["spec"]
    answered = {"kind": kind, "apiVersion": "authorization.k8s.io/v1", "metadata": {"creationTimestamp": None},
                "spec": spec}
    if kind == "SelfSubjectRulesReview":
        answered["status"] = {"resourceRules": ALL_RESOURCES, "nonResourceRules": ALL_URLS, "incomplete": False}
        return answered
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if bool(resource) == bool(non_resource):
        raise _invalid(kind, 'spec.resourceAttributes: Invalid value: "null": exactly one of nonResourceAttributes '
                             'or resourceAttributes must be specified', "spec.resourceAttributes")
    if kind == "SubjectAccessReview" and not (spec.get("user") or spec.get("groups") or spec.get("uid")):
        raise _invalid(kind, 'spec.user: Invalid value: "": at least one of user or group must be specified',
                       "spec.user")
    if kind == "LocalSubjectAccessReview" and (resource or {}).get("namespace", namespace) != namespace:
        raise _invalid(kind, 'spec.resourceAttributes.namespace: Invalid value: "%s": must match metadata.namespace'
                       % resource.get("namespace"), "spec.resourceAttributes.namespace")
    answered["status"] = {"allowed": True}
    return answered

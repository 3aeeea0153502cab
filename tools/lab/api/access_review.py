"""Access reviews, the questions `kubectl auth can-i` asks the API server, answered
by the lab's authoriser (rbac.py) for the user who asks (the self reviews) or the
user the review names (SubjectAccessReview, LocalSubjectAccessReview). A request
on the insecure port (authn.py) asks as an admin in system:masters. The checks of
the review itself follow pkg/apis/authorization/validation/validation.go and the
review REST handlers (pkg/registry/authorization/*/rest.go): the object is
echoed back with a status and nothing is stored; SelfSubjectRulesReview lists the
rules as pkg/registry/authorization/selfsubjectrulesreview/rest.go does (for
system:masters, RBAC's two cluster-admin rules).
"""

from __future__ import annotations

from .authn import ADMIN
from .errors import ApiError
from .rbac import User

# What RBAC's rules review lists for cluster-admin (its ClusterRole's two rules).
ALL_RESOURCES = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
ALL_URLS = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]


def _invalid(kind, message, field):
    return ApiError(422, '%s.authorization.k8s.io "" is invalid: %s' % (kind, message),
                    details={"group": "authorization.k8s.io", "kind": kind,
                             "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]})


def answer(kind, namespace, review, authorizer, user):
    """The review of ``kind`` (its Kind name) with its status filled in, asked by ``user`` (None: the
    insecure port)."""
    if not isinstance(review, dict) or not isinstance(review.get("spec"), dict):
        raise _invalid(kind, "spec: Required value", "spec")
    spec = review["spec"]
    asker = user or ADMIN
    answered = {"kind": kind, "apiVersion": "authorization.k8s.io/v1", "metadata": {"creationTimestamp": None},
                "spec": spec}
    if kind == "SelfSubjectRulesReview":
        answered["status"] = rules_review(authorizer, asker, spec.get("namespace") or "")
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
    subject = asker if kind.startswith("Self") else User(spec.get("user") or "", spec.get("groups") or [])
    if resource:
        request = {"resource": True, "verb": resource.get("verb", ""), "group": resource.get("group", ""),
                   "resource_name": resource.get("resource", ""), "subresource": resource.get("subresource", ""),
                   "namespace": namespace if kind == "LocalSubjectAccessReview" else resource.get("namespace", ""),
                   "name": resource.get("name", "")}
    else:
        request = {"resource": False, "verb": non_resource.get("verb", ""), "path": non_resource.get("path", "")}
    allowed, reason = authorizer.authorize(subject, request)
    answered["status"] = {"allowed": allowed}
    if reason:
        answered["status"]["reason"] = reason
    return answered


def rules_review(authorizer, user, namespace):
    if "system:masters" in user.groups:
        return {"resourceRules": ALL_RESOURCES, "nonResourceRules": ALL_URLS, "incomplete": False}
    rules, errors = authorizer.rules_of(user, namespace)
    status = {"resourceRules": [{k: r[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if k in r}
                                for r, _ in rules if "nonResourceURLs" not in r],
              "nonResourceRules": [{"verbs": r["verbs"], "nonResourceURLs": r["nonResourceURLs"]}
                                   for r, _ in rules if "nonResourceURLs" in r],
              "incomplete": bool(errors)}
    if errors:
        status["evaluationError"] = errors[0] if len(errors) == 1 else "[%s]" % ", ".join(errors)
    return status

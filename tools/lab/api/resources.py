"""The kinds the lab's API serves, and the discovery documents real k3s
(Kubernetes 1.31) returns for them: the same groups, versions, verbs, short
names, categories and subresources, so that clients find what they would find
on a cluster (kubectl's `get all` expands the category "all", `get deploy` the
short name). Verbs and categories follow each kind's registry in kubernetes
v1.31 (pkg/registry/*/*/storage/storage.go: NamespaceScoped, ShortNames,
Categories; a REST without DeleteCollection lists no "deletecollection")."""

from __future__ import annotations

from dataclasses import dataclass, field

KUBERNETES_VERSION = "1.31"
GIT_VERSION = "v1.31.4+k3s1"

CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
# namespaces' REST has no DeleteCollection (pkg/registry/core/namespace/storage/storage.go).
CRUD_ONE_BY_ONE = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple = ()
    subresources: tuple = ()       # e.g. ("status", "scale")
    builtin: bool = True           # built-in kinds take strategic merge patches and schema validation
    categories: tuple = field(default=())
    verbs: tuple = CRUD
    stored: bool = True            # False: a review the API answers and keeps nothing of (create only)

    @property
    def api_version(self):
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    @property
    def singular(self):
        return self.kind.lower()


KINDS = [
    Kind("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",), subresources=("status",),
         verbs=CRUD_ONE_BY_ONE),
    Kind("", "v1", "nodes", "Node", namespaced=False, short_names=("no",), subresources=("status",)),
    Kind("", "v1", "pods", "Pod", short_names=("po",), subresources=("status", "log", "portforward", "proxy"),
         categories=("all",)),
    Kind("", "v1", "services", "Service", short_names=("svc",), subresources=("status", "proxy"),
         categories=("all",)),
    Kind("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    Kind("", "v1", "secrets", "Secret"),
    Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short_names=("pvc",),
         subresources=("status",)),
    Kind("", "v1", "events", "Event", short_names=("ev",)),
    Kind("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",), subresources=("token",)),
    Kind("apps", "v1", "deployments", "Deployment", short_names=("deploy",), subresources=("status", "scale"),
         categories=("all",)),
    Kind("apps", "v1", "daemonsets", "DaemonSet", short_names=("ds",), subresources=("status",),
         categories=("all",)),
    Kind("apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",), subresources=("status", "scale"),
         categories=("all",)),
    Kind("coordination.k8s.io", "v1", "leases", "Lease"),
    Kind("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", namespaced=False),
    # Enforced on the lab's network (tools/lab/network_policy.py); no status (removed in 1.28).
    Kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    # Access reviews: kubectl auth can-i asks them (pkg/registry/authorization/*/rest.go: create only).
    Kind("authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", verbs=("create",),
         stored=False),
    Kind("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", namespaced=False,
         verbs=("create",), stored=False),
    Kind("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", namespaced=False,
         verbs=("create",), stored=False),
    Kind("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", namespaced=False,
         verbs=("create",), stored=False),
    # RBAC objects: the lab authorises by them (tools/lab/api/rbac.py).
    Kind("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    Kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    Kind("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    Kind("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    # Custom resources the roles create (their CRDs installed, as on the reference cluster).
    Kind("traefik.io", "v1alpha1", "ingressroutes", "IngressRoute", builtin=False),
    # Their categories as the projects' CRDs declare them (cert-manager v1.16, prometheus-operator v0.79).
    Kind("cert-manager.io", "v1", "certificates", "Certificate", short_names=("cert", "certs"), builtin=False,
         subresources=("status",), categories=("cert-manager",)),
    Kind("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", short_names=("smon",), builtin=False,
         categories=("prometheus-operator",)),
    Kind("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule", short_names=("promrule",),
         builtin=False, categories=("prometheus-operator",)),
]
# Served only as the scale subresource of deployments.
SCALE = Kind("autoscaling", "v1", "scale", "Scale")

BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}


def resource_list(group, version):
    """APIResourceList of one group-version, or None when it is not served."""
    resources = []
    for k in KINDS:
        if (k.group, k.version) != (group, version):
            continue
        entry = {"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced, "kind": k.kind,
                 "verbs": list(k.verbs)}
        if k.short_names:
            entry["shortNames"] = list(k.short_names)
        if k.categories:
            entry["categories"] = list(k.categories)
        if k.stored:
            entry["storageVersionHash"] = "lab"
        resources.append(entry)
        for sub in k.subresources:
            if sub == "scale":
                resources.append({"name": "%s/scale" % k.plural, "singularName": "", "namespaced": k.namespaced,
                                  "group": "autoscaling", "version": "v1", "kind": "Scale",
                                  "verbs": ["get", "patch", "update"]})
            elif sub == "status":
                resources.append({"name": "%s/status" % k.plural, "singularName": "", "namespaced": k.namespaced,
                                  "kind": k.kind, "verbs": ["get", "patch", "update"]})
            elif sub == "proxy":
                resources.append({"name": "%s/proxy" % k.plural, "singularName": "", "namespaced": k.namespaced,
                                  "kind": "PodProxyOptions" if k.plural == "pods" else "ServiceProxyOptions",
                                  "verbs": ["create", "delete", "get", "patch", "update"]})
            elif sub == "token":  # TokenRequest (kubectl create token)
                resources.append({"name": "serviceaccounts/token", "singularName": "", "namespaced": True,
                                  "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
                                  "verbs": ["create"]})
            elif sub == "log":
                resources.append({"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod",
                                  "verbs": ["get"]})
            elif sub == "portforward":
                resources.append({"name": "pods/portforward", "singularName": "", "namespaced": True,
                                  "kind": "PodPortForwardOptions", "verbs": ["create", "get"]})
    if not resources:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "%s/%s" % (group, version) if group else version, "resources": resources}


def group_list():
    groups = {}
    for k in KINDS:
        if k.group:
            groups.setdefault(k.group, [])
            if k.version not in groups[k.group]:
                groups[k.group].append(k.version)
    out = []
    for name, versions in groups.items():
        entries = [{"groupVersion": "%s/%s" % (name, v), "version": v} for v in versions]
        out.append({"name": name, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": out}


def version_info():
    major, minor = KUBERNETES_VERSION.split(".")
    return {"major": major, "minor": minor, "gitVersion": GIT_VERSION, "gitCommit": "lab", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22", "compiler": "gc", "platform": "linux/amd64"}

# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Kubernetes API rights gpu_mode needs: one entry per call it makes.

Two things are derived from ``CALLS`` so that they cannot drift apart: the
403 message (which right the failed call lacked) and the RBAC rules the
``homelab.inference.gpu_mode_access`` role ships. The project's tests record
every request ``gpu_mode.yml`` makes on the local lab and check that these
rules allow each one and that each rule is used."""

from __future__ import annotations

import json
import re
from collections import namedtuple

ROLE = "homelab.inference.gpu_mode_access"
CLUSTER_SCOPED = ("nodes",)

# How kube-apiserver names the verb of a resource request (Kubernetes docs,
# "Authorization: Determine the Request Verb"): GET or HEAD on a named object
# is get, on a collection list (watch with ?watch=true); POST create; PUT
# update; PATCH patch; DELETE delete. A subresource such as services/proxy
# takes the verb of the HTTP method too, whatever path is proxied.
HTTP_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}

# verb:  the RBAC verb of the request.
# scope: the module option naming the namespace, or None for every namespace
#        (a list across namespaces) and cluster-scoped resources.
# name:  what names the object, when RBAC can restrict the call to it (not when
#        creating an object or listing: no name is in the request when RBAC decides).
Call = namedtuple("Call", "verb group resource scope name")

CALLS = {
    # the vLLM Deployment: its mode, the switch, the rollout
    "get_deployment": Call("get", "apps", "deployments", "namespace", "deployment"),
    "patch_deployment": Call("patch", "apps", "deployments", "namespace", "deployment"),
    # its pods: rollout progress, why a pod fails, none left in a GPU-free mode
    "list_pods": Call("list", "", "pods", "namespace", None),
    # a GPU-free mode: no pod of any namespace on a GPU node holds a GPU; the host command at boot: its
    # node has reported this boot
    "list_nodes": Call("list", "", "nodes", None, None),
    "list_pods_on_node": Call("list", "", "pods", None, None),
    # a GPU-free mode: nvidia-smi in a short pod on the GPU node shows the memory free
    "create_check_pod": Call("create", "", "pods", "namespace", None),
    "get_check_pod": Call("get", "", "pods", "namespace", "check_pod"),
    "read_check_pod_log": Call("get", "", "pods/log", "namespace", "check_pod"),
    "delete_check_pod": Call("delete", "", "pods", "namespace", "check_pod"),
    # the drain: the vLLM Service selects the target mode's pods before the Deployment changes, so the
    # gateway stops sending to the pod being replaced; its request gauges on /metrics, through the pod proxy
    # (pod names are generated: RBAC cannot name them), show when its requests have finished
    "get_vllm_service": Call("get", "", "services", "namespace", "vllm_service"),
    "patch_vllm_service": Call("patch", "", "services", "namespace", "vllm_service"),
    "vllm_pod_metrics": Call("get", "", "pods/proxy", "namespace", None),
    # the switch recorded as an Event on the Deployment
    "create_event": Call("create", "", "events", "namespace", None),
    # the lock
    "get_lease": Call("get", "coordination.k8s.io", "leases", "namespace", "lock_name"),
    "create_lease": Call("create", "coordination.k8s.io", "leases", "namespace", None),
    "update_lease": Call("update", "coordination.k8s.io", "leases", "namespace", "lock_name"),
    "delete_lease": Call("delete", "coordination.k8s.io", "leases", "namespace", "lock_name"),
    # verification through the API server's service proxy: vLLM's GET /v1/models,
    # LiteLLM's POST /v1/chat/completions (the proxied name is "service:port")
    "vllm_models": Call("get", "", "services/proxy", "namespace", "vllm_proxy"),
    "litellm_chat": Call("create", "", "services/proxy", "litellm_namespace", "litellm_proxy"),
}

DEFAULTS = {"namespace": "ml", "deployment": "vllm-server", "lock_name": "gpu-mode", "vllm_service": "vllm-api",
            "vllm_port": 8000, "litellm_namespace": "ml", "litellm_service": "litellm", "litellm_port": 4000}


def describe(verb, group, resource, namespace=None, name=None):
    """A right in words, as the API server names resources: 'get on deployments.apps "vllm-server" in namespace ml'."""
    base, dummy, sub = resource.partition("/")
    kind = base + ("." + group if group else "") + ("/" + sub if sub else "")
    where = "(cluster-scoped)" if base in CLUSTER_SCOPED else "in namespace %s" % namespace if namespace \
        else "in all namespaces"
    return "%s on %s%s %s" % (verb, kind, ' "%s"' % name if name else "", where)


def right(call, namespace=None, name=None):
    """The right one of ``CALLS`` needs, for the namespace and object it was made on."""
    entry = CALLS[call]
    return describe(entry.verb, entry.group, entry.resource, namespace if entry.scope else None,
                    name if entry.name else None)


def forbidden(doing, right_text, detail="", role=ROLE):
    """The one line for a 403: what failed, as whom (when the API said), the right to grant, and the role
    that ships the caller's rights (none for callers without one)."""
    try:  # the API server's Status body, or its message already
        detail = json.loads(detail).get("message") or ""
    except (ValueError, TypeError, AttributeError):
        pass
    user = re.search(r'User "([^"]+)"', detail or "")
    return "%s: 403 Forbidden%s; grant %s%s" % (
        doing, " for %s" % user.group(1) if user else "", right_text,
        " (all the rights gpu_mode needs: role %s, docs/gpu_mode.md)" % role if role else "")


def _target(params, name):
    if name == "check_pod":
        return "%s-gpu-free-check" % params["deployment"]
    if name == "vllm_proxy":
        return "%s:%s" % (params["vllm_service"], params["vllm_port"])
    if name == "litellm_proxy":
        return "%s:%s" % (params["litellm_service"], params["litellm_port"])
    return params[name]


def rules(params=None):
    """The RBAC rules for the calls gpu_mode makes with these options (the module's names and defaults).

    Returns ``{"cluster": [rule, ...], "namespaced": [{"namespace": ns, "rules": [rule, ...]}, ...]}``:
    the ClusterRole's rules and each namespace's Role. A namespaced call that a cluster-wide rule
    already allows (listing pods in the vLLM namespace) adds nothing."""
    params = dict(DEFAULTS, **{k: v for k, v in (params or {}).items() if v is not None})
    grants = {}  # (namespace or None, group, resource, name or None) -> verbs, in CALLS order
    for call, entry in CALLS.items():
        if call == "litellm_chat" and not params["litellm_service"]:
            continue  # no check through LiteLLM
        namespace = params[entry.scope] if entry.scope else None
        name = str(_target(params, entry.name)) if entry.name else None
        verbs = grants.setdefault((namespace, entry.group, entry.resource, name), [])
        if entry.verb not in verbs:
            verbs.append(entry.verb)
    cluster = {(group, resource): verbs for (namespace, group, resource, name), verbs in grants.items()
               if namespace is None and name is None}
    result = {"cluster": [], "namespaced": []}
    roles = {}
    for (namespace, group, resource, name), verbs in grants.items():
        if namespace is not None:
            verbs = [v for v in verbs if name is not None or v not in cluster.get((group, resource), [])]
            if not verbs:
                continue
        rule = {"apiGroups": [group], "resources": [resource]}
        if name is not None:
            rule["resourceNames"] = [name]
        rule["verbs"] = verbs
        if namespace is None:
            result["cluster"].append(rule)
        else:
            if namespace not in roles:
                roles[namespace] = {"namespace": namespace, "rules": []}
                result["namespaced"].append(roles[namespace])
            roles[namespace]["rules"].append(rule)
    return result

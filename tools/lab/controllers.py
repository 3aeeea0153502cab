"""The lab's control plane loop: scheduler, DaemonSet controller (the
Deployment and ReplicaSet controllers are rollouts.py), namespace and garbage
collection, the GPU node's device count.
Level-triggered: every pass looks at the store and moves it one step towards
what the objects ask for, as Kubernetes' controllers do."""

from __future__ import annotations

import copy
import uuid
from collections import Counter

from . import events, service_accounts
from .api.admission import admit_pod
from .api.errors import ApiError
from .api.store import now_rfc3339
from .network import pod_ready
from .rollouts import REPLICA_FAILURE, Rollouts, deleting, owned_by, template_hash

GPU = "nvidia.com/gpu"


def container_gpus(container):
    resources = container.get("resources") or {}
    return int((resources.get("limits") or {}).get(GPU) or (resources.get("requests") or {}).get(GPU) or 0)


def gpu_request(pod):
    return sum(container_gpus(c) for c in (pod.get("spec") or {}).get("containers") or [])


# -- scheduling ----------------------------------------------------------------------

def _match_expression(labels, expression):
    key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt"):
        try:
            value = int(labels.get(key))
        except (TypeError, ValueError):
            return False
        return value > int(values[0]) if operator == "Gt" else value < int(values[0])
    return False


def selects_node(pod_spec, node):
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(all(_match_expression(labels, e) for e in term.get("matchExpressions") or [])
                         for term in terms):
        return False
    return True


def tolerates(pod_spec, taint):
    for toleration in pod_spec.get("tolerations") or []:
        if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists":
            if not toleration.get("key") or toleration["key"] == taint["key"]:
                return True
        elif toleration.get("key") == taint["key"] and toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def untolerated(pod_spec, node):
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(pod_spec, taint):
            return taint
    return None


def place(pod, nodes, pods):
    """(node name, None) or (None, the scheduler's message)."""
    spec = pod["spec"]
    reasons = Counter()
    wanted = gpu_request(pod)
    for node in nodes:
        if not selects_node(spec, node):
            reasons["node(s) didn't match Pod's node affinity/selector"] += 1
            continue
        taint = untolerated(spec, node)
        if taint:
            reasons["node(s) had untolerated taint {%s: %s}" % (taint["key"], taint.get("value", ""))] += 1
            continue
        if wanted:
            have = int(((node.get("status") or {}).get("allocatable") or {}).get(GPU, "0"))
            # A terminating pod keeps its GPU until it is gone, as the scheduler counts it.
            used = sum(gpu_request(p) for p in pods if (p.get("spec") or {}).get("nodeName") == node["metadata"][
                "name"] and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
            if used + wanted > have:
                reasons["Insufficient %s" % GPU] += 1
                continue
        return node["metadata"]["name"], None
    detail = ", ".join("%d %s" % (count, reason) for reason, count in sorted(reasons.items()))
    return None, ("0/%d nodes are available: %s. preemption: 0/%d nodes are available: %d Preemption is not "
                  "helpful for scheduling." % (len(nodes), detail, len(nodes), len(nodes)))


# -- the loop's steps ----------------------------------------------------------------

class Controllers:
    def __init__(self, lab):
        self.lab = lab
        self.store = lab.store
        self.rollouts = Rollouts(self.store, self.new_pod, self.delete_pod, self.write_status,
                                 lambda owner, err: self.failed_create(owner, err, "replicaset-controller"))

    def reconcile(self):
        self.namespaces()
        service_accounts.reconcile(self.store, self.lab.ca_pem)
        self.garbage_collect()
        for deployment in self.store.list("deployments"):
            self.deployment(deployment)
        for replica_set in self.store.list("replicasets"):
            self.rollouts.replica_set(replica_set)
        for daemonset in self.store.list("daemonsets"):
            self.daemonset(daemonset)
        self.gpu_nodes()
        self.schedule()

    def new_pod(self, owner, kind, template, node=None, name=None):
        """Create a controller's pod through the API's admission (ApiError when it refuses); the
        controllers name pods by generateName, ``<owner>-``, which a refusal quotes."""
        metadata = copy.deepcopy(template.get("metadata") or {})
        metadata.pop("name", None)
        labels = metadata.setdefault("labels", {})
        labels.setdefault("pod-template-hash", template_hash(template))
        metadata.update(generateName="%s-" % owner["metadata"]["name"], namespace=owner["metadata"]["namespace"],
                        ownerReferences=[{"apiVersion": owner.get("apiVersion", "apps/v1"), "kind": kind,
                                          "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                                          "controller": True, "blockOwnerDeletion": True}])
        spec = copy.deepcopy(template.get("spec") or {})
        spec.setdefault("restartPolicy", "Always")
        if node:
            spec["nodeName"] = node
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec,
               "status": {"phase": "Pending", "conditions": []}}
        service_accounts.reconcile_namespace(self.store, self.store.get("namespaces", "", metadata["namespace"]),
                                             self.lab.ca_pem)
        admit_pod(self.store, pod, wait=False)
        metadata["name"] = name or "%s-%s" % (owner["metadata"]["name"], uuid.uuid4().hex[:10])
        self.store.create("pods", pod)

    def failed_create(self, owner, err, component):
        """A refused pod create, as the controllers report it (controller_utils.go, CreatePodsWithGenerateName):
        a FailedCreate Warning event on the owner."""
        events.record(self.store, owner, "FailedCreate", "Error creating: %s" % err.message, component)

    def delete_pod(self, pod):
        if not deleting(pod):
            pod["metadata"]["deletionTimestamp"] = now_rfc3339()
            self.store.put("pods", pod)

    def write_status(self, plural, obj, status):
        current = self.store.get(plural, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if current and current.get("status") != status:
            current["status"] = status
            self.store.put(plural, current)

    def deployment(self, deployment):
        rollout = self.rollouts.deployment(deployment)
        if rollout is None:
            return
        wanted, active, new = rollout["wanted"], rollout["active"], rollout["new"]
        ready = [p for p in new if pod_ready(p)]
        status = {"observedGeneration": deployment["metadata"].get("generation", 1)}
        counts = {"replicas": len(active), "updatedReplicas": len(new), "readyReplicas": len(ready),
                  "availableReplicas": len(ready)}
        status.update({k: v for k, v in counts.items() if v})
        if wanted - len(ready) > 0 and active:
            status["unavailableReplicas"] = max(len(active), wanted) - len(ready)
        available = len(ready) >= wanted
        status["conditions"] = [
            {"type": "Available", "status": "True" if available else "False",
             "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
             "message": "Deployment has %s minimum availability." % ("" if available else "not")},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable" if available else
             "ReplicaSetUpdated", "message": 'ReplicaSet "%s" %s.' % (
                 rollout["new_name"], "has successfully progressed" if available else "is progressing")}]
        # A ReplicaSet's ReplicaFailure moves onto the Deployment (pkg/controller/deployment/progress.go,
        # getReplicaFailures), and goes when none is left.
        failures = [c for rs in self.rollouts.owned("replicasets", deployment)
                    for c in (rs.get("status") or {}).get("conditions") or [] if c.get("type") == REPLICA_FAILURE]
        if failures:
            status["conditions"].append({k: failures[0][k] for k in ("type", "status", "reason", "message")})
        self.write_status("deployments", deployment, self._stable(deployment, status))

    @staticmethod
    def _stable(obj, status):
        """Keep condition timestamps from changing on every pass (no needless writes)."""
        previous = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        stamp = now_rfc3339()
        for condition in status.get("conditions", []):
            old = previous.get(condition["type"])
            same = old and old.get("status") == condition["status"] and old.get("reason") == condition["reason"]
            condition["lastTransitionTime"] = old["lastTransitionTime"] if same else stamp
            condition["lastUpdateTime"] = old["lastUpdateTime"] if same else stamp
        return status

    def daemonset(self, daemonset):
        if deleting(daemonset):
            return
        spec = daemonset.get("spec") or {}
        template = spec.get("template") or {}
        current_hash = template_hash(template)
        pods = [p for p in self.store.list("pods", daemonset["metadata"]["namespace"]) if owned_by(p, daemonset)]
        nodes = [n for n in self.store.list("nodes") if selects_node(template.get("spec") or {}, n)
                 and not untolerated(template.get("spec") or {}, n)]
        node_names = {n["metadata"]["name"] for n in nodes}
        for pod in pods:
            stale = pod["metadata"]["labels"].get("pod-template-hash") != current_hash
            if not deleting(pod) and (stale or pod["spec"].get("nodeName") not in node_names):
                self.delete_pod(pod)
        for node in node_names:
            if not any(p["spec"].get("nodeName") == node for p in pods):
                try:
                    self.new_pod(daemonset, "DaemonSet", template, node=node)
                except ApiError as err:
                    self.failed_create(daemonset, err, "daemonset-controller")
        active = [p for p in pods if not deleting(p)]
        ready = [p for p in active if pod_ready(p)]
        status = {"observedGeneration": daemonset["metadata"].get("generation", 1),
                  "desiredNumberScheduled": len(node_names), "currentNumberScheduled": len(active),
                  "numberMisscheduled": 0, "numberReady": len(ready), "updatedNumberScheduled": len(active),
                  "numberAvailable": len(ready)}
        if len(node_names) - len(ready) > 0:
            status["numberUnavailable"] = len(node_names) - len(ready)
        self.write_status("daemonsets", daemonset, status)

    def gpu_nodes(self):
        """A GPU node advertises its GPU only while the device plugin runs on it, as on a real node.

        The count comes from the plugin's registration with the kubelet, which NVIDIA's
        k8s-device-plugin (v0.17) makes only after NVML initialised: a plugin that cannot load
        NVML (the lab's device-plugin fault) never registers, even in the moments a restart of its
        crash-looping container is running."""
        registered = not self.lab.faults.get("device_plugin")
        plugin_nodes = {p["spec"].get("nodeName") for p in self.store.list("pods") if registered and pod_ready(p)
                        and any("k8s-device-plugin" in c.get("image", "") for c in p["spec"].get("containers") or [])}
        for node in self.store.list("nodes"):
            if (node["metadata"].get("labels") or {}).get(GPU) != "true":
                continue
            count = "1" if node["metadata"]["name"] in plugin_nodes else "0"
            status = copy.deepcopy(node.get("status") or {})
            for field in ("capacity", "allocatable"):
                status.setdefault(field, {})[GPU] = count
            self.write_status("nodes", node, status)

    def schedule(self):
        nodes = self.store.list("nodes")
        pods = self.store.list("pods")
        for pod in pods:
            if deleting(pod) or pod["spec"].get("nodeName"):
                continue
            node, message = place(pod, nodes, pods)
            current = self.store.get("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
            if current is None:
                continue
            if node:
                current["spec"]["nodeName"] = node
                pod["spec"]["nodeName"] = node  # later pods in this pass see the GPU as taken
                current["status"] = {"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_rfc3339()}]}
                self.store.put("pods", current)
            else:
                condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                             "message": message}
                old = (current.get("status") or {}).get("conditions") or []
                if not old or old[0].get("message") != message:
                    condition["lastTransitionTime"] = now_rfc3339()
                    current["status"] = {"phase": "Pending", "conditions": [condition]}
                    self.store.put("pods", current)

    def namespaces(self):
        for namespace in self.store.list("namespaces"):
            if not deleting(namespace):
                continue
            name = namespace["metadata"]["name"]
            remaining = 0
            for plural in ("deployments", "replicasets", "daemonsets", "services", "configmaps", "secrets",
                           "persistentvolumeclaims", "leases", "events", "serviceaccounts", "roles", "rolebindings",
                           "ingressroutes", "certificates", "servicemonitors", "prometheusrules"):
                for obj in self.store.list(plural, name):
                    self.store.delete(plural, name, obj["metadata"]["name"])
            for pod in self.store.list("pods", name):
                remaining += 1
                self.delete_pod(pod)
            if not remaining:
                self.store.delete("namespaces", "", name)

    def garbage_collect(self):
        """Dependents whose owners are gone go too (the ReplicaSets of a Deployment, then their pods)."""
        for plural in ("replicasets", "pods"):
            owners = {o["metadata"]["uid"] for kind in ("deployments", "replicasets", "daemonsets")
                      for o in self.store.list(kind) if not deleting(o)}
            for obj in self.store.list(plural):
                refs = obj["metadata"].get("ownerReferences") or []
                if refs and not any(ref.get("uid") in owners for ref in refs):
                    if plural == "pods":
                        self.delete_pod(obj)
                    else:
                        self.store.delete(plural, obj["metadata"]["namespace"], obj["metadata"]["name"])

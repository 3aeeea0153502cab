"""Deployments and their ReplicaSets, as kube-controller-manager v1.31 runs them
(pkg/controller/deployment: sync.go, recreate.go, rolling.go and
util/deployment_util.go; pkg/controller/replicaset/replica_set.go):

- a Deployment owns one ReplicaSet per pod template, named after the
  template's `pod-template-hash`, which also labels its pods and joins its
  selector; the ReplicaSet owns the pods;
- each ReplicaSet carries the revision of the rollout that made it
  (`deployment.kubernetes.io/revision`, one more than the highest before); a
  template that comes back (`kubectl rollout undo`) takes its old ReplicaSet
  with a new revision, the earlier ones kept in `revision-history`; the
  Deployment's annotations (`kubernetes.io/change-cause`) are copied on;
- `Recreate` scales the old ReplicaSets to 0 and the new one up only once
  their pods are gone; `RollingUpdate` (the lab's short form, as before)
  scales the new one up at once and the old ones down once the new pods are
  ready;
- at most `revisionHistoryLimit` (10) old ReplicaSets are kept, scaled to 0.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random

from .api.errors import ApiError
from .api.store import now_rfc3339
from .network import pod_ready

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
REPLICA_FAILURE = "ReplicaFailure"
# What the controller does not copy from a Deployment onto its ReplicaSets (deployment_util.go, skipCopyAnnotation).
NOT_COPIED = {"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY, DESIRED, MAX_REPLICAS}
# k8s.io/apimachinery pkg/util/rand: the letters of generated names and hashes (no vowels, no look-alikes).
SAFE_LETTERS = "bcdfghjklmnpqrstvwxz2456789"


def safe_encode(text):
    return "".join(SAFE_LETTERS[ord(char) % len(SAFE_LETTERS)] for char in text)


def template_hash(template):
    """The template's hash as the controller spells it (rand.SafeEncodeString of a 32-bit hash)."""
    digest = int(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:8], 16)
    return safe_encode(str(digest))


def generated_name(prefix):
    return "%s-%s" % (prefix, "".join(random.choice(SAFE_LETTERS) for _ in range(5)))


def owned_by(obj, owner):
    return any(ref.get("uid") == owner["metadata"]["uid"] for ref in obj["metadata"].get("ownerReferences") or [])


def deleting(obj):
    return bool(obj["metadata"].get("deletionTimestamp"))


def owner_reference(owner, kind):
    return [{"apiVersion": "apps/v1", "kind": kind, "name": owner["metadata"]["name"],
             "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


def revision(replica_set):
    try:
        return int((replica_set["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


class Rollouts:
    """The Deployment and ReplicaSet controllers; ``new_pod`` and ``delete_pod`` are the control loop's."""

    def __init__(self, store, new_pod, delete_pod, write_status, failed_create):
        self.store, self.new_pod, self.delete_pod, self.write_status = store, new_pod, delete_pod, write_status
        self.failed_create = failed_create

    def owned(self, plural, owner):
        return self.store.list(plural, owner["metadata"]["namespace"], where=lambda o: owned_by(o, owner))

    # -- Deployments ----------------------------------------------------------------------

    def deployment(self, deployment):
        if deleting(deployment):
            return None
        spec = deployment.get("spec") or {}
        wanted = spec.get("replicas", 1)
        template = spec.get("template") or {}
        current_hash = template_hash(template)
        for pod in self.owned("pods", deployment):   # made by a lab from before ReplicaSets (a kept state dir)
            self.delete_pod(pod)
        sets = [rs for rs in self.owned("replicasets", deployment) if not deleting(rs)]
        new = next((rs for rs in sets if (rs["metadata"].get("labels") or {}).get(HASH_LABEL) == current_hash), None)
        old = [rs for rs in sets if rs is not new]
        pods = {rs["metadata"]["uid"]: self.owned("pods", rs) for rs in sets}
        latest = max([revision(rs) for rs in old] or [0])
        if new is None:
            new = self.create_replica_set(deployment, template, current_hash, latest + 1)
            pods[new["metadata"]["uid"]] = []
        new = self.keep_revision(deployment, new, latest)
        new_pods = pods[new["metadata"]["uid"]]
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            for rs in old:
                self.scale(rs, 0, wanted)
            old_pods = [p for rs in old for p in pods[rs["metadata"]["uid"]]]
            self.scale(new, wanted if not old_pods else min(new["spec"].get("replicas", 0), wanted), wanted)
        else:
            self.scale(new, wanted, wanted)
            # Old pods go once the new ones serve: no gap in a rolling update.
            if wanted == 0 or sum(1 for p in new_pods if pod_ready(p) and not deleting(p)) >= wanted:
                for rs in old:
                    self.scale(rs, 0, wanted)
        self.prune_history(deployment, old, pods)
        annotations = deployment["metadata"].get("annotations") or {}
        if annotations.get(REVISION) != str(revision(new)):
            current = self.store.get("deployments", deployment["metadata"]["namespace"],
                                     deployment["metadata"]["name"])
            if current:
                current["metadata"].setdefault("annotations", {})[REVISION] = str(revision(new))
                self.store.put("deployments", current)
        active = [p for rs_pods in pods.values() for p in rs_pods if not deleting(p)]
        return {"wanted": wanted, "active": active, "new": [p for p in new_pods if not deleting(p)],
                "new_name": new["metadata"]["name"]}

    def create_replica_set(self, deployment, template, current_hash, number):
        spec = deployment.get("spec") or {}
        template = copy.deepcopy(template)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = current_hash
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = current_hash
        annotations = {k: v for k, v in (deployment["metadata"].get("annotations") or {}).items()
                       if k not in NOT_COPIED}
        annotations.update({REVISION: str(number), DESIRED: str(spec.get("replicas", 1)),
                            MAX_REPLICAS: str(spec.get("replicas", 1))})
        replica_set = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "%s-%s" % (deployment["metadata"]["name"], current_hash),
                         "namespace": deployment["metadata"]["namespace"],
                         "labels": dict(template["metadata"]["labels"]), "annotations": annotations,
                         "ownerReferences": owner_reference(deployment, "Deployment")},
            "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds", 0), "selector": selector,
                     "template": template},
            "status": {"replicas": 0}}
        return self.store.create("replicasets", replica_set, generation=True)

    def keep_revision(self, deployment, replica_set, latest):
        """The new ReplicaSet's revision tops the others (a template that comes back takes a new one), and
        it carries the Deployment's annotations."""
        annotations = dict(replica_set["metadata"].get("annotations") or {})
        wanted = dict(annotations)
        wanted.update((k, v) for k, v in (deployment["metadata"].get("annotations") or {}).items()
                      if k not in NOT_COPIED)
        if revision(replica_set) <= latest:
            history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
            wanted[REVISION_HISTORY] = ",".join(history + [str(revision(replica_set))])
            wanted[REVISION] = str(latest + 1)
        if wanted == annotations:
            return replica_set
        replica_set["metadata"]["annotations"] = wanted
        return self.store.put("replicasets", replica_set)

    def scale(self, replica_set, replicas, deployment_replicas):
        annotations = replica_set["metadata"].setdefault("annotations", {})
        if replica_set["spec"].get("replicas") == replicas and annotations.get(DESIRED) == str(deployment_replicas):
            return replica_set
        replica_set["spec"]["replicas"] = replicas
        annotations[DESIRED] = annotations[MAX_REPLICAS] = str(deployment_replicas)
        replica_set["metadata"]["generation"] = replica_set["metadata"].get("generation", 1) + 1
        stored = self.store.put("replicasets", replica_set)
        replica_set.update(stored)
        return stored

    def prune_history(self, deployment, old, pods):
        limit = (deployment.get("spec") or {}).get("revisionHistoryLimit", 10)
        idle = sorted((rs for rs in old if not rs["spec"].get("replicas") and not pods[rs["metadata"]["uid"]]),
                      key=revision)
        for rs in idle[:max(0, len(idle) - limit)]:
            self.store.delete("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"])

    # -- ReplicaSets --------------------------------------------------------------------------

    def replica_set(self, replica_set):
        if deleting(replica_set):
            return
        wanted = (replica_set.get("spec") or {}).get("replicas", 1)
        pods = [p for p in self.owned("pods", replica_set) if not deleting(p)]
        refused = None
        for _ in range(wanted - len(pods)):
            try:
                self.new_pod(replica_set, "ReplicaSet", replica_set["spec"]["template"],
                             name=generated_name(replica_set["metadata"]["name"]))
            except ApiError as err:  # the API's admission refused it: reported, tried again next pass
                refused = err
                self.failed_create(replica_set, err)
                break
        # Which pods go first (replica_set.go, getPodsToDelete): unscheduled, then not ready, then the newest.
        newest_first = sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)
        doomed = sorted(newest_first, key=lambda p: (bool(p["spec"].get("nodeName")), pod_ready(p)))
        for pod in doomed[:max(0, len(pods) - wanted)]:
            self.delete_pod(pod)
        ready = [p for p in pods if pod_ready(p)]
        status = {"replicas": len(pods), "observedGeneration": replica_set["metadata"].get("generation", 1)}
        counts = {"fullyLabeledReplicas": len(pods), "readyReplicas": len(ready), "availableReplicas": len(ready)}
        status.update({k: v for k, v in counts.items() if v})
        if refused is not None:
            # replica_set_utils.go calculateStatus: the failed create as a condition, until a create succeeds
            previous = next((c for c in (replica_set.get("status") or {}).get("conditions") or []
                             if c.get("type") == REPLICA_FAILURE and c.get("message") == refused.message), None)
            status["conditions"] = [previous or {"type": REPLICA_FAILURE, "status": "True", "reason": "FailedCreate",
                                                 "message": refused.message, "lastTransitionTime": now_rfc3339()}]
        self.write_status("replicasets", replica_set, status)


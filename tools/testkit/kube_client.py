"""FAKE of the gpu_mode module's client boundary (_kube_access.KubeAccess).

It holds one vLLM Deployment and plays its controller and kubelet: a patch
that changes the pod template rolls the pods (Recreate), a new pod becomes
ready after ``load_reads`` reads of the Deployment (tests) or ``load_seconds``
of wall time (benchmarks), and a FAKE vLLM server
(a real HTTP server) serves exactly what the ready pod serves, or refuses
connections while no pod is ready. Faults: a model whose pod is OOMKilled,
or stays Pending for lack of a free GPU. Leases keep resourceVersions and
answer 409 on a stale update, as the API does.

The full API emulator of the local lab is the end-to-end stand-in; this fake
only has to be faithful at the boundary the module uses."""

from __future__ import annotations

import copy
import itertools
import threading
import time

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from ansible_collections.homelab.inference.plugins.module_utils._kube_access import Conflict, KubeError


def merge(target, patch):
    """Strategic merge for what gpu_mode patches: maps merge, containers merge by name, other lists replace."""
    for key, value in patch.items():
        if key == "containers" and isinstance(value, list):
            by_name = {c["name"]: c for c in target.setdefault("containers", [])}
            for change in value:
                if change["name"] in by_name:
                    merge(by_name[change["name"]], change)
                else:
                    target["containers"].append(copy.deepcopy(change))
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeKube:
    def __init__(self, deployment, vllm, load_reads=3, namespace="ml", load_seconds=None):
        self.deployment = copy.deepcopy(deployment)
        self.deployment["metadata"].setdefault("generation", 1)
        self.deployment["metadata"]["resourceVersion"] = "1"
        self.vllm = vllm                    # a lab.gateway_rig.Upstreams: restart_vllm()/vllm.stop()
        self.load_reads = load_reads
        self.load_seconds = load_seconds
        self.ready_at = None                # when the latest rollout's backend was ready (or gone)
        self.patched_at = None
        self.namespace = namespace
        self.faults = {}                    # served model -> "oom" | "no_gpu"
        self.leases = {}
        self.versions = itertools.count(2)
        self.pods = []
        self.gpu_node_pods = []             # other pods on the GPU node
        # What nvidia-smi shows in the GPU check pod: MiB used and the processes (pid, name, MiB)
        self.gpu_memory_used = 1
        self.gpu_processes = []
        self.check_pods = {}
        self.recorded = []                  # the Events the switches recorded
        # The vLLM Service, selecting the current mode's pods (gpu_mode points it at the target first)
        self.service = {"metadata": {"name": "vllm-api", "namespace": namespace, "annotations": {}},
                        "spec": {"selector": dict(self.deployment["spec"]["selector"]["matchLabels"],
                                                  **{_gpu_mode.MODE_LABEL: self.deployment["metadata"]["labels"]
                                                     .get(_gpu_mode.MODE_LABEL)})}}
        self.calls = []
        self.fail_with = None               # a KubeError every call raises (an API outage)
        self.lock = threading.Lock()
        self._settle(initial=True)

    # -- the simulated controller ------------------------------------------------

    def _template_hash(self):
        return str(hash(repr(self.deployment["spec"]["template"])))

    def _served(self):
        return _gpu_mode.served_model_name(self.deployment)

    def _settle(self, initial=False):
        """Start a rollout of the current template (Recreate: old pods go first)."""
        spec = self.deployment["spec"]
        for pod in self.pods:
            pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            pod["reads_left"] = 1
        self.rollout = {"template": self._template_hash(), "reads": 0}
        if initial:
            self.pods = []
            if spec.get("replicas", 1):
                self.pods = [self._new_pod(ready=True)]
                self._serve()
        self._status()

    def _new_pod(self, ready=False):
        name = "vllm-server-%s" % next(self.versions)
        pod = {"metadata": {"name": name, "namespace": self.namespace,
                            "labels": dict(self.deployment["spec"]["selector"]["matchLabels"])},
               # the template's containers, as the ReplicaSet controller makes its pods
               "spec": {"containers": [dict(copy.deepcopy(c), resources={"limits": {_gpu_mode.GPU_RESOURCE: "1"}})
                                       for c in self.deployment["spec"]["template"]["spec"]["containers"]]},
               "status": {"phase": "Running" if ready else "Pending",
                          "conditions": [{"type": "Ready", "status": "True"}] if ready else [],
                          "containerStatuses": [{"name": "vllm", "ready": ready,
                                                 "state": {"running": {}} if ready else {
                                                     "waiting": {"reason": "ContainerCreating"}}}]},
               "model": self._served(), "ready": ready, "created": time.monotonic()}
        return pod

    def _serve(self):
        """The FAKE vLLM serves what the ready pod serves, and refuses connections without one."""
        ready = [p for p in self.pods if p.get("ready") and "deletionTimestamp" not in p["metadata"]]
        server = self.vllm.vllm
        if ready and (server.stopped or server.models != [ready[0]["model"]]):
            self.vllm.restart_vllm(models=[ready[0]["model"]])
        elif not ready and not server.stopped:
            server.stop()

    def _tick(self):
        """One read's worth of progress."""
        spec = self.deployment["spec"]
        for pod in list(self.pods):
            if "deletionTimestamp" in pod["metadata"]:
                pod["reads_left"] -= 1
                if pod["reads_left"] < 0:
                    self.pods.remove(pod)
                    if not self.pods and not spec.get("replicas", 1):
                        self.ready_at = time.monotonic()
        self._serve()
        if any("deletionTimestamp" in p["metadata"] for p in self.pods):
            return self._status()
        wanted = spec.get("replicas", 1)
        if wanted and not self.pods:
            self.pods.append(self._new_pod())
        self.rollout["reads"] += 1
        for pod in self.pods:
            fault = self.faults.get(pod["model"])
            status = pod["status"]
            if fault == "no_gpu":
                status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                         "message": "0/2 nodes are available: 1 Insufficient nvidia.com/gpu."}]
            elif fault == "oom" and self.rollout["reads"] >= 2:
                status["phase"] = "Running"
                status["containerStatuses"] = [{"name": "vllm", "ready": False, "restartCount": 1,
                                                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                                "lastState": {"terminated": {"reason": "OOMKilled",
                                                                             "exitCode": 137}}}]
            elif not fault and not pod["ready"] and self._loaded(pod):
                pod["ready"] = True
                self.ready_at = (pod["created"] + self.load_seconds) if self.load_seconds is not None \
                    else time.monotonic()
                status["phase"] = "Running"
                status["conditions"] = [{"type": "Ready", "status": "True"}]
                status["containerStatuses"] = [{"name": "vllm", "ready": True, "state": {"running": {}}}]
        self._serve()
        self._status()

    def _loaded(self, pod):
        if self.load_seconds is not None:
            return time.monotonic() - pod["created"] >= self.load_seconds
        return self.rollout["reads"] >= self.load_reads

    def _status(self):
        live = [p for p in self.pods if "deletionTimestamp" not in p["metadata"]]
        ready = [p for p in live if p["ready"]]
        status = {"observedGeneration": self.deployment["metadata"]["generation"], "replicas": len(self.pods),
                  "updatedReplicas": len(live), "readyReplicas": len(ready), "availableReplicas": len(ready)}
        if len(live) > len(ready):
            status["unavailableReplicas"] = len(live) - len(ready)
        self.deployment["status"] = {k: v for k, v in status.items() if v or k == "observedGeneration"}

    def _check(self, call):
        self.calls.append(call)
        if self.fail_with:
            raise self.fail_with

    # -- the boundary -------------------------------------------------------------

    def _ours(self, namespace, name):
        return namespace == self.namespace and name == self.deployment["metadata"]["name"]

    def get_deployment(self, namespace, name):
        with self.lock:
            self._check("get_deployment")
            if not self._ours(namespace, name):
                return None
            self._tick()
            return copy.deepcopy(self.deployment)

    def patch_deployment(self, namespace, name, patch):
        with self.lock:
            self._check("patch_deployment")
            if not self._ours(namespace, name):
                raise KubeError("deployments.apps %s not found" % name, 404)
            before = self._template_hash()
            replicas_before = self.deployment["spec"].get("replicas", 1)
            merge(self.deployment, patch)
            self.patched_at = time.monotonic()
            if self._template_hash() != before or self.deployment["spec"].get("replicas", 1) != replicas_before:
                self.deployment["metadata"]["generation"] += 1
                self._settle()
            self.deployment["metadata"]["resourceVersion"] = str(next(self.versions))
            return copy.deepcopy(self.deployment)

    def get_service(self, namespace, name):
        with self.lock:
            self._check("get_vllm_service")
            ours = namespace == self.namespace and name == self.service["metadata"]["name"]
            return copy.deepcopy(self.service) if ours else None

    def patch_service(self, namespace, name, patch):
        with self.lock:
            self._check("patch_vllm_service")
            merge(self.service, patch)
            return copy.deepcopy(self.service)

    def list_pods(self, namespace, label_selector):
        with self.lock:
            self._check("list_pods")
            return [copy.deepcopy({k: v for k, v in p.items() if k in ("metadata", "spec", "status")})
                    for p in self.pods]

    def nodes(self, label_selector):
        self._check("nodes")
        return ["gpu-node"]

    def pods_on_node(self, node):
        self._check("pods_on_node")
        return self.list_pods(self.namespace, "") + copy.deepcopy(self.gpu_node_pods)

    def create_pod(self, namespace, body):
        """The GPU check pod: it runs nvidia-smi at once and has Succeeded when next read."""
        self._check("create_pod")
        name = body["metadata"]["name"]
        if name in self.check_pods:
            raise Conflict('pods "%s" already exists' % name, 409)
        self.check_pods[name] = copy.deepcopy(body)
        self.check_pods[name]["status"] = {"phase": "Succeeded"}
        return copy.deepcopy(self.check_pods[name])

    def get_pod(self, namespace, name):
        self._check("get_pod")
        return copy.deepcopy(self.check_pods.get(name))

    def read_pod_log(self, namespace, name, container):
        self._check("read_pod_log")
        if name not in self.check_pods:
            raise KubeError('pods "%s" not found' % name, 404)
        if container == "memory":
            return "%s\n" % self.gpu_memory_used
        return "".join("%s, %s, %s\n" % (p["pid"], p["name"], p["used_mib"]) for p in self.gpu_processes)

    def delete_pod(self, namespace, name):
        self._check("delete_pod")
        return self.check_pods.pop(name, None)

    def create_event(self, namespace, body):
        self._check("create_event")
        self.recorded.append(copy.deepcopy(body))
        return copy.deepcopy(body)

    def get_lease(self, namespace, name):
        with self.lock:
            self._check("get_lease")
            return copy.deepcopy(self.leases.get(name))

    def create_lease(self, namespace, body):
        with self.lock:
            self._check("create_lease")
            name = body["metadata"]["name"]
            if name in self.leases:
                raise Conflict("leases %s already exists" % name, 409)
            lease = copy.deepcopy(body)
            lease["metadata"]["resourceVersion"] = str(next(self.versions))
            self.leases[name] = lease
            return copy.deepcopy(lease)

    def replace_lease(self, namespace, body):
        with self.lock:
            self._check("replace_lease")
            name = body["metadata"]["name"]
            current = self.leases.get(name)
            if current is None:
                raise KubeError("lease %s not found" % name, 404)
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                raise Conflict("the object has been modified; please apply your changes to the latest version", 409)
            lease = copy.deepcopy(body)
            lease["metadata"]["resourceVersion"] = str(next(self.versions))
            self.leases[name] = lease
            return copy.deepcopy(lease)

    def delete_lease(self, namespace, name):
        with self.lock:
            self._check("delete_lease")
            self.leases.pop(name, None)

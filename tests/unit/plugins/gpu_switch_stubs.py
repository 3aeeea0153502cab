"""Stubs of a GPU mode switch's three boundaries - the API (the vLLM Deployment and the lock's
Lease), vLLM and LiteLLM - on a fake clock, shared by the switch's tests (module_utils) and the
gpu_mode module's tests (modules)."""

from __future__ import annotations

import copy
import json

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from ansible_collections.homelab.inference.plugins.module_utils._service_http import ServiceError

MODELS = [
    {"name": "vllm-qwen", "backend": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct-AWQ", "context": 8192},
    {"name": "vllm-r1", "backend": "vllm", "model": "r1-awq", "context": 8192},
]
TABLE = _gpu_mode.mode_table(MODELS, {"ml": {"vllm_model": "vllm-qwen"}, "r1": {"vllm_model": "vllm-r1"},
                                      "gaming": {"vllm_model": None}}, [], 8000)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class Events(list):
    """What happened, in order, across the stubs."""


class StubKube:
    """The vLLM Deployment; a patch rolls out at once (the rollout is not under test here)."""

    def __init__(self, events, mode="ml"):
        self.events = events
        served = TABLE[mode]["vllm_model"]
        self.deployment = {
            "metadata": {"name": "vllm-server", "generation": 1, "labels": {_gpu_mode.MODE_LABEL: mode},
                         "annotations": {}},
            "spec": {"replicas": 1 if served else 0, "selector": {"matchLabels": {"app": "vllm"}},
                     "template": {"metadata": {}, "spec": {"containers": [
                         {"name": "vllm", "args": list(TABLE[mode]["args"] or TABLE["ml"]["args"])}]}}}}
        self._roll()
        # The vLLM Service: it selects the pods of one mode (a switch points it at the target first)
        self.service = {"metadata": {"name": "vllm-api", "annotations": {}},
                        "spec": {"selector": {"app": "vllm", _gpu_mode.MODE_LABEL: mode}}}
        self.lease = None
        # What nvidia-smi shows in the GPU check pod, and the pod while it exists
        self.gpu_memory_used, self.gpu_processes, self.check_pod = 1, [], None
        self.recorded = []      # the Events the switches recorded

    def _roll(self):
        replicas = self.deployment["spec"]["replicas"]
        self.deployment["status"] = {"observedGeneration": self.deployment["metadata"]["generation"],
                                     "replicas": replicas, "updatedReplicas": replicas,
                                     "availableReplicas": replicas, "readyReplicas": replicas}

    def serving(self):
        if not self.deployment["spec"]["replicas"]:
            return None
        return _gpu_mode.served_model_name(self.deployment)

    def get_deployment(self, namespace, name):
        return copy.deepcopy(self.deployment)

    def patch_deployment(self, namespace, name, patch):
        if "spec" not in patch:  # the record of who entered the mode, alone
            self.events.append(("claim", json.loads(patch["metadata"]["annotations"][_gpu_mode.SETTER_ANNOTATION])))
            self.deployment["metadata"]["annotations"].update(patch["metadata"]["annotations"])
            return copy.deepcopy(self.deployment)
        self.events.append(("patch", patch["metadata"]["labels"][_gpu_mode.MODE_LABEL]))
        spec = patch["spec"]
        self.deployment["spec"]["replicas"] = spec["replicas"]
        self.deployment["metadata"]["labels"].update(patch["metadata"]["labels"])
        annotations = self.deployment["metadata"]["annotations"]
        for key, value in patch["metadata"].get("annotations", {}).items():  # a strategic merge: null removes
            annotations.pop(key, None) if value is None else annotations.__setitem__(key, value)
        containers = (spec["template"].get("spec") or {}).get("containers")
        if containers:
            self.deployment["spec"]["template"]["spec"]["containers"][0]["args"] = containers[0]["args"]
        self.deployment["metadata"]["generation"] += 1
        self._roll()
        return copy.deepcopy(self.deployment)

    def list_pods(self, namespace, selector):
        if not self.serving():
            return []
        return [{"metadata": {"name": "vllm-server-1"},
                 "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}]

    def get_service(self, namespace, name):
        return copy.deepcopy(self.service)

    def patch_service(self, namespace, name, patch):
        self.events.append(("select", patch["spec"]["selector"][_gpu_mode.MODE_LABEL]))
        self.service["spec"]["selector"].update(patch["spec"]["selector"])

    def nodes(self, selector):
        return ["gpu-1"]

    def pods_on_node(self, node):
        return []

    def create_pod(self, namespace, body):
        self.events.append(("check pod", body["metadata"]["name"]))
        self.check_pod = dict(body, status={"phase": "Succeeded"})

    def get_pod(self, namespace, name):
        return copy.deepcopy(self.check_pod)

    def read_pod_log(self, namespace, name, container):
        if container == "memory":
            return "%d\n" % self.gpu_memory_used
        return "".join("%s, %s, %s\n" % process for process in self.gpu_processes)

    def delete_pod(self, namespace, name):
        self.check_pod = None

    def create_event(self, namespace, body):
        self.recorded.append(body)

    def get_lease(self, namespace, name):
        return copy.deepcopy(self.lease)

    def create_lease(self, namespace, body):
        self.events.append(("lock", body["spec"]["holderIdentity"]))
        self.lease = dict(body, metadata=dict(body["metadata"], resourceVersion="1"))

    def replace_lease(self, namespace, body):
        self.create_lease(namespace, body)

    def delete_lease(self, namespace, name):
        self.events.append(("unlock", name))
        self.lease = None


class StubVllm:
    """vLLM's /v1/models, and its /metrics: requests in flight, one number per read (the last one repeats)."""

    def __init__(self, kube, in_flight=(0,)):
        self.kube = kube
        self.in_flight = list(in_flight)
        self.reads = 0

    def request(self, method, path, body=None, timeout=30, headers=None):
        if self.kube.serving() is None:
            raise ServiceError("cannot reach pod ml/vllm-server-1:8000: connection refused")
        running = self.in_flight.pop(0) if len(self.in_flight) > 1 else self.in_flight[0]
        self.reads += 1
        return 200, ('# HELP vllm:num_requests_running Number of requests in model execution batches.\n'
                     'vllm:num_requests_running{engine="0",model_name="%s"} %.1f\n'
                     'vllm:num_requests_waiting{engine="0",model_name="%s"} 0.0\n'
                     % (self.kube.serving(), running, self.kube.serving()))

    def request_json(self, method, path, body=None, timeout=30, headers=None):
        served = self.kube.serving()
        if served is None:
            raise ServiceError("cannot reach service ml/vllm-api:8000: connection refused")
        return 200, {"data": [{"id": served}]}


class StubLitellm:
    """LiteLLM: each model's answers in turn (the last one repeats); an answer is a model group that answers
    200, ``None`` for a request that times out, after ``seconds`` on the clock."""

    def __init__(self, events, clock, kube):
        self.events, self.clock, self.kube = events, clock, kube
        self.script = {}
        self.asked = []

    def answers(self, model, *answers):
        self.script[model] = list(answers)

    def exchange(self, method, path, body=None, timeout=30, headers=None):
        model = body["model"]
        self.asked.append((model, timeout))
        self.events.append(("litellm", model))
        answers = self.script.get(model) or [(model if model != "vllm-qwen" or self.kube.serving() else None, 0)]
        group, seconds = answers.pop(0) if len(answers) > 1 else answers[0]
        if group is None or seconds > timeout:
            self.clock.sleep(timeout)
            raise ServiceError("service ml/litellm:4000 did not answer within %ss" % timeout, timed_out=True)
        self.clock.sleep(seconds)
        return 200, json.dumps({"choices": []}), {"x-litellm-model-group": group}


def params(mode, **extra):
    base = {"mode": mode, "modes": TABLE, "namespace": "ml", "deployment": "vllm-server", "container": "vllm",
            "rollout_timeout": 60, "rollback": True, "verify": True, "verify_timeout": 60, "warm_timeout": 300,
            "gpu_node_selector": "nvidia.com/gpu=true", "drain_timeout": 120, "drain_settle": 3.0,
            "vllm_service": "vllm-api", "gpu_free_model": "ollama-qwen", "gpu_free_max_mib": 1024,
            "litellm_api_key": "sk-x",
            "lock_name": "gpu-mode", "lock_timeout": 10, "lock_duration": 900}
    base.update(extra)
    return base

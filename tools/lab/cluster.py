"""The local lab as one process: the API emulator (plain HTTP on 127.0.0.1 for
the admin kubeconfig, TLS where pods find it), the control-plane loop, the
kubelet's pod workers, the loopback network, and an admin endpoint for fault
knobs (``/lab/...`` on the plain API port).

Nodes, as in the reference system: ``lab-server`` (control plane),
``lab-cpu`` (CPU worker, Ollama's), ``lab-gpu`` (labels ``nvidia.com/gpu=true``,
``gpu-type=rtx3060``, taint ``gpu=true:NoSchedule``; it advertises one
``nvidia.com/gpu`` only while the device plugin runs on it)."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid

import yaml

from . import address_slot, timing_profiles
from .api.authn import Authenticator, admin_token
from .api.server import ApiHttpServer, ApiServer
from .api.store import Store, now_rfc3339
from .api.tls import ApiHttpsServer
from .controllers import Controllers, container_gpus
from .external import External
from .kubelet import PodWorker, remove_pod_dir
from .network import Network
from .network_policy import Enforcer
from .pki import Pki
from .service_accounts import Tokens
from .workloads import vllm_real

NODES = [
    ("lab-server", {"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true"}, []),
    ("lab-cpu", {}, []),
    ("lab-gpu", {"nvidia.com/gpu": "true", "gpu-type": "rtx3060"},
     [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]),
]
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# The process of a vLLM that holds GPU memory, as nvidia-smi names it (vLLM V1's engine core).
GPU_PROCESS = "VLLM::EngineCore"
GPU = {"name": "NVIDIA GeForce RTX 3060", "driver_version": "580.95.05", "memory_total_mib": 12288,
       "memory_used_mib": 1, "uuid": "GPU-0b5c3a52-7f0e-4c1e-9a51-3060a1ab0001",
       # the one GPU of a desktop board, in its first PCIe slot, as NVML spells the bus ID
       "pci_bus_id": "00000000:01:00.0"}
GPU_NODE = "lab-gpu"
# The names cluster DNS gives the API server's Service (default/kubernetes).
API_NAMES = ("kubernetes.default.svc.cluster.local", "kubernetes.default.svc", "kubernetes.default")


class Pids:
    """The processes the lab started, on disk too: `lab down` finds them after a crash."""

    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def add(self, pid):
        with open(os.path.join(self.directory, str(pid)), "w") as handle:
            handle.write(str(pid))

    def discard(self, pid):
        try:
            os.remove(os.path.join(self.directory, str(pid)))
        except OSError:
            pass


class Lab:
    """The lab. ``profile``, ``time_scale`` and ``load_scale`` time its FAKE model servers
    (tools/lab/timing_profiles.py; built in-process the lab is ``fast``, ``python -m lab up`` ``realistic``);
    ``load_delay`` (seconds, as given) replaces the profile's vLLM load time, ``settings["ollama_cold_load"]``
    Ollama's cold load."""

    def __init__(self, state_dir, port=16443, load_delay=None, persist=True, settings=None, profile="fast",
                 time_scale=1.0, load_scale=1.0):
        if profile not in timing_profiles.PROFILES:
            raise ValueError("unknown timing profile %r (known: %s)" % (profile, ", ".join(timing_profiles.NAMES)))
        self.state_dir = os.path.abspath(state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        self.port = port
        self.settings = dict(settings or {})
        self.default_load_delay = load_delay
        # Which vLLM the kubelet runs for vLLM pods, fixed for the lab's life: LAB_VLLM=real the REAL
        # CPU build (tools/lab/workloads/vllm_real.py), else the FAKE. A bad value stops the lab here, not
        # inside a pod's start.
        self.vllm_real = vllm_real.selected()
        self.profile, self.time_scale, self.load_scale = profile, float(time_scale), float(load_scale)
        self.faults = {"fail_models": {}, "slow_models": {}, "device_plugin": None, "paperless_ai_retries": None,
                       "gpu_leak": False}
        # GPU memory held by processes that outlived their containers (the gpu-leak fault).
        self.gpu_leaks = []
        # The GPU worker's card and driver, as nvidia-smi in a GPU pod reports them: an RTX 3060 12 GB
        # on the nvidia_driver role's default branch (`python -m lab fault gpu-driver` changes it).
        self.gpu = dict(GPU)
        self.store = Store(os.path.join(self.state_dir, "api") if persist else None)
        self.slot, self.slot_claim = address_slot.claim(self.state_dir, port % address_slot.SLOTS)
        # Where pods find the API (the kubernetes Service's address, KUBERNETES_SERVICE_HOST/PORT): over
        # TLS, on the first address of the lab's Service range (k3s: 10.43.0.1), on the API's port number.
        self.api_service = ("127.%d.0.1" % (150 + self.slot), port)
        self.tokens = Tokens(self.state_dir)
        self.gpu_state_file = os.path.join(self.state_dir, "nodes", GPU_NODE, "gpu.json")
        self._gpu_state = None
        try:
            self.network = Network(self.store, self.state_dir, slot=self.slot, nodes=[n[0] for n in NODES])
            self.api = ApiServer(self.store, services=self.network)
            self.api.logs = self.container_log
            self.admin_token = admin_token(self.state_dir)
            self.api.authenticator = Authenticator(self.store, self.tokens, self.admin_token)
            self.api.tokens = self.tokens
            self.ca_file, cert_file, key_file = Pki(self.state_dir).ensure(["127.0.0.1", self.api_service[0]])
            with open(self.ca_file) as handle:
                self.ca_pem = handle.read()
            self.http = ApiHttpServer(("127.0.0.1", port), self.api, self.admin)
            try:
                self.https = ApiHttpsServer(self.api_service, self.api, cert_file, key_file)
            except BaseException:
                self.http.server_close()
                raise
        except BaseException:
            self.slot_claim.close()
            raise
        self.controllers = Controllers(self)
        self.pids = Pids(os.path.join(self.state_dir, "pids"))
        self.workers = {}
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.store.listeners.append(lambda *_: self.wake.set())
        self.log_file = os.path.join(self.state_dir, "lab.log")

    def log(self, message):
        with open(self.log_file, "a") as handle:
            handle.write("%s %s\n" % (now_rfc3339(), message))

    # -- start and stop ----------------------------------------------------------------

    def start(self):
        self.bootstrap()
        # Services the home lab already has, outside the collection (Paperless-ngx).
        self.external = External(self).start()
        self.network.external_names = dict(self.external.names, **{n: self.api_service[0] for n in API_NAMES})
        self.network_policy = Enforcer(self.store, self.network, self.slot, log=self.log)
        self.write_network_facts()
        # The kubelet's pod-resources socket, where a hostPath mount shows it: the FAKE dcgm-exporter only
        # looks for it (as the real one does before it maps pods) and reads the answer from the GPU state.
        socket_dir = os.path.join(self.state_dir, "volumes", "hostpath", "var", "lib", "kubelet", "pod-resources")
        os.makedirs(socket_dir, exist_ok=True)
        open(os.path.join(socket_dir, "kubelet.sock"), "a").close()
        self.publish_gpu_state()
        threading.Thread(target=self.http.serve_forever, name="api", daemon=True).start()
        threading.Thread(target=self.https.serve_forever, name="api-tls", daemon=True).start()
        self.controller_thread = threading.Thread(target=self.loop, name="controllers", daemon=True)
        self.controller_thread.start()
        self.write_kubeconfig()
        return self

    def bootstrap(self):
        for name in SYSTEM_NAMESPACES:
            if not self.store.get("namespaces", "", name):
                self.store.create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": name, "labels": {
                                                     "kubernetes.io/metadata.name": name}},
                                                 "status": {"phase": "Active"}})
        for name, labels, taints in NODES:
            if self.store.get("nodes", "", name):
                continue
            self.store.create("nodes", {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": dict({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                           "kubernetes.io/arch": "amd64"}, **labels)},
                "spec": dict({"podCIDR": self.network.node_cidr(name), "podCIDRs": [self.network.node_cidr(name)]},
                             **({"taints": taints} if taints else {})),
                "status": {"capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                           "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                           "message": "kubelet is posting ready status"}],
                           "nodeInfo": {"kubeletVersion": "v1.31.4+k3s1", "containerRuntimeVersion": "lab"}}})
        self.boot_nodes()

    def write_network_facts(self):
        """What an inventory needs to know of this lab's network (inventories/lab reads it): where the
        API server's proxied requests come from, and where the outside services live."""
        facts = {"api_server_cidrs": [self.network.api_source() + "/32"],
                 "outside_cidrs": ["127.%d.0.0/16" % (200 + self.slot)],
                 "network_policy": {"enforced": self.network_policy.enforced, "reason": self.network_policy.reason}}
        with open(os.path.join(self.state_dir, "network.json"), "w") as handle:
            json.dump(facts, handle, indent=2, sort_keys=True)

    def boot_nodes(self):
        """Each start of the lab is a boot of its nodes: a new boot ID, which the kubelet reports as
        status.nodeInfo.bootID (read from /proc/sys/kernel/random/boot_id, k8s.io/kubernetes
        pkg/kubelet/nodestatus/setters.go MachineInfo, v1.31) and which the node's own
        /proc/sys/kernel/random/boot_id shows - here the file nodes/<name>/boot_id in the state directory."""
        for node in self.store.list("nodes"):
            boot_id = str(uuid.uuid4())
            directory = os.path.join(self.state_dir, "nodes", node["metadata"]["name"])
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, "boot_id"), "w") as handle:
                handle.write(boot_id + "\n")
            node["status"].setdefault("nodeInfo", {})["bootID"] = boot_id
            cidr = self.network.node_cidr(node["metadata"]["name"])   # a state dir from before nodes had one
            node["spec"].setdefault("podCIDR", cidr)
            node["spec"].setdefault("podCIDRs", [cidr])
            self.store.put("nodes", node)

    def stop(self):
        self.stopping.set()
        self.wake.set()
        # The pass under way finishes first: else it could put back the chains close() takes out.
        if getattr(self, "controller_thread", None) and self.controller_thread is not threading.current_thread():
            self.controller_thread.join(timeout=30)
        for worker in list(self.workers.values()):
            worker.stop()
        for worker in list(self.workers.values()):
            worker.join(timeout=15)
        self.network.close()
        if getattr(self, "network_policy", None):
            self.network_policy.close()
        if getattr(self, "external", None):
            self.external.stop()
        for server in (self.http, self.https):
            server.shutdown()
            server.server_close()
        self.store.save()
        self.slot_claim.close()

    def write_kubeconfig(self):
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "lab", "preferences": {},
                  "clusters": [{"name": "lab", "cluster": {"server": "http://127.0.0.1:%d" % self.port}}],
                  "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}],
                  "users": [{"name": "lab", "user": {"token": self.admin_token}}]}
        path = os.path.join(self.state_dir, "kubeconfig")
        with open(path, "w") as handle:
            yaml.safe_dump(config, handle)
        os.chmod(path, 0o600)
        return path

    # -- the loop ------------------------------------------------------------------------

    def loop(self):
        last_save = time.monotonic()
        while not self.stopping.is_set():
            self.wake.wait(0.2)
            self.wake.clear()
            try:
                self.controllers.reconcile()
                self.kubelet()
                self.network.reconcile()
                self.network_policy.reconcile()
                self.publish_gpu_state()
            except Exception as err:  # keep the lab up, but say so
                self.log("controller pass failed: %r" % err)
            if time.monotonic() - last_save > 2:
                self.store.save()
                last_save = time.monotonic()

    def kubelet(self):
        seen = set()
        for pod in self.store.list("pods"):
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            if not pod["spec"].get("nodeName"):
                continue
            worker = self.workers.get(uid)
            if pod["metadata"].get("deletionTimestamp"):
                if worker:
                    worker.stop()
                    if worker.is_alive():
                        continue
                    self.workers.pop(uid, None)
                self.network.release_pod_ip(uid)
                self.store.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
                remove_pod_dir(self.state_dir, pod["metadata"]["namespace"], pod["metadata"]["name"])
                continue
            if worker is None:
                worker = self.workers[uid] = PodWorker(self, pod)
                worker.start()
        for uid in [u for u in self.workers if u not in seen]:
            self.workers.pop(uid).stop()

    # -- helpers for the workers ----------------------------------------------------------

    def update_pod_status(self, namespace, name, uid, status):
        with self.store.lock:
            pod = self.store.get("pods", namespace, name)
            if not pod or pod["metadata"]["uid"] != uid:
                return
            old = pod.get("status") or {}
            stamps = {c["type"]: c for c in old.get("conditions") or []}
            for condition in status["conditions"]:
                previous = stamps.get(condition["type"])
                if previous and previous.get("status") == condition["status"]:
                    condition["lastTransitionTime"] = previous.get("lastTransitionTime")
            status["startTime"] = old.get("startTime") or now_rfc3339()
            if status != old:
                pod["status"] = status
                self.store.put("pods", pod)

    def container_log(self, pod, container, previous=False):
        """What a container wrote in its current run (or, with ``previous``, the run before, which the
        kubelet keeps until the next restart), or None when there is no such run."""
        path = os.path.join(self.state_dir, "pods", pod["metadata"]["namespace"], pod["metadata"]["name"],
                            "%s.%s" % (container, "previous.log" if previous else "log"))
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return None

    def gpu_processes(self):
        """The processes holding GPU memory now, as nvidia-smi --query-compute-apps lists them: each running
        vLLM given the GPU (its engine core) and what the leak fault kept."""
        held = []
        for worker in list(self.workers.values()):
            for container in worker.containers:
                process = container.process
                if container.gpu_mib and process is not None and process.poll() is None:
                    held.append({"pid": process.pid, "name": GPU_PROCESS, "used_mib": container.gpu_mib,
                                 "pod": "%s/%s" % (worker.namespace, worker.name),
                                 "serves": worker.vllm_endpoint(container)})
        return held + list(self.gpu_leaks)

    def publish_gpu_state(self):
        """What the GPU node's driver and kubelet know now, for the FAKE dcgm-exporter, which reads it at its
        samples (as DCGM reads NVML): the card, its memory in use, the vLLM processes on it and where they
        serve, and the pods given it (what the kubelet's pod-resources API lists). Written when it changes."""
        processes = self.gpu_processes()
        card = dict(self.gpu, index=0, processes=processes,
                    memory_used_mib=self.gpu["memory_used_mib"] + sum(p["used_mib"] for p in processes))
        card["pods"] = [{"namespace": w.namespace, "name": w.name, "uid": w.uid, "container": c.spec["name"]}
                        for w in list(self.workers.values()) if w.spec.get("nodeName") == GPU_NODE
                        for c in w.containers if container_gpus(c.spec) and "terminated" not in c.state]
        text = json.dumps({"gpus": [card]}, sort_keys=True)
        if text == self._gpu_state:
            return
        os.makedirs(os.path.dirname(self.gpu_state_file), exist_ok=True)
        with open(self.gpu_state_file + ".tmp", "w") as handle:
            handle.write(text)
        os.replace(self.gpu_state_file + ".tmp", self.gpu_state_file)
        self._gpu_state = text

    def gpu_process_ended(self, pid, mib, pod):
        if self.faults["gpu_leak"]:
            self.gpu_leaks.append({"pid": pid, "name": GPU_PROCESS, "used_mib": mib, "pod": pod})

    def config_data(self, plural, namespace, name):
        obj = self.store.get(plural, namespace, name) or {}
        data = dict(obj.get("data") or {})
        if plural == "secrets":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        return data

    def load_delay(self, model):
        """Seconds a vLLM load of ``model`` takes when given (the slow-model fault, ``load_delay``), else None:
        the profile's. With the REAL vLLM only the slow-model fault adds a delay: the load is vLLM's own."""
        if self.vllm_real:
            return self.faults["slow_models"].get(model)
        return self.faults["slow_models"].get(model, self.default_load_delay)

    def timing_env(self):
        """The environment that hands the lab's timing to a FAKE model server."""
        return {"LAB_PROFILE": self.profile, "LAB_TIME_SCALE": repr(self.time_scale),
                "LAB_LOAD_SCALE": repr(self.load_scale)}

    # -- the admin endpoint (fault knobs) ---------------------------------------------------

    def admin(self, method, path, body):
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return self._answer(400, {"error": "body is not JSON"})
        if path == "/lab/status" and method == "GET":
            return self._answer(200, self.describe())
        if path == "/lab/faults" and method == "GET":
            return self._answer(200, dict(self.faults, api=self.api.faults))
        if path == "/lab/faults/fail-model" and method == "POST":
            # {"model": "vllm-r1", "kind": "oom"|"error"} ; kind null clears
            if payload.get("kind"):
                self.faults["fail_models"][payload["model"]] = payload["kind"]
            else:
                self.faults["fail_models"].pop(payload.get("model"), None)
            return self._answer(200, self.faults)
        if path == "/lab/faults/slow-model" and method == "POST":
            if payload.get("seconds") is None:
                self.faults["slow_models"].pop(payload.get("model"), None)
            else:
                self.faults["slow_models"][payload["model"]] = float(payload["seconds"])
            return self._answer(200, self.faults)
        if path == "/lab/faults/api" and method == "POST":
            # {"mode": "5xx"|"timeout", "requests": N, "after_patch_of": "deployments" (optional)}
            with self.api.fault_lock:
                self.api.faults.update(mode=payload.get("mode"), remaining=int(payload.get("requests", 0)),
                                       after_patch_of=payload.get("after_patch_of"))
            return self._answer(200, self.api.faults)
        if path == "/lab/faults/gpu-driver" and method == "POST":
            # {"version": "535.261.03"}; null restores the lab's default driver
            self.gpu["driver_version"] = payload.get("version") or GPU["driver_version"]
            return self._answer(200, self.gpu)
        if path == "/lab/faults/gpu-leak" and method == "POST":
            # {"on": true}: a vLLM process that ends from now on keeps its GPU memory; {"on": false} frees it all
            self.faults["gpu_leak"] = bool(payload.get("on"))
            if not self.faults["gpu_leak"]:
                self.gpu_leaks = []
            return self._answer(200, dict(self.faults, gpu_processes=self.gpu_processes()))
        if path == "/lab/faults/device-plugin" and method == "POST":
            # {"fail": "<why>"}: the device plugin crash-loops (restarted now); null or "" heals it
            self.faults["device_plugin"] = payload.get("fail") or None
            self.kill("kube-system", None, image="k8s-device-plugin")
            return self._answer(200, self.faults)
        if path == "/lab/faults/paperless-ai-retries" and method == "POST":
            # {"attempts": 2, "delay": 0.5}: Paperless-AI pods started from now on give up their setup
            # check sooner than the app's 60 attempts 5 s apart; {} restores those
            self.faults["paperless_ai_retries"] = {k: payload[k] for k in ("attempts", "delay") if payload.get(k)} or None
            return self._answer(200, self.faults)
        if path == "/lab/kill" and method == "POST":
            # {"namespace": "ml", "app": "vllm"}: kill the processes of the matching pods (the kubelet restarts them)
            killed = self.kill(payload.get("namespace", "ml"), payload.get("app"))
            return self._answer(200, {"killed": killed})
        return self._answer(404, {"error": "no lab admin endpoint %s %s" % (method, path)})

    @staticmethod
    def _answer(status, body):
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def kill(self, namespace, app, image=None):
        killed = []
        for worker in list(self.workers.values()):
            pod = self.store.get("pods", worker.namespace, worker.name)
            if not pod or worker.namespace != namespace:
                continue
            if app and (pod["metadata"].get("labels") or {}).get("app.kubernetes.io/name") != app:
                continue
            for container in worker.containers:
                if image and image not in container.spec.get("image", ""):
                    continue
                if container.process and container.process.poll() is None:
                    container.process.kill()
                    killed.append("%s/%s:%s" % (worker.namespace, worker.name, container.spec["name"]))
        return killed

    def describe(self):
        pods = []
        for pod in self.store.list("pods"):
            status = pod.get("status") or {}
            pods.append({"namespace": pod["metadata"]["namespace"], "name": pod["metadata"]["name"],
                         "node": pod["spec"].get("nodeName"), "phase": status.get("phase"),
                         "ip": status.get("podIP"),
                         "ready": any(c.get("type") == "Ready" and c.get("status") == "True"
                                      for c in status.get("conditions") or [])})
        services = [{"namespace": s["metadata"]["namespace"], "name": s["metadata"]["name"],
                     "clusterIP": (s.get("spec") or {}).get("clusterIP"),
                     "ports": [p.get("port") for p in (s.get("spec") or {}).get("ports") or []]}
                    for s in self.store.list("services")]
        return {"api": "http://127.0.0.1:%d" % self.port, "api_in_cluster": "https://%s:%d" % self.api_service,
                "ca": self.ca_file, "kubeconfig": os.path.join(self.state_dir, "kubeconfig"),
                "pods": pods, "services": services, "requests": self.api.requests,
                "timing": {"profile": self.profile, "time_scale": self.time_scale, "load_scale": self.load_scale},
                "vllm": "real" if self.vllm_real else "fake"}

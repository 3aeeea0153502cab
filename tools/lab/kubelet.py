"""The lab's kubelet and container runtime: pods become processes.

A PodWorker thread per scheduled pod mounts its volumes (tools/lab/volumes.py:
ConfigMaps, Secrets, projected ServiceAccount tokens, PVCs and hostPaths under
the lab's state directory; a failed mount is retried with back-off and
recorded as FailedMount), runs init containers to completion, starts the
containers, probes them (startup, readiness, liveness: httpGet, tcpSocket,
exec), restarts them with back-off (CrashLoopBackOff, OOMKilled), writes the
pod's status, and on deletion stops everything and removes the pod.

Images map to programs (``program``): the REAL LiteLLM proxy for LiteLLM's
image, the lab's own interpreter for the official Python image's python,
FAKE servers for vLLM, Ollama, Paperless-AI and NVIDIA's dcgm-exporter, an
idle process for the device plugin. The FAKE model servers get the lab's
timing profile and scales (``LAB_PROFILE``, ``LAB_TIME_SCALE``,
``LAB_LOAD_SCALE``; tools/lab/timing_profiles.py). An image the lab has no
program for fails loudly (ErrImagePull). Container paths in args and mounts map
to the pod's directory; every process gets its own address, the lab's DNS
(tools/lab/hooks/sitecustomize.py) and the API's in-cluster address
(KUBERNETES_SERVICE_HOST/PORT).
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import posixpath
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from . import TOOLS, events
from .api.store import now_rfc3339
from .controllers import GPU, container_gpus
from .litellm_proxy import litellm_executable
from .volumes import MountFailure, Volumes

HOOKS = os.path.join(TOOLS, "lab", "hooks")
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 10.0   # the real kubelet: 10 s doubling to 5 min; the lab runs faster


class ImageUnavailable(Exception):
    pass


class StartFailure(Exception):
    """The runtime could not start the container's process (containerd's StartError, exit code 128)."""


def image_family(image):
    name = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    if "litellm" in image:
        return "litellm"
    if name == "vllm-openai":
        return "vllm"
    if name == "ollama":
        return "ollama"
    if name == "paperless-ai":
        return "paperless-ai"
    if name == "k8s-device-plugin":
        return "device-plugin"
    if repository(image) == "docker.io/library/python":
        return "python"
    if repository(image) == "nvcr.io/nvidia/k8s/dcgm-exporter":
        return "dcgm-exporter"
    return None


def repository(image):
    """An image's repository without tag or digest, Docker Hub's defaults spelled out (docker/distribution
    reference.ParseNormalizedNamed): ``python:3.12-slim`` is ``docker.io/library/python``."""
    parts = _split(image)[0].split("/")
    if len(parts) == 1:
        parts = ["docker.io", "library"] + parts
    elif "." not in parts[0] and ":" not in parts[0] and parts[0] != "localhost":
        parts = ["docker.io"] + parts
    return "/".join(parts)


def _split(image):
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    last, _, tag = last.partition(":")
    return (head + "/" if head else "") + last, tag


class Container:
    """One container's runtime state, shaped like its containerStatus."""

    def __init__(self, spec, init=False):
        self.spec = spec
        self.init = init
        self.process = None
        self.restarts = 0
        self.state = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state = {}
        self.ready = False
        self.started = False         # the startup probe passed (or there is none)
        self.next_start = 0.0
        self.backoff = BACKOFF_FIRST
        self.probe_due = {}
        self.failures = {}
        self.gpu_mib = 0             # GPU memory its process holds while it runs (a vLLM on the GPU)
        self.fault = None

    def status(self):
        status = {"name": self.spec["name"], "image": self.spec.get("image", ""), "imageID": "",
                  "ready": self.ready, "restartCount": self.restarts, "state": copy.deepcopy(self.state),
                  "lastState": copy.deepcopy(self.last_state)}
        if not self.init:
            status["started"] = self.started and "running" in self.state
        return status


class PodWorker(threading.Thread):
    def __init__(self, lab, pod):
        super().__init__(name="pod-%s" % pod["metadata"]["name"], daemon=True)
        self.lab = lab
        self.namespace = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.pod = pod
        self.spec = pod["spec"]
        self.ip = lab.network.pod_ip(self.uid, self.spec.get("nodeName"))
        self.dir = os.path.join(lab.state_dir, "pods", self.namespace, self.name)
        self.stop_event = threading.Event()
        self.init_containers = [Container(c, init=True) for c in self.spec.get("initContainers") or []]
        self.containers = [Container(c) for c in self.spec.get("containers") or []]
        self.mounts = {}
        self.restart_policy = self.spec.get("restartPolicy", "Always")

    # -- lifecycle ------------------------------------------------------------------

    def run(self):
        try:
            if not self.prepare():
                return None
            if not self.run_init_containers():
                return self.stopped_wait()
            self.write_status()
            while not self.stop_event.is_set():
                for container in self.containers:
                    self.tend(container)
                self.write_status()
                self.stop_event.wait(0.1)
        except Exception as err:  # a lab bug must not go unnoticed
            self.lab.log("pod %s/%s worker failed: %r" % (self.namespace, self.name, err))
            raise
        finally:
            self.terminate_all()

    def stopped_wait(self):
        while not self.stop_event.is_set():
            self.stop_event.wait(0.2)

    def stop(self):
        self.stop_event.set()

    def prepare(self):
        """Mount the pod's volumes, as the kubelet's volume manager does before any container starts: a
        failed mount is recorded (FailedMount), the pod waits in ContainerCreating and the mount is tried
        again with back-off. False when the pod was stopped first."""
        os.makedirs(self.dir, exist_ok=True)
        volumes, delay = Volumes(self.lab, self.pod, self.dir), BACKOFF_FIRST
        while not self.stop_event.is_set():
            try:
                sources = {v["name"]: volumes.materialise(v) for v in self.spec.get("volumes") or []}
            except MountFailure as err:
                events.record(self.lab.store, self.pod, "FailedMount", str(err), "kubelet",
                              host=self.spec.get("nodeName"))
                self.write_status()
                self.stop_event.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            for container in self.init_containers + self.containers:
                mounts = {}
                for mount in container.spec.get("volumeMounts") or []:
                    source = sources.get(mount["name"])
                    if source is None:
                        continue
                    if mount.get("subPath"):
                        source = os.path.join(source, mount["subPath"])
                    mounts[mount["mountPath"].rstrip("/") or "/"] = source
                self.mounts[container.spec["name"]] = mounts
            return True
        return False

    # -- processes --------------------------------------------------------------------

    def host_path(self, container, path):
        """A container path in this pod's filesystem, as a path on the lab's host."""
        mounts = self.mounts.get(container.spec["name"], {})
        for mount_path in sorted(mounts, key=len, reverse=True):
            if path == mount_path or path.startswith(mount_path + "/"):
                return mounts[mount_path] + path[len(mount_path):]
        return path

    def environment(self, container):
        env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
               "PYTHONPATH": os.pathsep.join([HOOKS, TOOLS]), "LAB_DNS_FILE": self.lab.network.dns_file,
               "HOSTNAME": self.name, "LAB_POD_NAME": self.name,
               # where FAKE servers note what a test should count (lab-only; not in any manifest)
               "LAB_OBSERVATIONS": os.path.join(self.lab.state_dir, "observations")}
        if container_gpus(container.spec):
            # What the NVIDIA device plugin's Allocate answers for a container given the GPU
            # (k8s-device-plugin v0.17, the default envvar strategy).
            env["NVIDIA_VISIBLE_DEVICES"] = self.lab.gpu["uuid"]
        env.update(api_service_env(*self.lab.api_service))
        for source in container.spec.get("envFrom") or []:
            if "configMapRef" in source:
                env.update(self.lab.config_data("configmaps", self.namespace, source["configMapRef"]["name"]))
            if "secretRef" in source:
                env.update(self.lab.config_data("secrets", self.namespace, source["secretRef"]["name"]))
        for item in container.spec.get("env") or []:
            if "value" in item:
                # A path inside a volume mount names the pod's volume, as it would in the container.
                value = str(item["value"])
                env[item["name"]] = self.host_path(container, value) if value.startswith("/") else value
            elif "valueFrom" in item:
                ref = item["valueFrom"]
                if "secretKeyRef" in ref:
                    data = self.lab.config_data("secrets", self.namespace, ref["secretKeyRef"]["name"])
                    env[item["name"]] = data.get(ref["secretKeyRef"]["key"], "")
                elif "configMapKeyRef" in ref:
                    data = self.lab.config_data("configmaps", self.namespace, ref["configMapKeyRef"]["name"])
                    env[item["name"]] = data.get(ref["configMapKeyRef"]["key"], "")
                elif "fieldRef" in ref:
                    env[item["name"]] = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                                         "metadata.uid": self.uid, "status.podIP": self.ip,
                                         "status.hostIP": "127.0.0.1", "spec.nodeName": self.spec.get("nodeName"),
                                         "spec.serviceAccountName": self.spec.get("serviceAccountName")
                                         }.get(ref["fieldRef"]["fieldPath"]) or ""
        return env

    def program(self, container, env):
        """argv, extra env and working directory of a container's process."""
        spec = container.spec
        family = image_family(spec.get("image", ""))
        args = [self.host_path(container, a) if a.startswith("/") else a for a in spec.get("args") or []]
        python = [sys.executable, "-m"]
        if family == "litellm":
            return [litellm_executable()] + args + ["--host", self.ip], {}, self.dir
        if family == "vllm" and spec.get("command"):
            return self.gpu_tool(spec["command"] + args), self.gpu_environment(), self.dir
        if family == "vllm":
            served = _served(spec.get("args") or [])
            extra = self.lab.timing_env()
            load_delay = self.lab.load_delay(served)
            if load_delay is not None:  # seconds as given (--load-delay, the slow-model fault), else the profile's
                extra["LAB_LOAD_DELAY"] = str(load_delay)
            fault = self.lab.faults["fail_models"].get(served)
            if fault:
                extra["LAB_FAIL"] = fault
            container.fault = fault
            # LAB_VLLM=real: the REAL vLLM CPU build on a tiny model (tools/lab/workloads/vllm_real.py); default the FAKE.
            workload = "lab.workloads.vllm_real" if self.lab.vllm_real else "lab.workloads.vllm"
            return python + [workload] + args + ["--host", self.ip], extra, self.dir
        if family == "ollama":
            host = env.get("OLLAMA_HOST", "0.0.0.0:11434")
            port = host.rpartition(":")[2] or "11434"
            extra = dict(self.lab.timing_env(), OLLAMA_HOST="%s:%s" % (self.ip, port))
            if self.lab.settings.get("ollama_cold_load") is not None:  # seconds as given, else the profile's
                extra["LAB_OLLAMA_COLD_LOAD"] = str(self.lab.settings["ollama_cold_load"])
            return python + ["lab.workloads.ollama", self.host_path(container, "/root/.ollama")], extra, self.dir
        if family == "paperless-ai":
            data = self.host_path(container, "/app/data")
            if spec.get("command"):
                # An init container running a shell script: the script's own default path is
                # /app/data/.env, which only this variable can point into the pod's volume.
                argv = [self.host_path(container, a) if a.startswith("/") else a for a in spec["command"]] + args
                return argv, {"PAPERLESS_AI_ENV_FILE": os.path.join(data, ".env")}, self.dir
            retries = self.lab.faults.get("paperless_ai_retries") or {}
            return python + ["lab.workloads.paperless_ai", data], {
                "LAB_PAPERLESS_AI_ATTEMPTS": str(retries.get("attempts") or ""),
                "LAB_PAPERLESS_AI_ATTEMPT_DELAY": str(retries.get("delay") or "")}, self.dir
        if family == "device-plugin":
            failure = self.lab.faults.get("device_plugin")
            return python + ["lab.workloads.idle"], {"LAB_FAIL": failure} if failure else {}, self.dir
        if family == "python":
            return self.python_program(container, env)
        if family == "dcgm-exporter":
            return self.dcgm_exporter(container, env, args)
        raise ImageUnavailable("the lab has no program for image %s" % spec.get("image"))

    def python_program(self, container, env):
        """The official Python image: no ENTRYPOINT, CMD ``python3``; its interpreters are
        /usr/local/bin/python, python3 and python3.N (N the tag's). The lab runs its own interpreter
        for them, with container paths in the arguments mapped to the pod's volumes, and the same
        mapping for the paths the program opens (tools/lab/hooks/lab_mounts.py). Any other program
        is one the lab cannot run."""
        spec = container.spec
        argv = list(spec.get("command") or []) + list(spec.get("args") or []) if spec.get("command") \
            else list(spec.get("args") or ["python3"])
        program = argv[0]
        name = posixpath.basename(program)
        if not PYTHON.match(name) or ("/" in program and posixpath.dirname(program) != "/usr/local/bin"):
            raise ImageUnavailable("the lab runs only the interpreter of image %s (python, python3, python3.N), "
                                   "not %r" % (spec.get("image"), program))
        version = re.match(r"(\d+)\.(\d+)", _split(spec.get("image", ""))[1])
        if version and "." in name and name != "python%s.%s" % version.groups():
            raise StartFailure('failed to create containerd task: failed to create shim task: OCI runtime create '
                               'failed: runc create failed: unable to start container process: error during '
                               'container init: exec: "%s": executable file not found in $PATH: unknown' % program)
        options, rest, isolated = python_options(argv[1:])
        if isolated:
            # -I / -E: the image's PYTHON* variables are ignored; the lab's own path to its hooks stays.
            for key in [k for k in env if k.startswith("PYTHON")]:
                del env[key]
            env["PYTHONPATH"] = os.pathsep.join([HOOKS, TOOLS])
        mapped = [self.host_path(container, a) if a.startswith("/") else a for a in rest]
        workdir = self.host_path(container, spec["workingDir"]) if spec.get("workingDir") else self.dir
        return [sys.executable] + options + mapped, self.mounts_env(container), (
            workdir if os.path.isdir(workdir) else self.dir)

    def mounts_env(self, container):
        """The container's mounts, for the hook that maps the paths a program opens (lab-internal)."""
        return {"LAB_MOUNTS": json.dumps(self.mounts.get(container.spec["name"], {})),
                "LAB_STATE_DIR": self.lab.state_dir}

    def dcgm_exporter(self, container, env, args):
        """NVIDIA's dcgm-exporter image: its ENTRYPOINT execs /usr/bin/dcgm-exporter with the args. DCGM
        reaches the GPU only through the driver the NVIDIA runtime mounts in (runtimeClassName nvidia,
        on a GPU node); elsewhere the FAKE fails as the real one does without NVML."""
        spec = container.spec
        command = spec.get("command") or []
        if command and posixpath.basename(command[0]) not in ("dcgm-exporter", "dcgm-exporter-entrypoint.sh"):
            raise ImageUnavailable("the lab runs only dcgm-exporter in image %s, not %r" % (spec.get("image"),
                                                                                         command[0]))
        for key, value in DCGM_IMAGE_ENV.items():  # the image's ENV, below the container's own
            env.setdefault(key, value)
        extra = self.mounts_env(container)
        node = self.lab.store.get("nodes", "", self.spec.get("nodeName") or "") or {"metadata": {}}
        gpu_node = (node["metadata"].get("labels") or {}).get(GPU) == "true"
        if self.spec.get("runtimeClassName") == "nvidia" and gpu_node:
            extra["LAB_GPU_STATE"] = self.lab.gpu_state_file
        tail = [self.host_path(container, a) if a.startswith("/") else a for a in command[1:]]
        return [sys.executable, "-m", "lab.workloads.dcgm_exporter"] + tail + args, extra, self.dir

    def gpu_tool(self, argv):
        """A CUDA image's command: the lab runs only nvidia-smi, which the NVIDIA runtime injects."""
        if os.path.basename(argv[0]) != "nvidia-smi":
            raise ImageUnavailable("the lab runs no command %r in a CUDA image (only nvidia-smi)" % argv[0])
        if self.spec.get("runtimeClassName") != "nvidia":
            # Without the NVIDIA runtime nothing mounts the driver's tools into the container
            # (nvidia-container-toolkit 1.18: the runtime's CDI edits add nvidia-smi).
            raise StartFailure('failed to create containerd task: failed to create shim task: OCI runtime create '
                               'failed: runc create failed: unable to start container process: error during '
                               'container init: exec: "nvidia-smi": executable file not found in $PATH: unknown')
        return [sys.executable, "-m", "lab.workloads.nvidia_smi"] + argv[1:]

    def gpu_environment(self):
        """What the FAKE nvidia-smi reports: the card, and the memory the GPU's processes hold now. The
        driver lists a process only to a caller in the same PID namespace, so a pod sees the host's
        processes only with hostPID (nvidia-smi in a container: "No running processes found")."""
        gpu = self.lab.gpu
        processes = self.lab.gpu_processes()
        return {"LAB_GPU_DRIVER_VERSION": gpu["driver_version"], "LAB_GPU_NAME": gpu["name"],
                "LAB_GPU_UUID": gpu["uuid"], "LAB_GPU_MEMORY_TOTAL_MIB": str(gpu["memory_total_mib"]),
                "LAB_GPU_MEMORY_USED_MIB": str(gpu["memory_used_mib"] + sum(p["used_mib"] for p in processes)),
                "LAB_GPU_PROCESSES": json.dumps(processes if self.spec.get("hostPID") else [])}

    def holds_gpu_memory(self, container):
        """MiB a vLLM container given the GPU takes: vLLM reserves --gpu-memory-utilization of the card
        (0.9 unless set: vllm/engine/arg_utils.py, EngineArgs.gpu_memory_utilization)."""
        spec = container.spec
        if image_family(spec.get("image", "")) != "vllm" or spec.get("command") or not container_gpus(spec):
            return 0
        share = float(_flag(spec.get("args") or [], "--gpu-memory-utilization") or 0.9)
        return int(self.lab.gpu["memory_total_mib"] * share)

    def vllm_endpoint(self, container):
        """host:port a vLLM container serves on (vLLM's --port, 8000 by default)."""
        return "%s:%s" % (self.ip, _flag(container.spec.get("args") or [], "--port") or "8000")

    def release_gpu(self, container, pid):
        """The process that held GPU memory ended: the driver frees it, unless the lab's leak fault says
        it stays held (a process that outlived its container)."""
        if container.gpu_mib:
            self.lab.gpu_process_ended(pid, container.gpu_mib, "%s/%s" % (self.namespace, self.name))
            container.gpu_mib = 0

    def start_container(self, container):
        problem = run_as_non_root_problem(self.pod, container.spec)
        if problem:
            # kubelet v1.31: the container is not created; retried at each sync.
            container.state = {"waiting": {"reason": "CreateContainerConfigError", "message": problem}}
            container.next_start = time.monotonic() + 10
            events.record(self.lab.store, self.pod, "Failed", "Error: " + problem, "kubelet",
                          host=self.spec.get("nodeName"))
            return
        env = self.environment(container)
        env["LAB_POD_IP"] = self.ip
        try:
            argv, extra, cwd = self.program(container, env)
        except ImageUnavailable as err:
            container.state = {"waiting": {"reason": "ErrImagePull", "message": str(err)}}
            container.next_start = time.monotonic() + 3600
            return
        except StartFailure as err:
            stamp = now_rfc3339()
            container.last_state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(err),
                                                   "startedAt": stamp, "finishedAt": stamp}}
            self.after_exit(container, 128, time.monotonic())
            return
        env.update(extra)
        log_path = os.path.join(self.dir, "%s.log" % container.spec["name"])
        if container.last_state and os.path.exists(log_path):
            # A restart: the kubelet keeps the last terminated run's log for `kubectl logs --previous`.
            os.replace(log_path, os.path.join(self.dir, "%s.previous.log" % container.spec["name"]))
        log = open(log_path, "ab")
        container.process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)
        log.close()
        self.lab.pids.add(container.process.pid)
        container.gpu_mib = self.holds_gpu_memory(container)
        container.state = {"running": {"startedAt": now_rfc3339()}}
        container.started = not container.spec.get("startupProbe")
        container.ready = False
        container.probe_due = {}
        container.failures = {}

    def exited(self, container):
        code = container.process.returncode
        self.lab.pids.discard(container.process.pid)
        self.release_gpu(container, container.process.pid)
        container.process = None
        reason = "Completed" if code == 0 else ("OOMKilled" if container.fault == "oom" and code == 137 else "Error")
        terminated = {"exitCode": code if code >= 0 else 128 - code, "reason": reason, "finishedAt": now_rfc3339(),
                      "startedAt": container.state.get("running", {}).get("startedAt", now_rfc3339())}
        container.last_state = {"terminated": terminated}
        container.ready = False
        container.started = False
        return terminated

    def tend(self, container):
        now = time.monotonic()
        if container.process is None:
            if "terminated" in container.state:
                return
            if now >= container.next_start:
                if container.last_state:
                    container.restarts += 1
                self.start_container(container)
            return
        if container.process.poll() is not None:
            terminated = self.exited(container)
            self.after_exit(container, terminated["exitCode"], now)
            return
        self.probe_all(container, now)

    def after_exit(self, container, code, now):
        """Restart with back-off, or, as the pod's restartPolicy says, stay terminated."""
        if self.restart_policy == "Never" or (self.restart_policy == "OnFailure" and code == 0):
            container.state, container.last_state = container.last_state, {}
            container.next_start = float("inf")
            return
        container.next_start = now + container.backoff
        container.backoff = min(container.backoff * 2, BACKOFF_MAX)
        container.state = {"waiting": {"reason": "CrashLoopBackOff",
                                       "message": "back-off %ds restarting failed container=%s pod=%s" % (
                                           container.backoff, container.spec["name"], self.name)}}

    def run_init_containers(self):
        for container in self.init_containers:
            while not self.stop_event.is_set():
                if container.process is None and time.monotonic() >= container.next_start:
                    self.start_container(container)
                    if container.process is None:
                        self.write_status()
                        return False
                self.write_status()
                if container.process and container.process.poll() is not None:
                    terminated = self.exited(container)
                    if terminated["exitCode"] == 0:
                        container.state = {"terminated": terminated}
                        container.last_state = {}
                        break
                    container.restarts += 1
                    container.next_start = time.monotonic() + container.backoff
                    container.backoff = min(container.backoff * 2, BACKOFF_MAX)
                    container.state = {"waiting": {"reason": "CrashLoopBackOff"}}
                self.stop_event.wait(0.1)
            if self.stop_event.is_set():
                return False
        return True

    # -- probes ---------------------------------------------------------------------------

    def probe_all(self, container, now):
        spec = container.spec
        if not container.started:
            if self.probe(container, "startupProbe", now):
                container.started = True
            return
        if spec.get("readinessProbe"):
            result = self.probe(container, "readinessProbe", now)
            if result is not None:
                container.ready = result
        else:
            container.ready = True
        if spec.get("livenessProbe") and self.probe(container, "livenessProbe", now) is False:
            self.kill(container)

    def probe(self, container, kind, now):
        """True/False when the probe ran and settled, None when it is not due."""
        probe = container.spec.get(kind)
        if not probe:
            return True
        due = container.probe_due.get(kind)
        if due is None:
            due = container.probe_due[kind] = now + probe.get("initialDelaySeconds", 0)
        if now < due:
            return None
        container.probe_due[kind] = now + probe.get("periodSeconds", 10)
        ok = self.check(container, probe)
        if ok:
            container.failures[kind] = 0
            return True
        container.failures[kind] = container.failures.get(kind, 0) + 1
        threshold = probe.get("failureThreshold", 3)
        if kind == "readinessProbe":
            return False
        if container.failures[kind] >= threshold:
            if kind == "startupProbe":
                self.kill(container)
            return False
        return None if kind == "startupProbe" else True

    def port_of(self, container, port):
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for item in container.spec.get("ports") or []:
            if item.get("name") == port:
                return item["containerPort"]
        return None

    def check(self, container, probe):
        timeout = probe.get("timeoutSeconds", 1)
        try:
            if "httpGet" in probe:
                connection = http.client.HTTPConnection(self.ip, self.port_of(container, probe["httpGet"]["port"]),
                                                        timeout=timeout)
                connection.request("GET", probe["httpGet"].get("path", "/"))
                status = connection.getresponse().status
                connection.close()
                return 200 <= status < 400
            if "tcpSocket" in probe:
                with socket.create_connection((self.ip, self.port_of(container, probe["tcpSocket"]["port"])),
                                              timeout=timeout):
                    return True
            if "exec" in probe:
                env = self.environment(container)
                env["LAB_POD_IP"] = self.ip  # the container's 127.0.0.1 is the pod's address
                result = subprocess.run(probe["exec"]["command"], env=env, cwd=self.dir, capture_output=True,
                                        timeout=timeout + 5)
                return result.returncode == 0
        except (OSError, subprocess.SubprocessError, http.client.HTTPException):
            return False
        return False

    def kill(self, container):
        if container.process and container.process.poll() is None:
            _terminate(container.process)

    def terminate_all(self):
        for container in self.init_containers + self.containers:
            if container.process:
                _terminate(container.process)
                self.lab.pids.discard(container.process.pid)
                self.release_gpu(container, container.process.pid)
                container.process = None

    # -- status -----------------------------------------------------------------------------

    def write_status(self):
        init_done = all("terminated" in c.state and c.state["terminated"].get("exitCode") == 0
                        for c in self.init_containers)
        ready = init_done and all(c.ready for c in self.containers)
        running = init_done and all("running" in c.state for c in self.containers)
        phase = "Running" if running or (init_done and any(c.restarts for c in self.containers)) else "Pending"
        finished = [c.state["terminated"] for c in self.containers if "terminated" in c.state]
        if init_done and self.containers and len(finished) == len(self.containers):
            phase = "Succeeded" if all(t["exitCode"] == 0 for t in finished) else "Failed"
        stamp = now_rfc3339()

        def condition(kind, value):
            return {"type": kind, "status": "True" if value else "False", "lastProbeTime": None,
                    "lastTransitionTime": stamp}

        status = {"phase": phase, "podIP": self.ip, "podIPs": [{"ip": self.ip}], "hostIP": "127.0.0.1",
                  "conditions": [condition("PodScheduled", True), condition("Initialized", init_done),
                                 condition("ContainersReady", ready), condition("Ready", ready)],
                  "containerStatuses": [c.status() for c in self.containers], "qosClass": "Burstable"}
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        self.lab.update_pod_status(self.namespace, self.name, self.uid, status)


PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
# dcgm-exporter's Dockerfile (4.5.3-4.8.2): what the NVIDIA runtime reads to expose every GPU.
DCGM_IMAGE_ENV = {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,compat32",
                  "NVIDIA_DISABLE_REQUIRE": "true"}


# The user an image runs as when the pod names none (its Dockerfile's USER; none is root), for the
# images whose source was read at the pinned tag: ollama/ollama v0.13.5 Dockerfile, clusterzx/paperless-ai
# v3.0.9 Dockerfile, docker-library's python Dockerfiles, and vLLM's docs/deployment/docker.md ("runs as
# root by default"). The others are not judged.
IMAGE_USERS = {"ollama": 0, "paperless-ai": 0, "python": 0, "vllm": 0}


def run_as_non_root_problem(pod, container):
    """The kubelet's refusal of a container whose runAsNonRoot it cannot honour, or None
    (k8s.io/kubernetes v1.31 pkg/kubelet/kuberuntime/security_context_others.go, verifyRunAsNonRoot,
    on the container's settings over the pod's: pkg/securitycontext/util.go)."""
    effective = dict((pod.get("spec") or {}).get("securityContext") or {})
    effective.update({k: v for k, v in (container.get("securityContext") or {}).items() if v is not None})
    if not effective.get("runAsNonRoot"):
        return None
    where = '(pod: "%s_%s(%s)", container: %s)' % (pod["metadata"]["name"], pod["metadata"]["namespace"],
                                                     pod["metadata"]["uid"], container["name"])
    if effective.get("runAsUser") is not None:
        return "container's runAsUser breaks non-root policy " + where if effective["runAsUser"] == 0 else None
    if IMAGE_USERS.get(image_family(container.get("image", ""))) == 0:
        return "container has runAsNonRoot and image will run as root " + where
    return None


def api_service_env(host, port):
    """The variables the kubelet gives every container for the ``kubernetes`` Service (its port named
    https): pkg/kubelet/envvars/envvars.go FromServices, v1.31; client-go's rest.InClusterConfig reads
    the first two."""
    url = "tcp://%s:%d" % (host, port)
    prefix = "KUBERNETES_PORT_%d_TCP" % port
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port), "KUBERNETES_PORT": url, prefix: url,
            prefix + "_PROTO": "tcp", prefix + "_PORT": str(port), prefix + "_ADDR": host}


def python_options(args):
    """(interpreter options, the rest, isolated) of a python command line. -I and -E are taken out
    (isolated): -I becomes -s -P, what it implies besides ignoring PYTHON* variables."""
    options, isolated, index = [], False, 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("-") or arg == "-" or arg.startswith("--"):
            break
        letters, kept = arg[1:], ""
        for position, letter in enumerate(letters):
            if letter in "cmWX":
                kept += letters[position:]
                break
            if letter in "IE":
                isolated = True
                kept += "sP" if letter == "I" else ""
            else:
                kept += letter
        if kept:
            options.append("-" + kept)
        index += 1
        if letters and letters[-1] in "WX" and kept.endswith(letters[-1]) and index < len(args):
            options.append(args[index])  # -W / -X take the next argument as their value
            index += 1
        elif any(letter in "cm" for letter in kept):
            break  # -c CODE / -m MODULE: the rest belongs to the program
    return options, args[index:], isolated


def _flag(args, name):
    """The value of ``name`` in an argument list (``--name value`` or ``--name=value``), or None."""
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _served(args):
    return _flag(args, "--served-model-name") or _flag(args, "--model")


def _terminate(process, grace=5.0):
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except OSError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
        process.wait()


def remove_pod_dir(state_dir, namespace, name):
    shutil.rmtree(os.path.join(state_dir, "pods", namespace, name), ignore_errors=True)

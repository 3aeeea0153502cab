# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU modes: how the vLLM Deployment says which mode it is in, what a switch
changes, how a rollout is going, who holds the lock. Pure functions, so every
decision of homelab.inference.gpu_mode can be unit-tested without a cluster."""

from __future__ import annotations

import copy
import datetime
import json

from ansible_collections.homelab.inference.plugins.module_utils import _catalog

MODE_LABEL = "homelab.inference/gpu-mode"
MODEL_ANNOTATION = "homelab.inference/model"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Who entered the mode the Deployment is in, and when: set by each switch's patch (never by site.yml,
# whose apply leaves it alone), read by the on-demand rules (_gpu_on_demand).
SETTER_ANNOTATION = "homelab.inference/mode-set-by"
OPERATOR, ON_DEMAND, BOOT, INSTALL = "operator", "on-demand", "boot", "install"
SOURCES = (OPERATOR, ON_DEMAND, BOOT, INSTALL)
GPU_RESOURCE = "nvidia.com/gpu"

# Container states that will not get better by waiting.
FATAL_WAITING = ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError")


# -- the mode table -------------------------------------------------------------

def mode_table(models, modes, common_args, port):
    """Every mode's vLLM model and container args, as the vllm role renders them.

    A GPU-free mode has no model and no args of its own (the Deployment keeps
    the args it has, at 0 replicas).
    """
    table = {}
    for name, mode in modes.items():
        served = mode.get("vllm_model")
        args = None
        if served:
            args = _catalog.vllm_args(_catalog.model_by_name(models, served), common_args) + ["--port", str(port)]
        table[name] = {"vllm_model": served, "args": args}
    return table


def first_model_mode(table):
    """The first mode that loads a model (its args stand in for a GPU-free fresh install)."""
    return next(name for name, mode in table.items() if mode.get("vllm_model"))


# -- reading a Deployment -------------------------------------------------------

def _container(deployment, name=None):
    try:
        containers = deployment["spec"]["template"]["spec"]["containers"]
    except (KeyError, TypeError):
        return None
    for container in containers or []:
        if name is None or container.get("name") == name:
            return container
    return None


def served_model_name(deployment, container=None):
    """The ``--served-model-name`` of the vLLM container, or None."""
    args = ((_container(deployment, container) or {}).get("args")) or []
    for index, arg in enumerate(args):
        if arg == "--served-model-name" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--served-model-name="):
            return arg.split("=", 1)[1]
    return None


def mode_of_deployment(deployment, modes, container=None):
    """The GPU mode a vLLM Deployment is in, or None when it cannot be told.

    0 replicas means the GPU is released (the first GPU-free mode); otherwise the
    recorded label, when it agrees with the model the container serves; otherwise
    the mode whose model the container serves.
    """
    if not deployment:
        return None
    spec = deployment.get("spec") or {}
    free_modes = [name for name, mode in modes.items() if not mode.get("vllm_model")]
    if spec.get("replicas", 1) == 0:
        return free_modes[0] if free_modes else None
    served = served_model_name(deployment, container)
    label = ((deployment.get("metadata") or {}).get("labels") or {}).get(MODE_LABEL)
    if label in modes and modes[label].get("vllm_model") == served:
        return label
    matches = [name for name, mode in modes.items() if served and mode.get("vllm_model") == served]
    return matches[0] if matches else None


def rolled_out(deployment):
    """True when the Deployment's current spec is fully rolled out and available."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    metadata = deployment.get("metadata") or {}
    wanted = spec.get("replicas", 1)
    if status.get("observedGeneration", 0) < metadata.get("generation", 0):
        return False
    if wanted == 0:
        return not status.get("replicas") and not status.get("availableReplicas")
    return (status.get("updatedReplicas", 0) == wanted and status.get("availableReplicas", 0) == wanted
            and status.get("replicas", 0) == wanted and not status.get("unavailableReplicas"))


# -- a switch ---------------------------------------------------------------------

def stops_serving(deployment, target, table, container="vllm"):
    """Whether switching to ``target`` takes away the model vLLM serves now (to a GPU-free
    mode, or to another model): its clients then fall back to the next tier."""
    if not deployment or (deployment.get("spec") or {}).get("replicas", 1) == 0:
        return False
    return served_model_name(deployment, container) != table[target]["vllm_model"]


def switch_patch(deployment, target, table, container="vllm", setter=False):
    """The one strategic-merge patch that puts the Deployment in mode ``target``. ``setter``, a
    setter_annotation (None removes the record), says who entered the mode; False leaves the record."""
    mode = table[target]
    served = mode["vllm_model"] or ""
    marks = {"labels": {MODE_LABEL: target}, "annotations": {MODEL_ANNOTATION: served}}
    template = {"metadata": copy.deepcopy(marks)}
    if mode["args"] is not None:
        change = {"name": container, "args": mode["args"]}
        probe = probe_patch(deployment, target, table, container)
        if probe:
            change["readinessProbe"] = probe
        template["spec"] = {"containers": [change]}
    patch = {"metadata": copy.deepcopy(marks), "spec": {"replicas": 1 if served else 0, "template": template}}
    if setter is not False:
        patch["metadata"]["annotations"][SETTER_ANNOTATION] = setter
    last_applied = ((deployment.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if last_applied:
        # Keep `site.yml`'s client-side apply in step: its next run then finds
        # nothing to change, because it renders the mode the cluster is in.
        patch["metadata"]["annotations"][LAST_APPLIED] = updated_last_applied(last_applied, target, table, container)
    return patch


def service_patch(service, target):
    """The patch that makes the vLLM Service select the pods of mode ``target`` only (None when it does
    already). Made before the Deployment's patch, it takes the pod being replaced out of the Service while
    it finishes its requests; the new mode's pods come in as they get ready."""
    if ((service.get("spec") or {}).get("selector") or {}).get(MODE_LABEL) == target:
        return None
    patch = {"spec": {"selector": {MODE_LABEL: target}}}
    last_applied = ((service.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if last_applied:
        def select(applied):
            applied.setdefault("spec", {}).setdefault("selector", {})[MODE_LABEL] = target
        patch["metadata"] = {"annotations": {LAST_APPLIED: _edited(last_applied, select)}}
    return patch


# vllm/v1/metrics/loggers.py (v0.32.0, PrometheusStatLogger): the scheduler's gauges, one sample per engine.
REQUEST_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


def requests_in_vllm(metrics_text):
    """Requests running or waiting in a vLLM, from its /metrics (Prometheus text format); None when the
    text has neither gauge."""
    total, seen = 0.0, False
    for line in metrics_text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in REQUEST_GAUGES:
            try:
                total += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            seen = True
    return int(total) if seen else None


def _edited(text, edit):
    """A last-applied configuration (JSON text) with ``edit`` made to it in place; unchanged when not JSON.
    Keeping it in step with a patch leaves the next client-side apply nothing to change."""
    try:
        applied = json.loads(text)
    except ValueError:
        return text
    edit(applied)
    return json.dumps(applied, separators=(",", ":"), sort_keys=True)


def updated_last_applied(text, target, table, container="vllm"):
    """The last-applied configuration with the mode's fields changed as the patch changes them."""
    return _edited(text, lambda applied: _apply_mode(applied, target, table, container))


def _apply_mode(applied, target, table, container):
    mode = table[target]
    served = mode["vllm_model"] or ""
    metadata = applied.setdefault("metadata", {})
    metadata.setdefault("labels", {})[MODE_LABEL] = target
    metadata.setdefault("annotations", {})[MODEL_ANNOTATION] = served
    spec = applied.setdefault("spec", {})
    spec["replicas"] = 1 if served else 0
    template = spec.setdefault("template", {})
    template_metadata = template.setdefault("metadata", {})
    template_metadata.setdefault("labels", {})[MODE_LABEL] = target
    template_metadata.setdefault("annotations", {})[MODEL_ANNOTATION] = served
    if mode["args"] is not None:
        for item in (template.get("spec") or {}).get("containers") or []:
            if item.get("name") == container:
                item["args"] = list(mode["args"])
                if "readinessProbe" in item:
                    _set_probe_model(item["readinessProbe"], served)


def _set_probe_model(probe, served):
    command = ((probe.get("exec") or {}).get("command")) or []
    if command:
        command[-1] = served


def probe_patch(deployment, target, table, container="vllm"):
    """The readiness probe names the served model: the same patch updates it."""
    item = _container(deployment, container) or {}
    probe = copy.deepcopy(item.get("readinessProbe"))
    served = table[target]["vllm_model"]
    if not probe or not served or not (probe.get("exec") or {}).get("command"):
        return None
    _set_probe_model(probe, served)
    return probe


# -- rollouts ---------------------------------------------------------------------

def _deleting(pod):
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def pod_ready(pod):
    """Whether a pod is Ready and not being deleted: in its Service's endpoints."""
    if _deleting(pod):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def pod_failure(pod):
    """Why a pod will not become ready by waiting (one line), or None."""
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "?")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" \
                and condition.get("reason") == "Unschedulable":
            message = condition.get("message", "")
            if GPU_RESOURCE in message:
                return "pod %s is Pending: no GPU free (%s)" % (name, message)
            return "pod %s is Pending: %s" % (name, message or "unschedulable")
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        last = (container.get("lastState") or {}).get("terminated") or {}
        current = (container.get("state") or {}).get("terminated") or {}
        for terminated in (current, last):
            if terminated.get("reason") == "OOMKilled":
                return "pod %s: container %s was OOMKilled (exit code %s)" % (
                    name, container.get("name"), terminated.get("exitCode", "?"))
        if waiting.get("reason") in FATAL_WAITING:
            detail = waiting.get("message") or last.get("message") or last.get("reason") or ""
            return "pod %s: %s%s" % (name, waiting["reason"], (": " + detail.strip().splitlines()[0]) if detail else "")
    return None


def from_other_template(deployment, pod):
    """Whether the Deployment made ``pod`` for another pod template (an old ReplicaSet's), told by a
    container's args. Such a pod is on its way out: the ReplicaSet controller deletes it after the
    Deployment's status already shows the new generation, so its failure is not the new mode's."""
    template = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    wanted = dict((c.get("name"), c.get("args")) for c in template)
    return any(c.get("name") in wanted and c.get("args") != wanted[c.get("name")]
               for c in (pod.get("spec") or {}).get("containers") or [])


def rollout_progress(deployment, pods):
    """('done' | 'waiting' | 'failed', detail) for a switch's rollout."""
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    live = [p for p in pods if not _deleting(p)]
    if rolled_out(deployment):
        if wanted == 0 and live:
            return "waiting", "%d pod(s) still stopping" % len(live)
        if wanted == 0 and pods:
            return "waiting", "%d pod(s) still terminating" % len(pods)
        return "done", "rolled out"
    if wanted == 0:
        # Every pod is on its way out: one that failed (a rolled-back load that was OOMKilled) is the
        # reason for the rollback, not a failure of stopping; it stays until the controller has seen the
        # new replica count.
        return "waiting", "%d pod(s) still stopping" % len(live) if live else "the Deployment's status to catch up"
    for pod in pods:
        if _deleting(pod) or from_other_template(deployment, pod):
            continue
        failure = pod_failure(pod)
        if failure:
            return "failed", failure
    status = deployment.get("status") or {}
    return "waiting", "%s of %s replicas available" % (status.get("availableReplicas", 0),
                                                       (deployment.get("spec") or {}).get("replicas", 1))


def gpu_claims(pods):
    """``(namespace/name, GPUs)`` of each pod that requests or is limited to a GPU and has not finished."""
    claims = []
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        count = 0
        for container in (pod.get("spec") or {}).get("containers") or []:
            resources = container.get("resources") or {}
            count += int((resources.get("limits") or {}).get(GPU_RESOURCE)
                         or (resources.get("requests") or {}).get(GPU_RESOURCE) or 0)
        if count:
            metadata = pod.get("metadata") or {}
            claims.append(("%s/%s" % (metadata.get("namespace"), metadata.get("name")), count))
    return claims


def gpu_holders(pods):
    """Pods that request or are limited to a GPU and have not finished."""
    return [name for name, dummy in gpu_claims(pods)]


# -- who entered the mode ----------------------------------------------------------------

def setter_annotation(source, by, now):
    """SETTER_ANNOTATION's value: the kind of switch (SOURCES), its holder identity, and when it patched."""
    return json.dumps({"source": source, "by": by, "at": now.astimezone(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")}, sort_keys=True, separators=(",", ":"))


def mode_setter(deployment):
    """(source, by, at) of the mode the Deployment is in; ``at`` an aware datetime. A Deployment no switch
    has touched (site.yml's install) or a record that cannot be read: (INSTALL, "", None)."""
    text = (((deployment or {}).get("metadata") or {}).get("annotations") or {}).get(SETTER_ANNOTATION)
    try:
        record = json.loads(text) if text else {}
    except ValueError:
        record = {}
    if not isinstance(record, dict) or record.get("source") not in SOURCES:
        return INSTALL, "", None
    return record["source"], str(record.get("by") or ""), parse_time(record.get("at"))


# -- the lock -----------------------------------------------------------------------

def parse_time(text):
    if not text:
        return None
    text = text.replace("Z", "+00:00")
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def lease_state(lease, holder, now):
    """('free' | 'mine' | 'expired' | 'held', seconds left) of the GPU mode lock."""
    if not lease:
        return "free", 0.0
    spec = lease.get("spec") or {}
    current = spec.get("holderIdentity")
    if not current:
        return "free", 0.0
    if current == holder:
        return "mine", 0.0
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds") or 0
    if renewed is None:
        return "expired", 0.0
    left = (renewed + datetime.timedelta(seconds=duration) - now).total_seconds()
    return ("held", left) if left > 0 else ("expired", 0.0)


def micro_time(now):
    """Kubernetes MicroTime."""
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- the GPU-free check ---------------------------------------------------------------

def check_pod_name(deployment_name):
    return "%s-gpu-free-check" % deployment_name


def gpu_check_pod(deployment, container_name, namespace, name):
    """A short pod on the GPU node that asks the driver what the GPU holds: nvidia-smi from the vLLM
    image (the NVIDIA runtime puts it there), once for the memory used and once for the processes.

    It sees the GPU through NVIDIA_VISIBLE_DEVICES=all rather than a device of its own, so it runs
    whatever holds the card, and with hostPID, because the driver lists to a container only the
    processes of its own PID namespace."""
    template = (deployment.get("spec") or {}).get("template") or {}
    spec = template.get("spec") or {}
    image = (_container(deployment, container_name) or {}).get("image")
    pod_spec = {"restartPolicy": "Never", "hostPID": True, "terminationGracePeriodSeconds": 0,
                "containers": [
                    {"name": "memory", "image": image,
                     "command": ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]},
                    {"name": "processes", "image": image,
                     "command": ["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory",
                                 "--format=csv,noheader,nounits"]}]}
    for container in pod_spec["containers"]:
        container["env"] = [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]
    for key in ("nodeSelector", "tolerations", "affinity", "runtimeClassName"):
        if spec.get(key):
            pod_spec[key] = spec[key]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "homelab-inference",
                                    "app.kubernetes.io/component": "gpu-free-check"}},
            "spec": pod_spec}


def parse_gpu_memory(logs):
    """{"used_mib": int, "processes": [{"pid", "name", "used_mib"}]} from the check pod's nvidia-smi output
    (csv, noheader, nounits); ValueError when the memory line is not a number."""
    lines = [line.strip() for line in (logs.get("memory") or "").splitlines() if line.strip()]
    try:
        used = int(lines[0].split(",")[0])
    except (IndexError, ValueError):
        raise ValueError("nvidia-smi did not report the memory used: %r" % (logs.get("memory") or "")[:200])
    processes = []
    for line in (logs.get("processes") or "").splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 3 and fields[0].isdigit():
            processes.append({"pid": int(fields[0]), "name": fields[1],
                              "used_mib": int(fields[2]) if fields[2].isdigit() else fields[2]})
    return {"used_mib": used, "processes": processes}


# -- the switch's Event ---------------------------------------------------------------

EVENT_SOURCE = "homelab.inference.gpu_mode"
# The switch as data on its Event, for machines (the gpu_mode exporter's metrics); the message is for people.
SWITCH_ANNOTATION = "homelab.inference/switch"
RESULTS = {"GpuModeSwitched": "switched", "GpuModeRolledBack": "rolled_back", "GpuModeSwitchFailed": "failed"}


def switch_record(previous, target, holder, timings, drained, reason):
    """What an Event's SWITCH_ANNOTATION holds: from, to, by, result, each phase's seconds (and the
    total), and the most requests a drain saw running (null when nothing was drained)."""
    return {"from": previous or "unknown", "to": target, "by": holder, "result": RESULTS[reason],
            "seconds": dict(timings), "drained": drained}


def switch_event(involved, reason, message, ok, now, record=None):
    """A core/v1 Event on the vLLM Deployment, as a controller records one (kubectl describe lists it)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    metadata = {"name": "%s.%x" % (involved["name"], int(now.timestamp() * 1e9)), "namespace": involved["namespace"]}
    if record is not None:
        metadata["annotations"] = {SWITCH_ANNOTATION: json.dumps(record, sort_keys=True, separators=(",", ":"))}
    return {"apiVersion": "v1", "kind": "Event", "metadata": metadata,
            "involvedObject": dict((k, v) for k, v in involved.items() if v),
            "reason": reason, "message": message[:1024], "type": "Normal" if ok else "Warning",
            "source": {"component": EVENT_SOURCE}, "count": 1, "firstTimestamp": stamp, "lastTimestamp": stamp}

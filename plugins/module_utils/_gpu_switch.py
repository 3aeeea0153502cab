# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A GPU mode switch: read -> decide -> (check mode stops here) -> lock ->
warm the fallback tier (when the switch takes away vLLM's model) -> patch ->
wait for the rollout -> verify -> (roll back on failure) -> unlock.

The decisions are the pure functions of _gpu_mode; this file only sequences
them around the API (``kube``, a _kube_access.KubeAccess or a test fake) and
the two endpoints (vLLM and LiteLLM, _service_http.ServiceEndpoint-like)."""

from __future__ import annotations

import datetime
import json
import time

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from ansible_collections.homelab.inference.plugins.module_utils._api_errors import (Conflict, KubeError, ServiceError,
                                                                                    ServiceForbidden)

# Polls start fast and slow down, never beyond this: a finished rollout is
# noticed within a quarter of a second.
POLL_FIRST, POLL_GROWTH, POLL_MAX = 0.05, 1.5, 0.25
DRAIN_POLL = 0.25
GATEWAY_RETURN = 1.0


class SwitchFailed(Exception):
    """The switch did not reach a verified mode; ``result`` says how far it got."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


class GpuNotFree(SwitchFailed):
    """A GPU-free mode is in place but the driver shows memory held: going back would not help (vLLM
    could not load beside that memory), so the switch stops without a rollback."""


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


class GpuModeSwitch:
    def __init__(self, kube, params, vllm, litellm, holder, clock=time.monotonic, sleep=time.sleep, now=utc_now,
                 vllm_pod=None, source=_gpu_mode.OPERATOR):
        self.kube = kube
        self.params = params
        self.vllm = vllm
        self.vllm_pod = vllm_pod  # pod name -> that pod's vLLM endpoint (its /metrics while it drains)
        self.litellm = litellm
        self.holder = holder
        self.source = source    # what kind of switch this is, recorded on the Deployment (_gpu_mode.SOURCES)
        self.previous_setter = None  # the record of who entered the mode we leave: a rollback restores it
        self.clock, self.sleep, self.now = clock, sleep, now
        self.table = params["modes"]
        self.namespace = params["namespace"]
        self.name = params["deployment"]
        self.timings = {}
        self.warnings = []
        self.involved = None    # the Deployment, as an Event names it
        self.drained = None     # the most requests a drain saw running on vLLM

    # -- reading ------------------------------------------------------------------

    def read(self):
        deployment = self.kube.get_deployment(self.namespace, self.name)
        if deployment is None:
            raise SwitchFailed("Deployment %s/%s not found; run site.yml first, or set namespace and deployment"
                               % (self.namespace, self.name), {})
        self.involved = {"apiVersion": "apps/v1", "kind": "Deployment", "name": self.name, "namespace": self.namespace,
                         "uid": deployment["metadata"].get("uid")}
        return deployment

    def selector(self, deployment):
        labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return ",".join("%s=%s" % item for item in sorted(labels.items()))

    def describe(self, deployment):
        mode = _gpu_mode.mode_of_deployment(deployment, self.table, self.params["container"])
        return {"mode": mode, "model": (self.table.get(mode) or {}).get("vllm_model") if mode else None,
                "replicas": (deployment.get("spec") or {}).get("replicas", 1),
                "ready": _gpu_mode.rolled_out(deployment)}

    def status(self):
        deployment = self.read()
        state = self.describe(deployment)
        pods = self.kube.list_pods(self.namespace, self.selector(deployment))
        problems = [p for p in (_gpu_mode.pod_failure(pod) for pod in pods) if p]
        return dict(changed=False, mode=state["mode"], previous_mode=state["mode"], model=state["model"],
                    ready=state["ready"], replicas=state["replicas"], pod_problems=problems, rolled_back=False)

    # -- the switch -----------------------------------------------------------------

    def run(self, check_mode):
        began = self.clock()
        target = self.params["mode"]
        deployment = self.read()
        before = self.describe(deployment)
        previous = before["mode"]
        self.previous_setter = ((deployment["metadata"].get("annotations") or {}).get(_gpu_mode.SETTER_ANNOTATION))
        result = dict(mode=target, previous_mode=previous, model=self.table[target]["vllm_model"], changed=False,
                      rolled_back=False, verified={}, timings=self.timings,
                      diff={"before": {"mode": previous, "model": before["model"]},
                            "after": {"mode": target, "model": self.table[target]["vllm_model"]}})
        if previous == target and before["ready"]:
            # A run stopped between the Service's patch and the Deployment's left vLLM out of its Service.
            if self.select(target, check_mode):
                result["changed"] = True
                self.warnings.append("the vLLM Service selected another mode's pods (a switch was stopped "
                                     "midway): it %s %s's again" % ("would select" if check_mode else "selects",
                                                                    target))
            if self.claim(deployment, check_mode):
                result["changed"] = True
            if self.params["verify"] and not check_mode:
                result["verified"] = self.verified_in_place(target, deployment, result)
            self.timings["total"] = round(self.clock() - began, 3)
            return result
        result["changed"] = True
        if check_mode:
            return result
        self.lock()
        failure = None
        try:
            # Someone else may have switched while we waited for the lock.
            deployment = self.read()
            if self.describe(deployment)["mode"] == target and _gpu_mode.rolled_out(deployment):
                result["changed"] = False
                if self.params["verify"]:
                    result["verified"] = self.verified_in_place(target, deployment, result)
                return result
            # Clients fall back as soon as vLLM goes: the fallback tier must answer first.
            if self.warm(target, deployment, result):
                deployment = self.read()  # a cold load takes minutes: patch what is there now
            try:
                result["verified"] = self.apply(target, deployment)
            except GpuNotFree as held:
                raise SwitchFailed("switch to %s failed: %s; left in %s with vLLM stopped, not rolled back "
                                   "(vLLM could not load beside that memory): end that process or restart the GPU "
                                   "node" % (target, held, target), result)
            except SwitchFailed as broken:
                if not (self.params["rollback"] and previous and previous != target):
                    raise SwitchFailed("switch to %s failed: %s" % (target, broken), result)
                result["rolled_back"] = True
                result["mode"], result["model"] = previous, self.table[previous]["vllm_model"]
                try:
                    result["verified"] = self.apply(previous, None, phase="rollback_")
                except SwitchFailed as second:
                    result["rolled_back"] = False  # tried, not done: the Event says failed, not rolled back
                    raise SwitchFailed("switch to %s failed: %s; rolling back to %s failed too: %s"
                                       % (target, broken, previous, second), result)
                raise SwitchFailed("switch to %s failed: %s; rolled back to %s (verified)"
                                   % (target, broken, previous), result)
            return result
        except SwitchFailed as err:
            failure = err
            raise
        finally:
            if self.drained is not None:
                result["drained"] = self.drained
            released = self.unlock()
            self.timings["total"] = round(self.clock() - began, 3)
            if not released and failure is not None:
                failure.args = ("%s; the lock could not be released (it expires in %ss)"
                                % (failure, self.params["lock_duration"]),)
            if result["changed"]:
                self.record(result, previous, target, failure)

    def claim(self, deployment, check_mode):
        """An operator asking for the mode a request entered keeps it from now on (no idle return, no
        request leaves it): only the record of who entered it changes, under the lock. Whether it did."""
        if self.source != _gpu_mode.OPERATOR or _gpu_mode.mode_setter(deployment)[0] != _gpu_mode.ON_DEMAND:
            return False
        mode = self.describe(deployment)["mode"]
        self.warnings.append("mode %s was entered on demand: %s the operator's, kept until an operator switches"
                             % (mode, "it would become" if check_mode else "it is now"))
        if check_mode:
            return True
        self.lock()
        try:
            current = self.read()  # the switcher may have moved on while we waited for the lock
            if (self.describe(current)["mode"] != mode
                    or _gpu_mode.mode_setter(current)[0] != _gpu_mode.ON_DEMAND):
                self.warnings.pop()
                return False
            setter = _gpu_mode.setter_annotation(self.source, self.holder, self.now())
            self.kube.patch_deployment(self.namespace, self.name,
                                       {"metadata": {"annotations": {_gpu_mode.SETTER_ANNOTATION: setter}}})
            return True
        finally:
            self.unlock()

    def verified_in_place(self, target, deployment, result):
        """verify() of a mode already in place; a failure reports that mode (``result``) as a switch's does."""
        try:
            return self.verify(target, deployment)
        except GpuNotFree as held:
            raise GpuNotFree("%s is in place but %s: end that process or restart the GPU node"
                             % (target, held), result)
        except SwitchFailed as failed:
            raise SwitchFailed(str(failed), result)

    def record(self, result, previous, target, failure):
        """The switch as an Event on the vLLM Deployment (kubectl describe shows it): who, from, to, each
        phase's seconds, the outcome; the same as data in its annotation, which the exporter counts. Best
        effort: the switch stands whether or not it is recorded."""
        phases = ", ".join("%s %ss" % item for item in self.timings.items() if item[0] != "total")
        outcome = "verified" if failure is None else str(failure)
        message = "%s -> %s by %s in %ss (%s): %s" % (previous or "unknown", target, self.holder,
                                                      self.timings.get("total"), phases, outcome)
        reason = "GpuModeSwitched" if failure is None else \
            "GpuModeRolledBack" if result.get("rolled_back") else "GpuModeSwitchFailed"
        record = _gpu_mode.switch_record(previous, target, self.holder, self.timings, self.drained, reason)
        event = _gpu_mode.switch_event(self.involved, reason, message, failure is None, self.now(), record)
        try:
            self.kube.create_event(self.namespace, event)
        except KubeError as err:
            self.warnings.append("the switch is done but its Event was not recorded: %s" % err)

    def warm(self, target, deployment, result):
        """Before a switch takes away the model vLLM serves: the fallback tier answers through LiteLLM.

        A cold CPU tier loads on its first request (minutes for Ollama), which would
        otherwise land on the clients - and on this switch's verification. When it
        cannot be warmed within ``warm_timeout``, nothing has been changed yet, and
        the switch fails saying so."""
        model = self.params["gpu_free_model"]
        if self.litellm is None or not model or \
                not _gpu_mode.stops_serving(deployment, target, self.table, self.params["container"]):
            return False
        began = self.clock()
        try:
            result["warmed"] = self.litellm_answer(model, expect_group=model, limit="warm_timeout")
        except SwitchFailed as cold:
            current = self.describe(deployment)
            result.update(changed=False, mode=current["mode"], model=current["model"])
            raise SwitchFailed("switch to %s not started: %s; vLLM still serves %s (%s), nothing changed"
                               % (target, cold, _gpu_mode.served_model_name(deployment, self.params["container"]),
                                  current["mode"]), result)
        finally:
            self.timings["warm"] = round(self.clock() - began, 3)
        return True

    def apply(self, target, deployment, phase=""):
        """Patch, wait, verify one mode; raises SwitchFailed with the reason."""
        try:
            return self._apply(target, deployment, phase)
        except KubeError as err:  # the API failing mid-switch is a failed switch, not a crash
            raise SwitchFailed(str(err), {})

    def _apply(self, target, deployment, phase):
        if deployment is None:
            deployment = self.read()
        began = self.clock()
        drained = self.drain(target, deployment)
        if drained is not None:
            self.timings[phase + "drain"] = round(self.clock() - began, 3)
            self.drained = drained
        began = self.clock()
        setter = (self.previous_setter if phase == "rollback_"
                  else _gpu_mode.setter_annotation(self.source, self.holder, self.now()))
        patch = _gpu_mode.switch_patch(deployment, target, self.table, self.params["container"], setter)
        patched = self.kube.patch_deployment(self.namespace, self.name, patch)
        self.timings[phase + "patch"] = round(self.clock() - began, 3)
        began = self.clock()
        self.wait_rollout(patched or deployment)
        self.timings[phase + "rollout"] = round(self.clock() - began, 3)
        began = self.clock()
        try:
            if self.table[target]["vllm_model"] and self.litellm is not None:
                # The new pod answers: LiteLLM's hook probes a backend it found down every 0.5 s
                # (inference_liveness.Watchdog), so within a second every replica routes to it again,
                # and neither the verification nor a client after it is sent to the CPU tier.
                self.sleep(GATEWAY_RETURN)
            return self.verify(target, self.read())
        finally:
            self.timings[phase + "verify"] = round(self.clock() - began, 3)

    def drain(self, target, deployment):
        """Take vLLM's serving pods out of its Service, then wait until they run no request.

        The Service selects mode ``target``'s pods from now on: new connections to vLLM are refused,
        which the gateway falls back from at once, and its probes stop sending it anything within
        ``drain_settle`` seconds; requests already running finish on the old pod. It is stopped when its
        /metrics shows none running or waiting after that, or at ``drain_timeout`` (a warning then says
        how many were still running). Returns the most requests seen in flight, or None when nothing
        served (no pod to drain)."""
        if not self.select(target):
            return None
        pods = [p["metadata"]["name"] for p in self.kube.list_pods(self.namespace, self.selector(deployment))
                if _gpu_mode.pod_ready(p)]
        if not pods:
            return None
        began = self.clock()
        settled, deadline = began + self.params["drain_settle"], began + self.params["drain_timeout"]
        most = running = 0
        while True:
            running = sum(self.requests_in(pod) for pod in pods)
            most = max(most, running)
            if running == 0 and self.clock() >= settled:
                return most
            if self.clock() >= deadline:
                self.warnings.append("drain_timeout: %d request(s) still running on vLLM after %ss were cut by "
                                     "the switch" % (running, self.params["drain_timeout"]))
                return most
            self.sleep(DRAIN_POLL)

    def select(self, target, check_mode=False):
        """Point the vLLM Service at mode ``target``'s pods (not in check mode); True when it pointed elsewhere."""
        service = self.kube.get_service(self.namespace, self.params["vllm_service"])
        patch = _gpu_mode.service_patch(service, target) if service else None
        if patch and not check_mode:
            self.kube.patch_service(self.namespace, self.params["vllm_service"], patch)
        return bool(patch)

    def requests_in(self, pod):
        """Requests running or waiting in one vLLM pod; 0 when it no longer answers (nothing left to wait for)."""
        endpoint = self.vllm_pod(pod) if self.vllm_pod else self.vllm
        try:
            status, text = endpoint.request("GET", "/metrics", timeout=5)
        except ServiceForbidden as err:  # missing RBAC rights: asking again cannot help
            raise SwitchFailed(str(err), {})
        except ServiceError:
            return 0
        return (_gpu_mode.requests_in_vllm(text) or 0) if status == 200 else 0

    def wait_rollout(self, deployment):
        deadline = self.clock() + self.params["rollout_timeout"]
        selector = self.selector(deployment)
        interval = POLL_FIRST
        detail = "not started"
        while True:
            deployment = self.read()
            pods = self.kube.list_pods(self.namespace, selector)
            state, detail = _gpu_mode.rollout_progress(deployment, pods)
            if state == "done":
                return
            if state == "failed":
                raise SwitchFailed(detail, {})
            if self.clock() >= deadline:
                raise SwitchFailed("timed out after %ss waiting for the rollout (%s)"
                                   % (self.params["rollout_timeout"], detail), {})
            self.sleep(interval)
            interval = min(interval * POLL_GROWTH, POLL_MAX)

    # -- verification ---------------------------------------------------------------

    def verify(self, target, deployment):
        """Proof that the mode is what it says; raises SwitchFailed with what was seen."""
        served = self.table[target]["vllm_model"]
        seen = {}
        if served:
            seen["vllm_models"] = self.vllm_models()
            if seen["vllm_models"] != [served]:
                raise SwitchFailed("vLLM lists %s, expected exactly %s" % (seen["vllm_models"], served), {})
        else:
            pods = self.kube.list_pods(self.namespace, self.selector(deployment))
            if pods:
                raise SwitchFailed("vLLM pods still present: %s" % ", ".join(p["metadata"]["name"] for p in pods), {})
            seen["vllm_pods"] = 0
            holders = []
            for node in self.kube.nodes(self.params["gpu_node_selector"]):
                holders += _gpu_mode.gpu_holders(self.kube.pods_on_node(node))
            seen["gpu_holders"] = holders
            if holders:
                raise SwitchFailed("the GPU is still held by %s" % ", ".join(holders), {})
            if self.params["gpu_free_max_mib"] >= 0:
                seen["gpu_memory"] = self.gpu_memory(deployment)
        model = served or self.params["gpu_free_model"]
        if self.litellm is not None and model:
            seen["litellm"] = self.litellm_answer(model, expect_group=model)
        return seen

    def gpu_memory(self, deployment):
        """What the driver shows on the GPU node, from nvidia-smi in a short pod there; raises GpuNotFree
        above ``gpu_free_max_mib``."""
        try:
            shown = _gpu_mode.parse_gpu_memory(self.run_check_pod(deployment))
        except ValueError as err:
            raise SwitchFailed(str(err), {})
        limit = self.params["gpu_free_max_mib"]
        if shown["used_mib"] > limit:
            held = ", ".join("%s (pid %s, %s MiB)" % (p["name"], p["pid"], p["used_mib"]) for p in shown["processes"])
            raise GpuNotFree("the GPU is not free: %s MiB used, at most %s allowed (gpu_free_max_mib), held by %s"
                             % (shown["used_mib"], limit, held or "no process nvidia-smi could name"), {})
        return dict(shown, max_mib=limit)

    def run_check_pod(self, deployment):
        """The check pod's two nvidia-smi answers (memory, processes); the pod is removed in any case."""
        pod = _gpu_mode.gpu_check_pod(deployment, self.params["container"], self.namespace,
                                      _gpu_mode.check_pod_name(self.name))
        name = pod["metadata"]["name"]
        self.kube.delete_pod(self.namespace, name)   # one an interrupted run left
        deadline = self.clock() + self.params["verify_timeout"]
        try:
            while self.kube.get_pod(self.namespace, name) is not None:
                if self.clock() >= deadline:
                    raise SwitchFailed("the GPU check pod %s/%s of an earlier run is still terminating"
                                       % (self.namespace, name), {})
                self.sleep(POLL_MAX)
            self.kube.create_pod(self.namespace, pod)
            interval = POLL_FIRST
            while True:
                current = self.kube.get_pod(self.namespace, name) or {}
                phase = (current.get("status") or {}).get("phase")
                if phase in ("Succeeded", "Failed"):
                    break
                if self.clock() >= deadline:
                    raise SwitchFailed("the GPU check pod %s/%s did not finish within %ss (verify_timeout): %s"
                                       % (self.namespace, name, self.params["verify_timeout"],
                                          _gpu_mode.pod_failure(current) or "phase %s" % phase), {})
                self.sleep(interval)
                interval = min(interval * POLL_GROWTH, POLL_MAX)
            logs = {c: self.kube.read_pod_log(self.namespace, name, c) or "" for c in ("memory", "processes")}
            if phase == "Failed":
                raise SwitchFailed("nvidia-smi failed in the GPU check pod %s/%s: %s"
                                   % (self.namespace, name, " ".join((logs["memory"] or logs["processes"]).split())
                                      [:200] or "no output"), {})
            return logs
        finally:
            self.kube.delete_pod(self.namespace, name)

    def vllm_models(self):
        deadline = self.clock() + self.params["verify_timeout"]
        interval = POLL_FIRST
        while True:
            try:
                status, body = self.vllm.request_json("GET", "/v1/models", timeout=10)
                if status == 200:
                    return sorted(m.get("id") for m in body.get("data", []))
                problem = "answered %s" % status
            except ServiceForbidden as err:  # missing RBAC rights: asking again cannot help
                raise SwitchFailed(str(err), {})
            except ServiceError as err:
                problem = str(err)
            if self.clock() >= deadline:
                raise SwitchFailed("vLLM's /v1/models did not answer: %s" % problem, {})
            self.sleep(interval)
            interval = min(interval * POLL_GROWTH, POLL_MAX)

    def litellm_answer(self, model, expect_group=None, limit="verify_timeout"):
        """A 1-token chat through LiteLLM, answered by the tier ``expect_group`` itself (no fallback).

        Asked again until the ``limit`` parameter's seconds have passed, each request
        bounded by the time left."""
        headers = {"x-litellm-api-key": "Bearer " + self.params["litellm_api_key"]} \
            if self.params.get("litellm_api_key") else {}
        body = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}
        deadline = self.clock() + self.params[limit]
        interval = POLL_FIRST
        while True:
            try:
                status, text, response_headers = self.litellm.exchange(
                    "POST", "/v1/chat/completions", body, timeout=max(deadline - self.clock(), 1), headers=headers)
                group = response_headers.get("x-litellm-model-group")
                if status == 200 and (expect_group is None or group == expect_group):
                    return {"model": model, "status": status, "answered_by": group}
                if status == 200:
                    problem = "it fell back to %s" % group if group else "the answer named no tier"
                else:
                    problem = "answered %s%s: %s" % (status, " by %s" % group if group else "", _error_text(text))
            except ServiceForbidden as err:
                raise SwitchFailed(str(err), {})
            except ServiceError as err:
                # A read timeout is a slow answer (a cold load), not an unreachable API server.
                problem = "no answer in time (the request timed out)" if err.timed_out else str(err)
            # Right after a switch LiteLLM may still skip a tier it found down (its
            # cooldown): keep asking until the time is up.
            if self.clock() >= deadline:
                raise SwitchFailed("LiteLLM did not serve %s from %s within %ss (%s): %s"
                                   % (model, self.tier_of(expect_group or model), self.params[limit], limit, problem),
                                   {})
            self.sleep(interval)
            interval = min(interval * POLL_GROWTH, POLL_MAX * 4)

    def tier_of(self, model):
        """The tier a model is answered by, for messages: vLLM's models are named for it."""
        if any(entry.get("vllm_model") == model for entry in self.table.values()):
            return "vLLM (its own tier %s)" % model
        return "its own tier %s" % model

    # -- the lock ---------------------------------------------------------------------

    def lease_body(self, existing=None):
        now = _gpu_mode.micro_time(self.now())
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.params["lock_name"], "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/part-of": "homelab-inference"}},
                "spec": {"holderIdentity": self.holder, "leaseDurationSeconds": self.params["lock_duration"],
                         "acquireTime": now, "renewTime": now}}
        if existing:
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        return body

    def lock(self):
        began = self.clock()
        deadline = began + self.params["lock_timeout"]
        while True:
            lease = self.kube.get_lease(self.namespace, self.params["lock_name"])
            state, left = _gpu_mode.lease_state(lease, self.holder, self.now())
            try:
                if state == "free" and lease is None:
                    self.kube.create_lease(self.namespace, self.lease_body())
                    break
                if state in ("free", "expired", "mine"):
                    self.kube.replace_lease(self.namespace, self.lease_body(lease))
                    break
            except Conflict:
                continue  # someone else got there first: look again
            if self.clock() >= deadline:
                spec = lease.get("spec") or {}
                raise SwitchFailed("another gpu_mode run holds the lock %s/%s: %s since %s (expires in %ds); "
                                   "waited %ss, try again later" % (
                                       self.namespace, self.params["lock_name"], spec.get("holderIdentity"),
                                       spec.get("acquireTime"), left, self.params["lock_timeout"]), {})
            self.sleep(min(1.0, max(0.05, left)))
        self.timings["lock"] = round(self.clock() - began, 3)

    def unlock(self, attempts=20):
        """Release the lock if it is still ours; retried through a short API outage. True when released."""
        for attempt in range(attempts):
            try:
                lease = self.kube.get_lease(self.namespace, self.params["lock_name"])
                if lease and (lease.get("spec") or {}).get("holderIdentity") == self.holder:
                    self.kube.delete_lease(self.namespace, self.params["lock_name"])
                return True
            except KubeError:
                if attempt + 1 < attempts:
                    self.sleep(0.25)
        return False


def _error_text(text):
    try:
        return json.loads(text)["error"]["message"][:200]
    except (ValueError, KeyError, TypeError):
        return (text or "")[:200]

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ollama_model
short_description: Pull, load or remove models on an Ollama server in the cluster
version_added: 0.1.0
author:
  - homelab.inference maintainers (@homelab-inference)
description:
  - Makes the set of models on an Ollama server match a declared list, idempotently. Models already present are not
    pulled again, so a second run changes nothing.
  - With O(state=loaded), also loads the models into memory (Ollama's C(POST /api/generate) with no prompt) and keeps
    them there for O(keep_alive), so that the first request does not pay a cold load (minutes on a CPU). Models that
    C(/api/ps) lists as loaded, with an expiry that agrees with O(keep_alive), are not loaded again.
  - Reaches Ollama through the Kubernetes API's service proxy by default, so the controller needs no ingress; or
    straight at O(url) when given.
extends_documentation_fragment:
  - homelab.inference.attributes
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    details: Reports the models that would be pulled, loaded or removed; when Ollama is not running yet, all of them.
  diff_mode:
    support: full
    details: The list of installed models before and after; with O(state=loaded), of the loaded ones too.
  idempotent:
    support: full
options:
  name:
    description:
      - Ollama model references, for example V(qwen2.5:3b). A reference without a tag means V(latest).
    type: list
    elements: str
    required: true
    aliases: [models]
  state:
    description:
      - V(present) pulls the models that are missing; V(absent) removes the listed models that are installed.
      - V(loaded) pulls the models that are missing and loads those not loaded into memory, kept there for
        O(keep_alive).
    type: str
    choices: [present, loaded, absent]
    default: present
  keep_alive:
    description:
      - With O(state=loaded), how long Ollama keeps the models loaded after the load and after each request - V(-1)
        for good, a duration such as V(24h) or V(30m), or whole seconds such as V(3600).
      - Ollama reports only when a loaded model expires, not the keep_alive it got. A model kept for good is loaded
        again when O(keep_alive) is a duration, and one that expires is loaded again when O(keep_alive) is V(-1); a
        model that expires within O(keep_alive) (and 5 minutes for clocks that disagree) counts as loaded.
      - Unset, a model that is loaded counts as loaded, and a load takes the server's C(OLLAMA_KEEP_ALIVE).
    type: str
  load_timeout:
    description:
      - With O(state=loaded), seconds one model load may take. A cold load on a CPU takes minutes (60 to 164 seconds
        for a 3B model on the reference system).
    type: int
    default: 600
  namespace:
    description: Namespace of the Ollama Service.
    type: str
    default: ml
  service:
    description: Name of the Ollama Service.
    type: str
    default: ollama
  port:
    description: Port of the Ollama Service.
    type: int
    default: 11434
  url:
    description:
      - Reach Ollama at this base URL (for example V(http://ollama.ml.svc.cluster.local:11434)) instead of through
        the API server's service proxy.
    type: str
  pull_timeout:
    description: Seconds one pull may take (a multi-gigabyte download on a home connection takes minutes).
    type: int
    default: 3600
requirements:
  - kubernetes >= 24.2.0 (when reaching Ollama through the service proxy)
notes:
  - Pulls stream Ollama's progress so that the connection stays busy through proxies during long downloads.
  - Ollama v0.13.5 abandons a load whose request goes away (C(server/sched.go), C(WaitUntilRunning(req.ctx))), so
    O(load_timeout) must cover a whole cold load.
  - A 503 from the API server's proxy (no ready pod behind the Service yet, as just after a rollout) is asked again
    for up to 30 seconds before the module fails; check mode does not wait.
"""

EXAMPLES = r"""
- name: Have the catalog's CPU models on Ollama
  homelab.inference.ollama_model:
    name: [qwen2.5:3b, llama3.2:1b]
    kubeconfig: ~/.kube/config

- name: Have the fallback model pulled and loaded, kept in memory for good
  homelab.inference.ollama_model:
    name: qwen2.5:3b
    state: loaded
    keep_alive: "-1"
    load_timeout: 600

- name: Remove a model no longer used
  homelab.inference.ollama_model:
    name: llama3.2:1b
    state: absent
"""

RETURN = r"""
models:
  description: The models installed after the run (canonical names, with tag).
  returned: success
  type: list
  elements: str
  sample: [llama3.2:1b, qwen2.5:3b]
pulled:
  description: The models pulled (or, in check mode, that would be).
  returned: success
  type: list
  elements: str
  sample: [qwen2.5:3b]
loaded:
  description: With O(state=loaded), the models loaded into memory (or, in check mode, that would be).
  returned: success
  type: list
  elements: str
  sample: [qwen2.5:3b]
running:
  description: With O(state=loaded), the models in memory after the run (canonical names, with tag).
  returned: success and O(state=loaded)
  type: list
  elements: str
  sample: [qwen2.5:3b]
removed:
  description: The models removed (or, in check mode, that would be).
  returned: success
  type: list
  elements: str
  sample: []
"""

import copy
import datetime
import json
import time

from ansible_collections.homelab.inference.plugins.module_utils import _catalog, _ollama
from ansible_collections.homelab.inference.plugins.module_utils._service_endpoint import describe_unavailable
from ansible_collections.homelab.inference.plugins.module_utils._service_http import ServiceEndpoint, ServiceError
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule


# Just after the Deployment turned available the API server's proxy may still answer 503 "no endpoints
# available" (the EndpointSlice follows the pod's Ready condition a moment later, and a readiness probe
# missed on a busy node takes the pod out again until the next one passes): asked again for a while.
NO_POD_GRACE = 30.0
NO_POD_RETRY = 1.0


def argument_spec():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        name=dict(type="list", elements="str", required=True, aliases=["models"]),
        state=dict(type="str", choices=["present", "loaded", "absent"], default="present"),
        keep_alive=dict(type="str"),
        load_timeout=dict(type="int", default=600),
        namespace=dict(type="str", default="ml"),
        service=dict(type="str", default="ollama"),
        port=dict(type="int", default=11434),
        url=dict(type="str"),
        pull_timeout=dict(type="int", default=3600),
    )
    return spec


def run(module, endpoint, now=None):
    params = module.params
    state = params["state"]
    loading = state == "loaded"
    if params["keep_alive"] is not None:
        problem = _catalog.keep_alive_problem(params["keep_alive"]) if loading else \
            "only state=loaded takes it; remove it or set state: loaded"
        if problem:
            module.fail_json(msg="keep_alive: %s" % problem)
    pull_state = "absent" if state == "absent" else "present"
    status, body = endpoint.request_json("GET", "/api/tags", timeout=30)
    deadline = time.monotonic() + NO_POD_GRACE
    while status == 503 and not module.check_mode and time.monotonic() < deadline:
        time.sleep(NO_POD_RETRY)
        status, body = endpoint.request_json("GET", "/api/tags", timeout=30)
    if status != 200:
        message = describe_unavailable(endpoint, status, str(body))
        if module.check_mode and status in (404, 503):
            # Check mode on a fresh cluster: Ollama is not there yet, so everything would be pulled (and loaded).
            todo = _ollama.plan(params["name"], [], pull_state)
            module.warn("Ollama is not running yet (%s); reporting every model as to be pulled%s"
                        % (message, " and loaded" if loading else ""))
            result = dict(changed=bool(todo), models=[], pulled=todo if pull_state == "present" else [], removed=[],
                          loaded=_ollama.load_plan(params["name"], {}, None, None) if loading else [])
            if loading:
                result["running"] = []
            return result
        module.fail_json(msg="cannot list Ollama's models: %s%s"
                             % (message, " for %ss" % NO_POD_GRACE if status == 503 else ""))
    before = _ollama.installed(body)
    todo = _ollama.plan(params["name"], before, pull_state)
    pulled, removed = (todo, []) if pull_state == "present" else ([], todo)
    after = sorted(set(before) | {_ollama.canonical(n) for n in pulled}) if pulled else \
        [n for n in before if n not in {_ollama.canonical(r) for r in removed}]
    result = dict(changed=bool(todo), models=after, pulled=pulled, removed=removed, loaded=[])
    diff = dict(before={"models": before}, after={"models": after})
    if loading:
        status, text = endpoint.request("GET", "/api/ps", timeout=30)
        try:
            body = json.loads(text) if status == 200 else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            module.fail_json(msg="cannot list Ollama's loaded models (GET /api/ps, Ollama 0.1.38 or later): %s"
                                 % describe_unavailable(endpoint, status, text), **result)
        in_memory = _ollama.running(body)
        now = now or datetime.datetime.now(datetime.timezone.utc)
        result["loaded"] = _ollama.load_plan(params["name"], in_memory, params["keep_alive"], now)
        result["running"] = sorted(set(in_memory) | {_ollama.canonical(n) for n in result["loaded"]})
        result["changed"] = result["changed"] or bool(result["loaded"])
        diff["before"]["running"] = sorted(in_memory)
        diff["after"]["running"] = result["running"]
    if module._diff:
        result["diff"] = diff
    if module.check_mode or not result["changed"]:
        return result
    for name in pulled:
        status, text = endpoint.request("POST", "/api/pull", {"model": name, "stream": True},
                                        timeout=params["pull_timeout"])
        ok, message = _ollama.pull_outcome(text) if status == 200 else (False, text.strip()[:200])
        if not ok:
            module.fail_json(msg="pulling %s on %s failed: %s" % (name, endpoint.label, message), **result)
    for name in result["loaded"]:
        load(module, endpoint, name, result)
    for name in removed:
        status, text = endpoint.request("DELETE", "/api/delete", {"model": name})
        if status != 200:
            module.fail_json(msg="removing %s on %s failed (%s): %s" % (name, endpoint.label, status, text[:200]),
                             **result)
    return result


def load(module, endpoint, name, result):
    """Load one model into memory (Ollama's api.md, "Load a model": a generate request with no prompt)."""
    params = module.params
    body = {"model": name, "stream": False}
    keep_alive = _ollama.keep_alive_json(params["keep_alive"])
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    try:
        status, text = endpoint.request("POST", "/api/generate", body, timeout=params["load_timeout"])
    except ServiceError as err:
        if err.timed_out:
            module.fail_json(msg="loading %s on %s did not finish within %ss (load_timeout); a cold load on a CPU "
                                 "takes minutes: raise load_timeout" % (name, endpoint.label, params["load_timeout"]),
                             **result)
        module.fail_json(msg="loading %s on %s failed: %s" % (name, endpoint.label, err), **result)
    ok, message = _ollama.load_outcome(status, text)
    if not ok:
        module.fail_json(msg="loading %s on %s failed: %s" % (name, endpoint.label, message), **result)


def main():
    module = AnsibleK8SModule(argument_spec=argument_spec(), supports_check_mode=True, check_pyyaml=False)
    params = module.params
    endpoint = ServiceEndpoint(module, params["namespace"], params["service"], params["port"], params["url"])
    try:
        module.exit_json(**run(module, endpoint))
    except ServiceError as err:
        module.fail_json(msg=str(err))


if __name__ == "__main__":
    main()

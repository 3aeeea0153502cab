#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ollama_model
short_description: Pull or remove models on an Ollama server in the cluster
version_added: 0.1.0
author:
  - homelab.inference maintainers (@homelab-inference)
description:
  - Makes the set of models on an Ollama server match a declared list, idempotently. Models already present are not
    pulled again, so a second run changes nothing.
  - Reaches Ollama through the Kubernetes API's service proxy by default, so the controller needs no ingress; or
    straight at O(url) when given.
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Reports the models that would be pulled or removed; when Ollama is not running yet, all of them.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
    details: The list of installed models before and after.
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
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
    type: str
    choices: [present, absent]
    default: present
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
"""

EXAMPLES = r"""
- name: Have the catalog's CPU models on Ollama
  homelab.inference.ollama_model:
    name: [qwen2.5:3b, llama3.2:1b]
    kubeconfig: ~/.kube/config

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
removed:
  description: The models removed (or, in check mode, that would be).
  returned: success
  type: list
  elements: str
  sample: []
"""

import copy

from ansible_collections.homelab.inference.plugins.module_utils import _ollama
from ansible_collections.homelab.inference.plugins.module_utils._service_http import (
    ServiceEndpoint,
    ServiceError,
    describe_unavailable,
)
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule


def argument_spec():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        name=dict(type="list", elements="str", required=True, aliases=["models"]),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        namespace=dict(type="str", default="ml"),
        service=dict(type="str", default="ollama"),
        port=dict(type="int", default=11434),
        url=dict(type="str"),
        pull_timeout=dict(type="int", default=3600),
    )
    return spec


def run(module, endpoint):
    params = module.params
    status, body = endpoint.request_json("GET", "/api/tags", timeout=30)
    if status != 200:
        message = describe_unavailable(endpoint, status, str(body))
        if module.check_mode and status in (404, 503):
            # Check mode on a fresh cluster: Ollama is not there yet, so everything would be pulled.
            todo = _ollama.plan(params["name"], [], params["state"])
            module.warn("Ollama is not running yet (%s); reporting every model as to be pulled" % message)
            return dict(changed=bool(todo), models=[], pulled=todo if params["state"] == "present" else [], removed=[])
        module.fail_json(msg="cannot list Ollama's models: %s" % message)
    before = _ollama.installed(body)
    todo = _ollama.plan(params["name"], before, params["state"])
    pulled, removed = (todo, []) if params["state"] == "present" else ([], todo)
    after = sorted(set(before) | {_ollama.canonical(n) for n in pulled}) if pulled else \
        [n for n in before if n not in {_ollama.canonical(r) for r in removed}]
    result = dict(changed=bool(todo), models=after, pulled=pulled, removed=removed)
    if module._diff:
        result["diff"] = dict(before={"models": before}, after={"models": after})
    if module.check_mode or not todo:
        return result
    for name in pulled:
        status, text = endpoint.request("POST", "/api/pull", {"model": name, "stream": True},
                                        timeout=params["pull_timeout"])
        ok, message = _ollama.pull_outcome(text) if status == 200 else (False, text.strip()[:200])
        if not ok:
            module.fail_json(msg="pulling %s on %s failed: %s" % (name, endpoint.label, message), **result)
    for name in removed:
        status, text = endpoint.request("DELETE", "/api/delete", {"model": name})
        if status != 200:
            module.fail_json(msg="removing %s on %s failed (%s): %s" % (name, endpoint.label, status, text[:200]),
                             **result)
    return result


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

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: service_request
short_description: Send one HTTP request to a Service in the cluster and return the answer
version_added: 0.1.0
author:
  - homelab.inference maintainers (@homelab-inference)
description:
  - Sends one request to a Service port through the Kubernetes API's service proxy (the controller needs no ingress
    and no C(kubectl exec)), or straight to O(url) when given, and returns the status, the response headers and the
    body, parsed when it is JSON.
  - An answer with any HTTP status is returned, not failed on; the caller judges it. A redirect is returned too, not
    followed (through the service proxy its C(location) is the proxy's own path, as the API server rewrites it). The
    module fails only when no answer came back (the API server or the URL cannot be reached), in one line.
  - Meant for checks (C(verify.yml) asks each model through LiteLLM, Paperless-AI for its health), so it never reports
    a change.
extends_documentation_fragment:
  - homelab.inference.attributes
  - kubernetes.core.k8s_auth_options
attributes:
  check_mode:
    support: full
    details: The request is sent in check mode too; send only requests that change nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  namespace:
    description: Namespace of the Service.
    type: str
    required: true
  service:
    description: Name of the Service.
    type: str
    required: true
  port:
    description: Port of the Service.
    type: int
    required: true
  path:
    description: Path of the request on the Service, for example V(/v1/models).
    type: str
    required: true
  method:
    description: HTTP method.
    type: str
    default: GET
    choices: [GET, POST, HEAD]
  body:
    description: A JSON body to send.
    type: raw
  requests:
    description:
      - Several requests to the same O(path), sent at the same time instead of one after the other; each answer
        is in RV(answers), in the same order. A request that gets no answer is an answer with C(failed) and C(msg),
        not a failure of the task.
      - C(verify.yml) asks every model through LiteLLM at once this way.
    type: list
    elements: dict
    suboptions:
      body:
        description: A JSON body to send.
        type: raw
      timeout:
        description: Seconds to wait for this answer; O(timeout) when not given.
        type: int
  api_key:
    description:
      - A key sent in the O(api_key_header) header, after O(api_key_scheme). Never logged or returned.
    type: str
  api_key_scheme:
    description: What comes before the key in its header, for example V(Bearer); empty for the bare key.
    type: str
    default: Bearer
  api_key_header:
    description:
      - The header that carries O(api_key). The API server's service proxy does not pass C(Authorization) on, so the
        default is LiteLLM's own C(x-litellm-api-key).
    type: str
    default: x-litellm-api-key
  timeout:
    description: Seconds to wait for the answer.
    type: int
    default: 30
  url:
    description: Send the request to this base URL instead of through the API server's service proxy.
    type: str
requirements:
  - kubernetes >= 24.2.0 (when going through the service proxy)
"""

EXAMPLES = r"""
- name: Ask LiteLLM for one token from vllm-qwen
  homelab.inference.service_request:
    namespace: ml
    service: litellm
    port: 4000
    path: /v1/chat/completions
    method: POST
    body: {model: vllm-qwen, max_tokens: 1, messages: [{role: user, content: ping}]}
    api_key: "{{ litellm_master_key }}"
  register: answer

- name: Paperless-AI's own health endpoint
  homelab.inference.service_request:
    namespace: docs
    service: paperless-ai
    port: 3000
    path: /health

- name: A route of Paperless-AI behind its API key (a redirect to /setup means it is not configured)
  homelab.inference.service_request:
    namespace: docs
    service: paperless-ai
    port: 3000
    path: /api/processing-status
    api_key: "{{ paperless_ai_access_key }}"
    api_key_header: x-api-key
    api_key_scheme: ""
"""

RETURN = r"""
status:
  description: The HTTP status of the answer.
  returned: success
  type: int
  sample: 200
headers:
  description: The response headers, names in lower case.
  returned: success
  type: dict
  sample: {"content-type": "application/json", "x-litellm-model-group": "vllm-qwen"}
json:
  description: The body parsed as JSON; null when it is not JSON.
  returned: success
  type: raw
  sample: {"object": "list", "data": [{"id": "vllm-qwen"}]}
text:
  description: The body as text, cut at 4,000 characters.
  returned: success
  type: str
  sample: '{"status": "healthy"}'
elapsed:
  description: Seconds the request took.
  returned: success
  type: float
  sample: 0.21
timed_out:
  description: The service was reached but did not answer within O(timeout) (slow, not unreachable).
  returned: failure
  type: bool
  sample: true
answers:
  description:
    - One answer per entry of O(requests), in order, each with RV(status), RV(headers), RV(json), RV(text) and
      RV(elapsed), or C(failed), C(msg) and RV(timed_out) when no answer came back.
  returned: when O(requests) is given
  type: list
  elements: dict
  sample: [{"status": 200, "headers": {}, "json": {"object": "chat.completion"}, "text": "{...}", "elapsed": 0.4}]
"""

import copy
import json
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.homelab.inference.plugins.module_utils._service_http import ServiceEndpoint, ServiceError
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule

TEXT_LIMIT = 4000


def argument_spec():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        namespace=dict(type="str", required=True),
        service=dict(type="str", required=True),
        port=dict(type="int", required=True),
        path=dict(type="str", required=True),
        method=dict(type="str", default="GET", choices=["GET", "POST", "HEAD"]),
        body=dict(type="raw"),
        requests=dict(type="list", elements="dict", options=dict(body=dict(type="raw"), timeout=dict(type="int"))),
        api_key=dict(type="str", no_log=True),
        api_key_header=dict(type="str", default="x-litellm-api-key", no_log=False),
        api_key_scheme=dict(type="str", default="Bearer", no_log=False),
        timeout=dict(type="int", default=30),
        url=dict(type="str"),
    )
    return spec


def parse(text):
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None


def ask(params, endpoint, body, timeout):
    scheme = params["api_key_scheme"]
    headers = {params["api_key_header"]: (scheme + " " if scheme else "") + params["api_key"]} if params["api_key"] else {}
    began = time.monotonic()
    status, text, response_headers = endpoint.exchange(params["method"], params["path"], body, timeout=timeout,
                                                       headers=headers, follow_redirects=False)
    return dict(status=status, headers=response_headers, json=parse(text), text=text[:TEXT_LIMIT],
                elapsed=round(time.monotonic() - began, 3))


def ask_or_report(params, endpoint, request):
    try:
        return ask(params, endpoint, request["body"], request["timeout"] or params["timeout"])
    except ServiceError as err:
        return dict(failed=True, msg=str(err), timed_out=err.timed_out)


def run(module, endpoint):
    params = module.params
    if params["requests"] is None:
        return dict(ask(params, endpoint, params["body"], params["timeout"]), changed=False)
    endpoint.connect()
    requests = params["requests"]
    with ThreadPoolExecutor(max_workers=max(1, min(len(requests), 8))) as pool:
        answers = list(pool.map(lambda request: ask_or_report(params, endpoint, request), requests))
    return dict(changed=False, answers=answers)


def main():
    module = AnsibleK8SModule(argument_spec=argument_spec(), supports_check_mode=True, check_pyyaml=False,
                              mutually_exclusive=[("body", "requests")])
    params = module.params
    endpoint = ServiceEndpoint(module, params["namespace"], params["service"], params["port"], params["url"])
    try:
        module.exit_json(**run(module, endpoint))
    except ServiceError as err:
        module.fail_json(msg=str(err), timed_out=err.timed_out)


if __name__ == "__main__":
    main()

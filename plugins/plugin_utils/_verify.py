# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Judging what verify.yml saw on the cluster: pure functions, one row each.

A row is ``{"check", "status", "detail", "fix"}``; status is ``ok``, ``fail``,
``warn`` (reported, not a failure: a cloud key left out on purpose) or
``skip`` (could not be checked now, and why). A failed row becomes one line,
``<check>: <detail>; <fix>``. No row ever holds a key: keys are judged
(missing, placeholder) but never copied."""

from __future__ import annotations

import re

from ansible_collections.homelab.inference.plugins.module_utils import _catalog, _gpu_mode
from ansible_collections.homelab.inference.plugins.plugin_utils import _cuda_driver

OK, FAIL, WARN, SKIP = "ok", "fail", "warn", "skip"
GPU = _gpu_mode.GPU_RESOURCE
# The example values a vault file is copied from (inventories/homelab/.../vault.yml.example)
# and the usual stand-ins people type.
PLACEHOLDER = re.compile(r"change[-_ ]?me|replace[-_ ]?me|placeholder|your[-_ ]?(api[-_ ]?)?key|^<.*>$|^x{4,}$|"
                         r"^\.\.\.$|^todo$", re.IGNORECASE)


def row(check, status, detail, fix=""):
    return {"check": check, "status": status, "detail": detail, "fix": fix}


def one_line(text, limit=200):
    return " ".join(str(text).split())[:limit]


# -- the GPU node ---------------------------------------------------------------------------


def _gpus(node, field="allocatable"):
    try:
        return int(((node.get("status") or {}).get(field) or {}).get(GPU) or 0)
    except (TypeError, ValueError):
        return 0


def _waiting_reason(pod):
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        last = (status.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason") or last:
            reason = waiting.get("reason") or "restarting"
            return "%s (last exit code %s)" % (reason, last["exitCode"]) if last else reason
    return (pod.get("status") or {}).get("phase") or "unknown"


def gpu_node(nodes, plugin_pods, selector):
    """The GPU worker advertises the GPU the device plugin found on it."""
    check = "GPU node"
    if not nodes:
        return row(check, FAIL, "no node is labelled %s" % selector,
                   "label the GPU worker (k3s_agent_node_labels) and re-run site.yml --limit gpu_workers")
    advertising = ["%s (%d allocatable)" % (n["metadata"]["name"], _gpus(n)) for n in nodes if _gpus(n) > 0]
    if advertising:
        return row(check, OK, "%s on %s" % (GPU, ", ".join(advertising)))
    names = ", ".join(n["metadata"]["name"] for n in nodes)
    plugins = ["%s: %s" % (p["metadata"]["name"], _waiting_reason(p)) for p in plugin_pods]
    detail = "%s advertises no %s; device plugin %s" % (
        names, GPU, "; ".join(plugins) if plugins else "not running on it")
    return row(check, FAIL, detail, "read the device plugin's log (kubectl -n kube-system logs ds/nvidia-device-plugin)"
               " and check the driver and container toolkit on the GPU worker (site.yml --limit gpu_workers)")


def gpu_holders(nodes, pods):
    """The pods that hold a GPU on these nodes, and how many GPUs are left."""
    names = {n["metadata"]["name"] for n in nodes}
    claims = _gpu_mode.gpu_claims([p for p in pods if (p.get("spec") or {}).get("nodeName") in names])
    return {"holders": [name for name, dummy in claims],
            "free": sum(_gpus(n) for n in nodes) - sum(count for dummy, count in claims)}


# -- the driver -------------------------------------------------------------------------------


def parse_smi(log):
    """driver version and GPU name from ``nvidia-smi --query-gpu=driver_version,name --format=csv,noheader``."""
    for line in (log or "").splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 2 and re.match(r"^\d+\.\d+(\.\d+)?$", fields[0]):
            return {"driver_version": fields[0], "name": fields[1]}
    return None


def driver(requirement, pod, log):
    """The driver a GPU pod's nvidia-smi reports, against what the vLLM image's CUDA needs.

    ``requirement``: the vllm_cuda_requirement filter's answer for the image in use."""
    check = "GPU driver"
    image = requirement["image"].rsplit("/", 1)[-1]
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    terminated = (statuses[0].get("state") or {}).get("terminated") or {}
    smi = parse_smi(log)
    if smi is None:
        why = terminated.get("message") or one_line(log) or (pod.get("status") or {}).get("phase") or "no answer"
        return row(check, FAIL, "a GPU pod could not run nvidia-smi (%s, exit code %s): %s" % (
            terminated.get("reason", "not finished"), terminated.get("exitCode", "?"), one_line(why)),
            "check the NVIDIA container toolkit and the runtime class 'nvidia' on the GPU worker "
            "(site.yml --limit gpu_workers)")
    found = "%s (%s)" % (smi["driver_version"], smi["name"])
    needs = "CUDA %s of %s needs %s or later" % (requirement["cuda"], image, requirement["min_driver"])
    if not _cuda_driver.driver_satisfies(smi["driver_version"], requirement["min_driver"]):
        return row(check, FAIL, "driver %s is too old: %s" % (found, needs),
                   "set nvidia_driver_branch to %s or later and run site.yml --limit gpu_workers (then reboot the "
                   "worker)" % str(requirement["min_driver"]).split(".", maxsplit=1)[0])
    return row(check, OK, "driver %s; %s" % (found, needs))


def driver_skipped(holders):
    if not holders:
        return row("GPU driver", SKIP, "no GPU is advertised, so no pod can check the driver (see GPU node)")
    return row("GPU driver", SKIP, "the GPU is in use by %s, so no pod can check it now" % ", ".join(holders),
               "run verify.yml in a GPU-free mode to include it (gpu_mode.yml -e mode=gaming)")


# -- the gateway --------------------------------------------------------------------------------


def _error(answer):
    body = answer.get("json")
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error or body.get("detail")
        if message:
            return one_line(message)
    return one_line(answer.get("text") or answer.get("msg") or "no body")


def _proxy_refusal(answer):
    """The API server's own error (a Status: no ready pod behind the Service, ...), not the Service's answer."""
    body = answer.get("json")
    if answer.get("status", 200) != 200 and isinstance(body, dict) and body.get("kind") == "Status":
        return one_line(body.get("message") or body.get("reason") or answer.get("status"))
    return None


def _fix(entry):
    backend = entry["backend"]
    if backend == "vllm":
        return "see why vLLM does not serve it: ansible-playbook gpu_mode.yml -e mode=status"
    if backend == "ollama":
        return "check the Ollama pod and its models (site.yml --tags ollama)"
    return "check the %s key (litellm_provider_keys.%s) and the provider's status" % (backend, backend)


def model_answer(entry, answer, label):
    """One model asked through LiteLLM: it must answer itself (``x-litellm-model-group``), not a fallback."""
    check = "LiteLLM -> %s" % entry["name"]
    if answer.get("failed") or "status" not in answer:
        return row(check, FAIL, "LiteLLM did not answer (%s): %s" % (label, _error(answer)),
                   "check the litellm pod (kubectl -n ml get pods) and re-run site.yml --tags litellm")
    status = answer["status"]
    group = (answer.get("headers") or {}).get("x-litellm-model-group")
    if status == 200 and group == entry["name"]:
        return row(check, OK, "answered by %s (%s) in %.2f s" % (group, label, answer.get("elapsed", 0)))
    if status == 200:
        return row(check, FAIL, "%s did not answer (%s); %s answered in its place" % (entry["name"], label, group),
                   _fix(entry))
    # A provider's refusal comes back as litellm.AuthenticationError; any other 401 is the gateway's own.
    if status == 401 and "authenticationerror" not in _error(answer).lower():
        return row(check, FAIL, "LiteLLM refused the master key (401)",
                   "litellm_master_key differs from the deployed Secret: re-run site.yml --tags litellm")
    if status in (401, 403) or (entry["backend"] not in _catalog.LOCAL_BACKENDS
                                and "api key" in _error(answer).lower()):
        # Providers quote part of a refused key in their message (OpenAI: "Incorrect API key provided:
        # sk-ab****yz"; Gemini answers 400 "API key not valid"): say who refused it, not what it said.
        return row(check, FAIL, "%s (%s) answered %s: the provider refused the key" % (entry["name"], label, status),
                   _fix(entry))
    return row(check, FAIL, "%s (%s) answered %s: %s" % (entry["name"], label, status, _error(answer)), _fix(entry))


def secret_errors(secrets, minimum=None):
    """The preflight's lines for the vault's keys, one per key that cannot be used: empty, an example
    placeholder, or shorter than its ``minimum`` length. Each names the variable, never the value."""
    fix = "put a random key in the vault (openssl rand -hex 24 makes one of 48 characters)"
    errors = []
    for name, value in (secrets or {}).items():
        state, least = key_state(value), (minimum or {}).get(name, 0)
        if state != "set":
            errors.append("%s is %s: %s" % (name, "empty" if state == "missing" else "an example placeholder", fix))
        elif len(str(value).strip()) < least:
            errors.append("%s is shorter than %d characters: %s" % (name, least, fix))
    return errors


def key_state(value):
    """'missing', 'placeholder' or 'set' - never the value."""
    if not value or not str(value).strip():
        return "missing"
    return "placeholder" if PLACEHOLDER.search(str(value)) else "set"


def cloud_key(backend, state, models, answer_row=None, variable=None):
    """A cloud provider's key: reported when missing, failed when a placeholder, proven by an answer when set."""
    check = "%s key" % backend
    variable = variable or "litellm_provider_keys.%s" % backend
    names = ", ".join(models)
    if state == "missing":
        return row(check, WARN, "no key: %s cannot answer" % names,
                   "set %s (in the vault) to use them" % variable)
    if state == "placeholder":
        return row(check, FAIL, "%s is still the example placeholder" % variable,
                   "put the real key in the vault, or leave it empty to go without %s" % backend)
    if answer_row is None:
        return row(check, SKIP, "set; none of %s was asked" % names)
    if answer_row["status"] == SKIP:
        return row(check, SKIP, "set; %s" % answer_row["detail"])
    if answer_row["status"] == OK:
        return row(check, OK, "set; %s" % answer_row["detail"])
    return row(check, FAIL, "set, but %s" % answer_row["detail"], "check the key in the vault (%s)" % variable)


def secret_placeholder(name, value, fix):
    """A secret other than a cloud key (the master key) that still holds the example value."""
    state = key_state(value)
    if state == "set":
        return row(name, OK, "set")
    return row(name, FAIL, "%s is %s" % (name, "empty" if state == "missing" else "still the example placeholder"), fix)


def key_states(keys, models):
    """{backend: 'missing' | 'placeholder' | 'set'} for the cloud backends the catalog uses, in its order."""
    backends = [m["backend"] for m in models if m["backend"] in _catalog.CLOUD_BACKENDS]
    return {backend: key_state((keys or {}).get(backend)) for backend in dict.fromkeys(backends)}


def gateway_plan(models, chain, gpu_model, gpu_mode, states):
    """What verify asks LiteLLM: the GPU mode's model, every chain tier it can ask now, and one model per cloud key
    that is set. Returns ``{"ask": [entries], "rows": [rows for tiers that cannot answer now]}``."""
    by_name = {m["name"]: m for m in models}
    ask, rows = [], []

    def add(entry, label):
        if all(item["name"] != entry["name"] for item in ask):
            timeout = int(entry.get("timeout") or 30)
            # The request for service_request's ``requests``: one token, 10 s beyond the model's own timeout
            # (LiteLLM's answer, a fallback's included, comes back within it).
            request = {"body": {"model": entry["name"], "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]},
                       "timeout": timeout + 10}
            ask.append({"name": entry["name"], "backend": entry["backend"], "label": label, "timeout": timeout,
                        "request": request})

    if gpu_model:
        add(by_name[gpu_model], "mode %s" % gpu_mode)
    for index, name in enumerate(chain, 1):
        entry = by_name[name]
        if entry["backend"] == "vllm" and name != gpu_model:
            detail = "chain tier %d, not served in mode %s (its requests fall back to the next tier)" % (index, gpu_mode)
            rows.append(row("LiteLLM -> %s" % name, SKIP, detail))
        elif entry["backend"] not in states or states[entry["backend"]] == "set":
            add(entry, "chain tier %d" % index)
    for backend, state in states.items():
        candidates = [by_name[n] for n in chain if by_name[n]["backend"] == backend] + [
            m for m in models if m["backend"] == backend]
        if state == "set" and candidates:
            add(candidates[0], "%s key" % backend)
    return {"ask": ask, "rows": rows}


def gateway_rows(models, plan, answers, states):
    """Rows for what LiteLLM answered: one per local model, one per cloud key (proven by one of its models)."""
    rows = list(plan["rows"])
    refusals = [_proxy_refusal(answer) for answer in answers]
    if any(refusals):
        # One line for the gateway being away, not one per model it could not be asked for.
        rows.insert(0, row("LiteLLM", FAIL, "no answer through the API server's service proxy: %s"
                           % next(r for r in refusals if r), "check LiteLLM's pod (kubectl get pods -A -l "
                           "app.kubernetes.io/name=litellm) and re-run site.yml --tags litellm"))
    answered = {}
    for entry, answer, refusal in zip(plan["ask"], answers, refusals):
        if refusal:
            result = row("LiteLLM -> %s" % entry["name"], SKIP, "not asked: LiteLLM did not answer")
        else:
            result = model_answer(entry, answer, entry["label"])
        answered[entry["name"]] = result
        if entry["backend"] not in states:
            rows.append(result)
    for backend, state in states.items():
        names = [m["name"] for m in models if m["backend"] == backend]
        proof = next((answered[n] for n in names if n in answered), None)
        rows.append(cloud_key(backend, state, names, proof))
    return rows


# -- Ollama and Paperless-AI -------------------------------------------------------------------


OLLAMA_LIST_FAILED = "cannot list Ollama's models: "


def ollama_models(wanted, missing, failure=None):
    check = "Ollama models"
    if failure:
        # ollama_model's own failure already starts with this; say it once.
        reason = one_line(failure)
        reason = reason[len(OLLAMA_LIST_FAILED):] if reason.startswith(OLLAMA_LIST_FAILED) else reason
        return row(check, FAIL, OLLAMA_LIST_FAILED + reason,
                   "check the ollama pod (kubectl -n ml get pods) and re-run site.yml --tags ollama")
    if missing:
        return row(check, FAIL, "missing %s of %s" % (", ".join(missing), ", ".join(wanted)),
                   "pull them: ansible-playbook site.yml --tags ollama")
    return row(check, OK, "pulled: %s" % ", ".join(wanted))


def paperless(health, configured, namespace, name, timeout):
    """Paperless-AI answers, and has validated its settings.

    Its /health says only that the process and its database work: in v3.0.9 the router's /health
    (routes/setup.js, mounted before server.js's own) answers 200 configured or not. A route behind its
    API key tells: it answers once the setup check passed, and redirects to /setup (or /settings) when
    the check failed (routes/setup.js, the router's middleware). ``configured`` is that answer, or None
    when no key is known."""
    check = "Paperless-AI"
    look = "read its log (kubectl -n %s logs deploy/%s)" % (namespace, name)
    if health.get("failed") or "status" not in health:
        return row(check, FAIL, "no answer from its /health: %s" % _error(health),
                   "check the %s pod (kubectl -n %s get pods)" % (name, namespace))
    if health["status"] != 200:
        return row(check, FAIL, "/health answered %s: %s" % (health["status"], _error(health)), look)
    if configured is None:
        return row(check, WARN, "/health answered 200, which Paperless-AI v3.0.9 answers configured or not",
                   "set paperless_ai_access_key (its API_KEY) so verify.yml can tell whether its settings work")
    if configured.get("failed") or "status" not in configured:
        if configured.get("timed_out"):
            return row(check, FAIL, "no answer within %s s: it is still checking its settings (it retries them for "
                                    "up to 5 minutes after a start)" % timeout, "run verify.yml again later, or " + look)
        return row(check, FAIL, "no answer: %s" % _error(configured), look)
    location = (configured.get("headers") or {}).get("location", "")
    if configured["status"] == 200:
        return row(check, OK, "configured: its settings validated (Paperless-ngx and the gateway answered)")
    if configured["status"] in (301, 302, 303, 307) and location.rstrip("/").endswith(("/setup", "/settings")):
        return row(check, FAIL, "not configured: its setup check failed, so it scans no document",
                   look + "; its Paperless-ngx URL and token (paperless_ai_paperless_url, paperless_ai_paperless_token) "
                   "and its gateway key must work")
    if configured["status"] in (301, 302, 303, 307) and location.rstrip("/").endswith("/login"):
        return row(check, FAIL, "it refused paperless_ai_access_key (redirect to /login)",
                   "re-run site.yml --tags paperless_ai so its API_KEY is the managed one")
    return row(check, FAIL, "its API answered %s: %s" % (configured["status"], _error(configured)), look)


# -- the summary ----------------------------------------------------------------------------------


def table(rows):
    """The summary as lines of a fixed-width table."""
    width = max([len(r["check"]) for r in rows] + [5])
    lines = ["%-*s  %-4s  %s" % (width, "check", "", "what was seen")]
    for item in rows:
        lines.append("%-*s  %-4s  %s" % (width, item["check"], item["status"].upper(), item["detail"]))
    return lines


def failures(rows):
    """One line per failed row, naming the fix."""
    return ["%s: %s%s" % (r["check"], r["detail"], "; " + r["fix"] if r["fix"] else "") for r in rows
            if r["status"] == FAIL]

# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""LiteLLM proxy hook of homelab.inference, mounted beside config.yaml.

What LiteLLM does not do by itself:

- Free-tier quotas. Per model: requests per minute (a sliding window; over the
  rate a request is held until a slot frees, up to a bound, rather than failed)
  and requests per day (over it: 429 with Retry-After until 00:00 UTC).
  Counters live in Redis when REDIS_HOST is set (shared by every replica,
  surviving restarts), else in this process's memory.
- A clear error for a vLLM model the GPU's current mode does not load: which
  mode serves it, how to switch, what to ask for instead; at once, with 404.
  With on-demand modes on, gpu-mode-switcher is asked first: the request is
  held while its mode loads, or answered 503 with Retry-After, or told why the
  GPU will not switch.
  The model listings leave such a model out, so a client can tell what answers
  now (LiteLLM's async_filter_listed_models).
- Keys without a database (LiteLLM would answer 400 "No connected db"): the
  master key, and each client's keys (INFERENCE_CLIENT_KEYS, their SHA-256
  only) with its models and quotas, which LiteLLM's own checks then enforce;
  401 for any other key.
- Telling a slow model server from a dead one (inference_liveness.py beside
  this file): in-cluster backends are health-probed; a dead one is skipped and
  the requests waiting on it fail over, while a slow answer is never cut.

Settings come from inference_gateway.json beside this file, written by the
homelab.inference.litellm role from the model catalog.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import json
import logging
import math
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

import httpx
from fastapi import HTTPException

# LiteLLM loads this file by its path; its sibling module sits beside it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import inference_liveness  # noqa: E402  pylint: disable=wrong-import-position

try:  # the hook runs inside the LiteLLM proxy; importing it elsewhere needs litellm
    from litellm.integrations.custom_logger import CustomLogger
    from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth
except ImportError:  # pragma: no cover - only for reading the pure parts without litellm
    CustomLogger = object
    LitellmUserRoles = UserAPIKeyAuth = None

LOG = logging.getLogger("inference_gateway")
SETTINGS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inference_gateway.json")

# One atomic step in Redis: refuse when the day is spent; else admit into the
# minute window if a slot is free (and count the day); else say how long until
# the oldest request in the window leaves it. Time is Redis's own clock, so
# every replica agrees.
ADMIT_SCRIPT = """
local day_limit = tonumber(ARGV[1])
local minute_limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
if day_limit > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= day_limit then
  return {-1, '0'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if minute_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= minute_limit then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, tostring(tonumber(oldest[2]) + window - now)}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('EXPIRE', KEYS[1], math.ceil(window) + 1)
end
if day_limit > 0 then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], 172800)
end
return {1, '0'}
"""

SPENT, FULL, ADMITTED = -1, 0, 1


def load_settings(path=SETTINGS_FILE):
    with open(path) as handle:
        return json.load(handle)


def utc_day(now=None):
    return (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%d")


def seconds_to_utc_midnight(now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    tomorrow = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((tomorrow - now).total_seconds()))


class MemoryCounters:
    """Quota counters in this process (one replica; reset by a restart)."""

    def __init__(self):
        self.windows = {}
        self.days = {}
        self.lock = asyncio.Lock()

    async def admit(self, model, day, day_limit, minute_limit, window):
        async with self.lock:
            day_key = (model, day)
            if day_limit and self.days.get(day_key, 0) >= day_limit:
                return SPENT, 0.0
            now = time.monotonic()
            if minute_limit:
                recent = [t for t in self.windows.get(model, []) if t > now - window]
                self.windows[model] = recent
                if len(recent) >= minute_limit:
                    return FULL, recent[0] + window - now
                recent.append(now)
            if day_limit:
                self.days[day_key] = self.days.get(day_key, 0) + 1
            return ADMITTED, 0.0


class RedisCounters:
    """Quota counters in Redis: shared by every replica, kept across restarts."""

    def __init__(self, host, port, password=None, prefix="inference:quota"):
        import redis.asyncio as aioredis  # installed with litellm[proxy]

        self.client = aioredis.Redis(host=host, port=int(port), password=password or None,
                                     socket_connect_timeout=2, socket_timeout=2)
        self.script = self.client.register_script(ADMIT_SCRIPT)
        self.prefix = prefix

    async def admit(self, model, day, day_limit, minute_limit, window):
        keys = ["%s:minute:%s" % (self.prefix, model), "%s:day:%s:%s" % (self.prefix, model, day)]
        verdict, wait = await self.script(keys=keys, args=[day_limit or 0, minute_limit or 0, window,
                                                           uuid.uuid4().hex])
        return int(verdict), float(wait)


# On-demand modes: a held request asks vLLM whether it serves the model this often.
HOLD_POLL_SECONDS = 0.5
HOLD_ASK_SECONDS = 2.0  # and asks gpu-mode-switcher again this often, to learn of a failed switch
REPLY_HEADER = "x-inference-on-demand"  # hold | retry: what a request gets while its mode loads
REPLIES = ("hold", "retry")


class OnDemandAnswer(HTTPException):
    """The gateway's own answer to a request for a model of another GPU mode (kept as it is)."""


def ask_switcher(url, model, timeout=2.0, dry_run=False):
    """gpu-mode-switcher's answer for ``model`` (a dict), or None when it gives none. ``dry_run``: what a
    request would get; nothing is started."""
    body = {"model": model, "dry_run": True} if dry_run else {"model": model}
    request = urllib.request.Request(url.rstrip("/") + "/v1/demand", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as err:
        LOG.warning("gpu-mode-switcher at %s gave no answer for %s (%s): going on without it", url, model, err)
        return None
    return answer if isinstance(answer, dict) else None


def requested_reply(data):
    """The reply a request's client asked for with the X-Inference-On-Demand header, or None."""
    headers = ((data or {}).get("proxy_server_request") or {}).get("headers") or {}
    for name, value in headers.items():
        if name.lower() == REPLY_HEADER and str(value).strip().lower() in REPLIES:
            return str(value).strip().lower()
    return None


def gpu_only(entry):
    """Whether a model entry is a vLLM model outside the chain: it answers only in the GPU modes that load it."""
    return bool(entry) and entry.get("backend") == "vllm" and not entry.get("fallbacks")


class InferenceGateway(CustomLogger):
    def __init__(self, settings=None, counters=None):
        super().__init__()
        self.settings = settings if settings is not None else load_settings()
        self.models = self.settings.get("models", {})
        self.counters = counters or self._counters_from_env()
        liveness = self.settings.get("liveness") or {}
        self.watchdog = inference_liveness.Watchdog.from_settings(liveness)
        self.connect_timeout = float(liveness.get("connect_timeout", 2.0))
        self.clients = {}
        self.client_keys = json.loads(os.environ.get("INFERENCE_CLIENT_KEYS") or "{}")

    @staticmethod
    def _counters_from_env():
        host = os.environ.get("REDIS_HOST")
        if host:
            return RedisCounters(host, os.environ.get("REDIS_PORT", "6379"), os.environ.get("REDIS_PASSWORD"))
        return MemoryCounters()

    # -- slow or dead: the in-cluster model servers ---------------------------

    async def async_filter_deployments(self, model, healthy_deployments, messages, request_kwargs=None,
                                       parent_otel_span=None):
        """Skip a backend declared dead; with none left LiteLLM falls back as for a cooldown."""
        self.watchdog.ensure_started()
        return [deployment for deployment in healthy_deployments
                if not self.watchdog.dead((deployment.get("litellm_params") or {}).get("api_base"))]

    async def async_pre_call_deployment_hook(self, kwargs, call_type):
        """Requests to a watched backend: a short connect timeout, and a client that fails over at its death."""
        backend = self.watchdog.backend_for(kwargs.get("api_base"))
        if backend is None:
            return None
        self.watchdog.ensure_started()
        read = kwargs.get("timeout")
        read = read.read if isinstance(read, httpx.Timeout) else read
        read = float(read) if read else None
        kwargs["timeout"] = httpx.Timeout(read, connect=min(self.connect_timeout, read or self.connect_timeout))
        kwargs["client"] = self.client_for(backend)
        return kwargs

    def client_for(self, backend):
        client = self.clients.get(backend.name)
        if client is None:
            from openai import AsyncOpenAI  # installed with litellm

            transport = inference_liveness.WatchedTransport(backend)
            client = AsyncOpenAI(base_url=backend.api_base, api_key="not-needed", max_retries=0,
                                 http_client=httpx.AsyncClient(transport=transport))
            self.clients[backend.name] = client
        return client

    # -- quotas -------------------------------------------------------------

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        self.watchdog.ensure_started()
        model = data.get("model") if isinstance(data, dict) else None
        quota = self.models.get(model, {}).get("quota") if model else None
        if quota:
            await self.take_quota(model, quota)
        if model:
            await self.on_demand(model, data)
        return data

    async def take_quota(self, model, quota):
        window = float(self.settings.get("quota_window_seconds", 60))
        max_wait = float(self.settings.get("quota_max_wait_seconds", 10))
        per_minute, per_day = quota.get("requests_per_minute"), quota.get("requests_per_day")
        deadline = time.monotonic() + max_wait
        while True:
            try:
                verdict, wait = await self.counters.admit(model, utc_day(), per_day, per_minute, window)
            except Exception as err:  # a quota store outage must not take the gateway down
                LOG.warning("quota store unavailable, admitting %s unmetered: %s", model, err)
                return
            if verdict == ADMITTED:
                return
            if verdict == SPENT:
                retry = seconds_to_utc_midnight()
                raise HTTPException(status_code=429, headers={"Retry-After": str(retry)}, detail=(
                    "%s: the free-tier quota of %d requests per day is spent; it resets at 00:00 UTC (in %dh%02dm). "
                    "Use another model until then." % (model, per_day, retry // 3600, retry % 3600 // 60)))
            # FULL: hold the request until a slot frees, if that is soon enough.
            wait = max(wait, 0.01)
            if time.monotonic() + wait > deadline:
                raise HTTPException(status_code=429, headers={"Retry-After": str(max(1, math.ceil(wait)))}, detail=(
                    "%s: over the free-tier rate of %d requests per %gs; retry in %ds."
                    % (model, per_minute, window, max(1, math.ceil(wait)))))
            await asyncio.sleep(wait)

    # -- on-demand modes: a request for a vLLM model of another mode ----------

    async def on_demand(self, model, data):
        """Ask gpu-mode-switcher what a request for a vLLM model gets, and hold the request while its mode
        loads, or answer 503 with Retry-After at once (the client's X-Inference-On-Demand header, else the
        policy's reply). A chain model is answered by its fallbacks meanwhile, unless its client asks to hold.
        Without the switcher's answer the request goes on as if on-demand switching were off."""
        settings = self.settings.get("on_demand")
        entry = self.models.get(model)
        if not settings or not entry or entry.get("backend") != "vllm":
            return
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(None, ask_switcher, settings["url"], model)
        if answer is None or answer.get("action") == "serve":
            return
        chain = entry.get("fallbacks")
        retry = answer.get("retry_after")
        if answer.get("action") == "refuse":
            if chain:
                return  # its fallbacks answer
            raise self.refusal(model, answer)
        reply = requested_reply(data) or (None if chain else answer.get("reply"))
        if reply is None:
            return
        switch = answer.get("switch") or {}
        progress = "the GPU is switching to mode '%s' for it (%ss of about %ss)" % (
            switch.get("to"), switch.get("elapsed_seconds"), switch.get("expected_seconds"))
        if reply == "retry":
            raise OnDemandAnswer(status_code=503, headers={"Retry-After": str(retry or 1)}, detail=(
                "Model %s is loading: %s; retry in %ds." % (model, progress, retry or 1)))
        began = time.monotonic()
        deadline, asked = began + float(answer.get("hold_seconds") or 0), began
        while True:
            served = await loop.run_in_executor(None, self.served_by_vllm, entry["api_base"])
            if served and model in served and not self.watchdog.dead(entry["api_base"]):
                return
            if time.monotonic() >= deadline:
                break
            if time.monotonic() - asked >= HOLD_ASK_SECONDS:
                # A switch that failed (and rolled back) ends the hold with its reason, not at the deadline.
                asked, again = time.monotonic(), await loop.run_in_executor(None, ask_switcher, settings["url"], model)
                if again and again.get("action") == "refuse":
                    raise self.refusal(model, again)
            await asyncio.sleep(HOLD_POLL_SECONDS)
        raise OnDemandAnswer(status_code=503, headers={"Retry-After": str(retry or 1)}, detail=(
            "Model %s is still loading after %ss: %s; retry later." % (model, answer.get("hold_seconds"), progress)))

    def refusal(self, model, answer):
        """The switcher's refusal as the client's answer: 503 with Retry-After when a later request could
        succeed, else 404 with the command to switch by hand."""
        retry = answer.get("retry_after")
        when = "retry in %ds" % retry if retry else self.where_served(model)
        return OnDemandAnswer(status_code=503 if retry else 404, headers={"Retry-After": str(retry)} if retry else None,
                              detail="Model %s is not loaded: %s; %s." % (model, answer.get("reason"), when))

    # -- a vLLM model the current GPU mode does not load ----------------------

    async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict,
                                           traceback_str=None):
        if isinstance(original_exception, OnDemandAnswer):
            return None  # already the answer
        model = request_data.get("model") if isinstance(request_data, dict) else None
        entry = self.models.get(model) or {}
        if not gpu_only(entry):
            return None
        served = await asyncio.get_running_loop().run_in_executor(None, self.served_by_vllm, entry["api_base"])
        if served is not None and model in served:
            return None  # it is loaded: the failure is something else, keep LiteLLM's error
        return HTTPException(status_code=404, detail=self.not_loaded_message(model, served))

    async def async_filter_listed_models(self, user_api_key_dict, model_names):
        """/v1/models, /v1/models/{id} and /model/info list what answers now: a vLLM model outside the
        chain only while vLLM serves it (else it would get the 404 above), or, with on-demand modes, while
        a request for it would switch the GPU (gpu-mode-switcher asked without starting anything); a chain
        model always, as its fallbacks answer; every other model as it is."""
        direct = {name: self.models[name]["api_base"] for name in model_names if gpu_only(self.models.get(name))}
        if not direct:
            return model_names
        loop = asyncio.get_running_loop()
        served = {}
        for api_base in set(direct.values()):
            served[api_base] = await loop.run_in_executor(None, self.served_by_vllm, api_base) or []
        listed = [name for name in model_names if name not in direct or name in served[direct[name]]]
        settings = self.settings.get("on_demand")
        if settings:
            # On demand, a model a request would switch the GPU to (now, or after the dwell) answers too.
            for name in [n for n in model_names if n not in listed]:
                answer = await loop.run_in_executor(None, ask_switcher, settings["url"], name, 2.0, True)
                if answer and (answer.get("action") != "refuse" or answer.get("retry_after")):
                    listed.append(name)
            listed = [name for name in model_names if name in listed]
        return listed

    @staticmethod
    def served_by_vllm(api_base):
        """Model names vLLM lists, or None when it does not answer (stopped or loading)."""
        try:
            with urllib.request.urlopen(api_base.rstrip("/") + "/models", timeout=1) as response:
                return [m["id"] for m in json.load(response).get("data", [])]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return None

    def not_loaded_message(self, model, served):
        modes = self.settings.get("gpu_modes", {})
        if served:
            current = [mode for mode, vllm_model in modes.items() if vllm_model in served]
            now = "the GPU is in mode '%s' (serving %s)" % (current[0] if current else "?", ", ".join(served))
        else:
            free = [mode for mode, vllm_model in modes.items() if not vllm_model]
            now = "vLLM is not running (the GPU is released%s, or a model is still loading)" % (
                ", mode '%s'" % free[0] if free else "")
        return "Model %s is not loaded: %s; %s." % (model, now, self.where_served(model))

    def where_served(self, model):
        """Which mode serves ``model`` and how to switch to it, and what always answers meanwhile."""
        serving = [mode for mode, vllm_model in self.settings.get("gpu_modes", {}).items() if vllm_model == model]
        where = ("it is served in mode '%s': switch with `%s`" % (
            serving[0], self.settings.get("switch_command", "gpu_mode.yml -e mode={mode}").format(mode=serving[0]))
            if serving else "no GPU mode serves it")
        fallback = self.settings.get("fallback_model")
        return where + (", or ask for model '%s', which always answers" % fallback if fallback else "")

    # -- keys without a database ----------------------------------------------

    async def user_api_key_auth(self, request, api_key):
        path = request.url.path
        if path.startswith("/health/") or path.rstrip("/") == "/metrics":
            return UserAPIKeyAuth(user_role=LitellmUserRoles.INTERNAL_USER_VIEW_ONLY)
        master_key = os.environ.get("LITELLM_MASTER_KEY", "")
        presented = (api_key or "").removeprefix("Bearer ").strip()
        if master_key and presented and hmac.compare_digest(presented.encode(), master_key.encode()):
            return UserAPIKeyAuth(api_key=master_key, user_role=LitellmUserRoles.PROXY_ADMIN)
        client = self.client_of(presented)
        if client is not None:
            # LiteLLM's own checks (custom_auth_run_common_checks) hold it to its models, its quotas and the LLM API
            # routes; the key's hash is its name in LiteLLM's rate limiter and logs.
            digest, entry = client
            return UserAPIKeyAuth(api_key=digest, key_alias=entry["client"], models=list(entry["models"]),
                                  rpm_limit=entry.get("rpm"), tpm_limit=entry.get("tpm"),
                                  allowed_routes=["llm_api_routes"], user_role=LitellmUserRoles.INTERNAL_USER)
        raise HTTPException(status_code=401, detail="Invalid or missing API key: send 'Authorization: Bearer <key>'.")

    def client_of(self, presented):
        """(the key's SHA-256, its client's entry) of a client key (INFERENCE_CLIENT_KEYS, hashes only), or None."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).hexdigest()
        for known, entry in self.client_keys.items():
            if hmac.compare_digest(known, digest):
                return digest, entry
        return None


class SettingsError(RuntimeError):
    """The hook's settings file is missing or unreadable: the proxy must not start without it."""


def load_gateway(path=SETTINGS_FILE):
    """The hook, from its settings file; a clear error naming the file when it is missing or invalid."""
    try:
        settings = load_settings(path)
    except FileNotFoundError:
        raise SettingsError("inference_gateway: settings file %s is missing; the homelab.inference.litellm role "
                            "writes it beside config.yaml (ConfigMap litellm-config)" % path) from None
    except (OSError, ValueError) as err:
        raise SettingsError("inference_gateway: settings file %s is not valid JSON: %s" % (path, err)) from None
    if not isinstance(settings, dict) or not isinstance(settings.get("models"), dict):
        raise SettingsError("inference_gateway: settings file %s is invalid: expected a JSON object with 'models'"
                            % path)
    try:
        return InferenceGateway(settings)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise SettingsError("inference_gateway: settings file %s is invalid: %s: %s"
                            % (path, type(err).__name__, err)) from None


def _log_and_raise(err):
    # LiteLLM may turn an import error into a message of its own: say it in the log first.
    LOG.error("%s", err)
    sys.stderr.write("ERROR: %s\n" % err)
    sys.stderr.flush()
    raise err


# Inside the proxy (LiteLLM imports this file from its config while starting) the hook must
# exist or the start must fail, naming the file: without it there would be no liveness probes,
# quotas or key check. Imported elsewhere (its unit tests), the module only offers its parts.
if "litellm.proxy.proxy_server" in sys.modules:
    try:
        gateway = load_gateway()
    except SettingsError as error:
        _log_and_raise(error)
else:
    gateway = None
user_api_key_auth = gateway.user_api_key_auth if gateway else None

# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Slow or dead? Liveness of the in-cluster model servers (vLLM, Ollama) for the gateway hook.

A request's duration cannot tell them apart: vLLM sends nothing of a
non-streamed answer until it is complete, so a 30 s answer and a hung server
look the same for 30 s. Their health endpoints can: vLLM's ``/health``
(vllm/entrypoints/openai/api_server.py, v0.11.0) and Ollama's
``/api/version`` (server/routes.go, v0.13.5) answer in milliseconds while the
model generates, because they do not wait for the engine.

So each backend is probed every ``interval`` seconds with a ``timeout``;
after ``failures`` failed probes in a row (refused, timed out, or not 200) it
is declared dead, and new requests skip it (the hook drops it from the
router's candidates, and LiteLLM falls back as for a deployment in cooldown).
When a probe got *no answer* (a hung server), the requests already waiting on
it are aborted too, with a timeout error, which LiteLLM answers with the next
tier (``WatchedTransport``). A refused probe or an error status leaves them
alone: a server that has stopped or crashed fails its own connections, and a
vLLM taken out of its Service for a mode switch (``gpu_mode``'s drain) is
finishing them.

A dead backend is probed every half second, and the first good probe
brings it back. Requests themselves get a short connect
timeout and, for reading, only a generous backstop: a slow answer is never
cut while the server is alive.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

LOG = logging.getLogger("inference_gateway.liveness")
NO_ANSWER = "no answer within the probe timeout"


class Backend:
    """One model server: its probe URL, and whether it is alive now."""

    def __init__(self, name, api_base, probe_url):
        self.name = name
        self.api_base = api_base.rstrip("/")
        self.probe_url = probe_url
        self.alive = True  # unknown until probed: assume alive
        self.failed = 0
        self.problem = ""
        self.since = time.monotonic()
        self.death = asyncio.Event()  # set when declared dead; replaced when it comes back

    def serves(self, api_base):
        return bool(api_base) and api_base.rstrip("/") == self.api_base

    def record(self, problem, failures, hung=False):
        """One probe's outcome (``problem`` empty when it answered well; ``hung`` when it got no answer at all);
        True when the state changed. Only a hung server's waiting requests are given up."""
        if not problem:
            self.failed, self.problem = 0, ""
            if self.alive:
                return False
            self.alive, self.since, self.death = True, time.monotonic(), asyncio.Event()
            return True
        self.failed += 1
        self.problem = problem
        if self.failed < failures:
            return False
        if hung and not self.death.is_set():
            self.death.set()
            if not self.alive:
                return True
        if not self.alive:
            return False
        self.alive, self.since = False, time.monotonic()
        return True

    def dead_error(self, request=None):
        return httpx.ReadTimeout("%s at %s stopped answering its health probe (%s); failing over"
                                 % (self.name, self.api_base, self.problem), request=request)


class Watchdog:
    """Probes every backend in the background of the proxy's event loop."""

    def __init__(self, backends, interval=2.0, timeout=2.0, failures=2, retry_interval=0.25, dead_interval=0.5):
        self.backends = list(backends)
        self.interval, self.timeout, self.failures = float(interval), float(timeout), int(failures)
        self.retry_interval, self.dead_interval = float(retry_interval), float(dead_interval)
        self.tasks = []

    @classmethod
    def from_settings(cls, settings):
        backends = [Backend(name, item["api_base"], item["probe"])
                    for name, item in sorted((settings.get("backends") or {}).items())]
        return cls(backends, settings.get("interval", 2.0), settings.get("timeout", 2.0),
                   settings.get("failures", 2))

    def ensure_started(self):
        """Start the probes once, on the running loop (the proxy's)."""
        if self.tasks or not self.backends:
            return
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._watch(backend), name="liveness-" + backend.name)
                      for backend in self.backends]

    def backend_for(self, api_base):
        return next((backend for backend in self.backends if backend.serves(api_base)), None)

    def dead(self, api_base):
        backend = self.backend_for(api_base)
        return backend is not None and not backend.alive

    async def _watch(self, backend):
        # A new connection per probe: a kept-alive one reaches the pod it first reached for as long as it
        # lives (kube-proxy routes connections, not requests), and would keep answering for a pod already
        # out of its Service (gpu_mode's drain).
        async with httpx.AsyncClient(timeout=self.timeout, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while True:
                problem = await self.probe(client, backend)
                if backend.record(problem, self.failures, hung=problem == NO_ANSWER):
                    if backend.alive:
                        LOG.warning("%s at %s answers its health probe again: routing to it", backend.name,
                                    backend.api_base)
                    else:
                        LOG.warning("%s at %s failed %d health probes in a row (%s): skipping it%s", backend.name,
                                    backend.api_base, self.failures, problem,
                                    " and failing over the requests waiting on it" if backend.death.is_set() else "")
                # A failing backend is asked again soon: to confirm a death, or to see it come back (a
                # switch back to ml) within half a second rather than a whole interval.
                await asyncio.sleep(self.retry_interval if problem and backend.alive
                                    else min(self.interval, self.dead_interval) if problem else self.interval)

    @staticmethod
    async def probe(client, backend):
        try:
            response = await client.get(backend.probe_url)
        except httpx.TimeoutException:
            return NO_ANSWER
        except httpx.HTTPError as err:
            return "%s: %s" % (type(err).__name__, err) if str(err) else type(err).__name__
        return "" if response.status_code == 200 else "answered %d" % response.status_code


class WatchedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that gives up on a request the moment its backend is declared dead."""

    def __init__(self, backend, inner=None):
        self.backend = backend
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request):
        backend = self.backend
        if not backend.alive:
            raise backend.dead_error(request)
        response = await race(self.inner.handle_async_request(request), backend.death, backend, request)
        response.stream = WatchedStream(response.stream, backend, request)
        return response

    async def aclose(self):
        await self.inner.aclose()


class WatchedStream(httpx.AsyncByteStream):
    """A response body whose every read gives up when the backend is declared dead."""

    def __init__(self, stream, backend, request):
        self.stream, self.backend, self.request = stream, backend, request

    async def __aiter__(self):
        chunks = self.stream.__aiter__()
        death = self.backend.death
        while True:
            chunk = await race(_next(chunks), death, self.backend, self.request)
            if chunk is _END:
                return
            yield chunk

    async def aclose(self):
        await self.stream.aclose()


_END = object()


async def _next(iterator):
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _END


async def race(awaitable, death, backend, request):
    """``awaitable``'s result, unless ``death`` is set first: then the backend's timeout error."""
    work = asyncio.ensure_future(awaitable)
    if death.is_set():
        work.cancel()
        raise backend.dead_error(request)
    waiter = asyncio.ensure_future(death.wait())
    try:
        await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()
        raise
    finally:
        waiter.cancel()
    if work.done():
        return work.result()
    work.cancel()
    raise backend.dead_error(request)

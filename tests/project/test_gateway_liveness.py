"""The gateway hook's health probes (roles/litellm/files/inference_liveness.py), outside the proxy:
when a backend counts as dead, and what happens to the requests waiting on it.
The proxy tests (test_gateway_timing.py) cover the same in place."""

from __future__ import annotations

import asyncio
import importlib.util
import os

import httpx
import pytest

from helpers import ROOT

FILES = os.path.join(ROOT, "roles", "litellm", "files")
gateway_spec = importlib.util.spec_from_file_location("inference_gateway", os.path.join(FILES, "inference_gateway.py"))
hook = importlib.util.module_from_spec(gateway_spec)
gateway_spec.loader.exec_module(hook)
liveness = hook.inference_liveness  # the module the hook imports beside itself, as in the proxy


class Server:
    """A loopback HTTP server that answers /health, or accepts and never answers (``hang``)."""

    def __init__(self):
        self.hang = False
        self.server = None
        self.health_asked = 0

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]

    async def handle(self, reader, writer):
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            if request.startswith(b"GET /health"):
                self.health_asked += 1
            if self.hang:
                await asyncio.sleep(3600)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def stop(self):
        self.server.close()


def test_a_backend_is_dead_only_after_the_failures_in_a_row_and_back_at_the_first_good_probe():
    backend = liveness.Backend("vllm", "http://v:8000/v1/", "http://v:8000/health")
    assert backend.alive and backend.serves("http://v:8000/v1") and not backend.serves(None)
    assert backend.record("refused", failures=2) is False and backend.alive, "one lost probe is not a death"
    assert backend.record("", failures=2) is False and backend.failed == 0
    backend.record("refused", failures=2)
    first_life = backend.death
    assert backend.record("refused", failures=2) is True and not backend.alive
    assert not first_life.is_set(), "a refused server's requests finish (a drain) or fail on their own"
    assert backend.record(liveness.NO_ANSWER, failures=2, hung=True) is True and first_life.is_set(), \
        "a hung server's waiting requests are given up"
    assert backend.record(liveness.NO_ANSWER, failures=2, hung=True) is False
    assert backend.record("", failures=2) is True and backend.alive
    assert not backend.death.is_set(), "a backend that came back starts a new life"
    error = liveness.Backend("vllm", "http://v:8000/v1", "").dead_error()
    assert isinstance(error, httpx.TimeoutException), "LiteLLM falls back on a timeout"


def test_a_hung_backend_is_declared_dead_and_the_request_waiting_on_it_gives_up():
    async def scenario():
        server = await Server().start()
        backend = liveness.Backend("vllm", server.url + "/v1", server.url + "/health")
        watchdog = liveness.Watchdog([backend], interval=0.05, timeout=0.2, failures=2, retry_interval=0.01)
        watchdog.ensure_started()
        client = httpx.AsyncClient(transport=liveness.WatchedTransport(backend), timeout=30)
        try:
            response = await client.post(server.url + "/v1/chat/completions", json={})
            assert response.status_code == 200 and backend.alive
            server.hang = True
            with pytest.raises(httpx.ReadTimeout, match="vllm at .* stopped answering its health probe"):
                await client.post(server.url + "/v1/chat/completions", json={})
            assert not backend.alive and watchdog.dead(server.url + "/v1")
            assert server.health_asked >= 2
            with pytest.raises(httpx.ReadTimeout):  # no connection is even tried while it is dead
                await client.post(server.url + "/v1/chat/completions", json={})
            server.hang = False
            while not backend.alive:
                await asyncio.sleep(0.02)
            assert (await client.post(server.url + "/v1/chat/completions", json={})).status_code == 200
        finally:
            for task in watchdog.tasks:
                task.cancel()
            await client.aclose()
            server.stop()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_a_refused_backend_is_declared_dead():
    async def scenario():
        server = await Server().start()
        url = server.url
        server.stop()
        await server.server.wait_closed()
        backend = liveness.Backend("ollama", url + "/v1", url + "/api/version")
        watchdog = liveness.Watchdog([backend], interval=0.05, timeout=0.2, failures=2, retry_interval=0.01)
        watchdog.ensure_started()
        try:
            while backend.alive:
                await asyncio.sleep(0.02)
            assert "ConnectError" in backend.problem
        finally:
            for task in watchdog.tasks:
                task.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_each_probe_opens_its_own_connection():
    # Through a Service, a kept-alive connection stays with the pod it reached: it would keep answering
    # for a pod already out of the Service. This server keeps every connection open for more requests.
    seen = {"connections": 0, "probes": 0}

    async def handle(reader, writer):
        seen["connections"] += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                seen["probes"] += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def scenario():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = "http://127.0.0.1:%d" % server.sockets[0].getsockname()[1]
        backend = liveness.Backend("vllm", url + "/v1", url + "/health")
        watchdog = liveness.Watchdog([backend], interval=0.02, timeout=0.5, failures=2)
        watchdog.ensure_started()
        try:
            while seen["probes"] < 4:
                await asyncio.sleep(0.01)
            assert seen["connections"] >= seen["probes"] >= 4, seen
        finally:
            for task in watchdog.tasks:
                task.cancel()
            server.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_a_backend_out_of_its_service_is_skipped_while_its_requests_finish():
    # gpu_mode's drain: the Service no longer selects vLLM's pod, so the probe (through the Service) is
    # refused, while the pod itself still streams the answers it started.
    async def scenario():
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(10):
                writer.write(b"5\r\nchunk\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            writer.close()

        pod = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = "http://127.0.0.1:%d" % pod.sockets[0].getsockname()[1]
        gone = await Server().start()
        service = gone.url
        gone.stop()
        await gone.server.wait_closed()
        backend = liveness.Backend("vllm", url + "/v1", service + "/health")
        watchdog = liveness.Watchdog([backend], interval=0.05, timeout=0.2, failures=2, retry_interval=0.01)
        client = httpx.AsyncClient(transport=liveness.WatchedTransport(backend), timeout=30)
        try:
            async with client.stream("POST", url + "/v1/chat/completions", json={}) as response:
                watchdog.ensure_started()
                body = b"".join([chunk async for chunk in response.aiter_bytes()])
            assert body == b"chunk" * 10, "the stream under way was not cut"
            assert not backend.alive and "ConnectError" in backend.problem
            with pytest.raises(httpx.ReadTimeout):  # a new request skips it
                await client.post(url + "/v1/chat/completions", json={})
        finally:
            for task in watchdog.tasks:
                task.cancel()
            await client.aclose()
            pod.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_a_streamed_body_gives_up_when_its_backend_dies_mid_answer():
    async def scenario():
        async def handle(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await asyncio.sleep(3600)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = "http://127.0.0.1:%d" % server.sockets[0].getsockname()[1]
        backend = liveness.Backend("vllm", url + "/v1", url + "/health")
        client = httpx.AsyncClient(transport=liveness.WatchedTransport(backend), timeout=30)
        chunks = []
        try:
            async with client.stream("POST", url + "/v1/chat/completions", json={}) as response:
                with pytest.raises(httpx.ReadTimeout):
                    async for chunk in response.aiter_bytes():
                        chunks.append(chunk)
                        backend.record(liveness.NO_ANSWER, failures=1, hung=True)
            assert chunks == [b"first"]
        finally:
            await client.aclose()
            server.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


SETTINGS = {"models": {}, "liveness": {
    "backends": {"vllm": {"api_base": "http://127.0.0.1:9/v1", "probe": "http://127.0.0.1:9/health"},
                 "ollama": {"api_base": "http://127.0.0.1:8/v1", "probe": "http://127.0.0.1:8/api/version"}},
    "interval": 2, "timeout": 2, "failures": 2, "connect_timeout": 1.5}}


def deployment(name, api_base):
    return {"model_name": name, "litellm_params": {"model": "openai/" + name, "api_base": api_base},
            "model_info": {"id": name}}


def test_the_hook_skips_dead_backends_only():
    async def scenario():
        gateway = hook.InferenceGateway(settings=SETTINGS, counters=hook.MemoryCounters())
        candidates = [deployment("vllm-qwen", "http://127.0.0.1:9/v1"), deployment("gpt", None)]
        try:
            assert await gateway.async_filter_deployments("vllm-qwen", candidates, None) == candidates
            vllm = gateway.watchdog.backend_for("http://127.0.0.1:9/v1")
            vllm.record("refused", failures=1)
            assert await gateway.async_filter_deployments("vllm-qwen", candidates, None) == candidates[1:]
        finally:
            for task in gateway.watchdog.tasks:
                task.cancel()

    asyncio.run(scenario())


def test_the_hook_gives_watched_requests_a_short_connect_and_only_a_backstop_for_reading():
    async def scenario():
        gateway = hook.InferenceGateway(settings=SETTINGS, counters=hook.MemoryCounters())
        try:
            kwargs = await gateway.async_pre_call_deployment_hook(
                {"api_base": "http://127.0.0.1:9/v1", "timeout": 300, "model": "openai/vllm-qwen"}, None)
            assert kwargs["timeout"] == httpx.Timeout(300.0, connect=1.5)
            transport = kwargs["client"]._client._transport
            assert isinstance(transport, liveness.WatchedTransport) and transport.backend.name == "vllm"
            assert await gateway.async_pre_call_deployment_hook({"api_base": None, "timeout": 30}, None) is None
        finally:
            for task in gateway.watchdog.tasks:
                task.cancel()

    asyncio.run(scenario())

from __future__ import annotations

import socket
import threading

import pytest

from ansible_collections.homelab.inference.plugins.module_utils._service_http import ServiceEndpoint, ServiceError

urllib3 = pytest.importorskip("urllib3")


class SlowProxyApi:
    """The kubernetes client's low-level API when the proxied service answers too late: urllib3's
    ReadTimeoutError from the client's pool, bare or wrapped in MaxRetryError as a pool with retries raises it."""

    def __init__(self, wrapped):
        self.wrapped = wrapped
        self.rest_client = self
        self.pool_manager = self

    def param_serialize(self, method, resource, **kwargs):
        return (method, resource, {}, None)

    def request(self, *args, **kwargs):
        timeout = urllib3.exceptions.ReadTimeoutError(None, "/api/v1/...", "Read timed out. (read timeout=3)")
        if self.wrapped:
            raise urllib3.exceptions.MaxRetryError(None, "/api/v1/namespaces/ml/services/litellm:4000/proxy/",
                                                   reason=timeout)
        raise timeout


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "in-max-retry-error"])
def test_a_read_timeout_through_the_proxy_says_the_service_was_slow_not_unreachable(wrapped):
    endpoint = ServiceEndpoint(None, "ml", "litellm", 4000)
    endpoint._api = SlowProxyApi(wrapped)
    with pytest.raises(ServiceError) as raised:
        endpoint.exchange("POST", "/v1/chat/completions", {"model": "ollama-qwen"}, timeout=3)
    message = str(raised.value)
    assert "did not answer within 3s" in message and "through the Kubernetes API's service proxy" in message
    assert "check kubeconfig" not in message and raised.value.timed_out


def test_a_read_timeout_reached_directly_says_the_service_was_slow():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    thread.start()
    try:
        endpoint = ServiceEndpoint(None, "ml", "litellm", 4000, url="http://127.0.0.1:%d" % listener.getsockname()[1])
        with pytest.raises(ServiceError) as raised:
            endpoint.exchange("GET", "/health", timeout=0.5)
        assert "did not answer within 0.5s" in str(raised.value) and raised.value.timed_out
    finally:
        listener.close()


@pytest.mark.parametrize("follow_redirects", [True, False], ids=["following-redirects", "not-following"])
def test_a_slow_answer_through_the_proxy_is_asked_for_once(follow_redirects):
    # The kubernetes client's pool retries a GET's read timeout 3 times by default (urllib3's Retry(3)),
    # so a 30 s timeout let verify wait 120 s for Paperless-AI. One request, one timeout.
    client = pytest.importorskip("kubernetes.client")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        configuration = client.Configuration(host="http://127.0.0.1:%d" % listener.getsockname()[1])
        endpoint = ServiceEndpoint(None, "docs", "paperless-ai", 3000)
        endpoint._api = client.ApiClient(configuration)
        with pytest.raises(ServiceError) as raised:
            endpoint.exchange("GET", "/api/processing-status", timeout=0.3, follow_redirects=follow_redirects)
        assert "did not answer within 0.3s" in str(raised.value) and raised.value.timed_out
        assert len(accepted) == 1, "the request was sent %d times" % len(accepted)
    finally:
        listener.close()
        for connection in accepted:
            connection.close()

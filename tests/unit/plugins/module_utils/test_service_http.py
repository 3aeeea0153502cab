from __future__ import annotations

import socket
import threading

import pytest

from ansible_collections.homelab.inference.plugins.module_utils._service_http import ServiceEndpoint, ServiceError

urllib3 = pytest.importorskip("urllib3")


class SlowProxyApi:
    """The kubernetes client's low-level API when the proxied service answers too late: urllib3's
    ReadTimeoutError, bare or wrapped in MaxRetryError as the client's pool raises it."""

    def __init__(self, wrapped):
        self.wrapped = wrapped

    def param_serialize(self, method, resource, **kwargs):
        return (method, resource)

    def call_api(self, *args, **kwargs):
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

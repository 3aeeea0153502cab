"""Services outside the collection that the home lab already has.

The collection deploys LiteLLM, vLLM, Ollama and Paperless-AI; the user's lab
also runs things it only talks to (Paperless-ngx, and the cloud providers
beyond the internet). The lab starts a FAKE of each on its own loopback
address in 127.(200+n).0.0/16 (n = the API port modulo 50, like the pod and
Service ranges), under the DNS name the real one has, which the lab's child
processes resolve through the same table as Services (tools/lab/network.py,
tools/lab/hooks/sitecustomize.py).

A kind of outside service is registered with ``@register(name)``: a factory
``factory(lab, host) -> (server, [dns names])`` returning a started
``FakeServer`` bound to ``host``. ``External`` starts every registered one
with the lab, publishes their names, stops them with it, and finds one by
name (``lab.external.server("paperless-ngx")``) for tests and fault knobs.
"""

from __future__ import annotations

import os
import secrets as _secrets

from .fakes.gemini import FakeGemini
from .fakes.openai_compat import FakeChatServer
from .fakes.paperless_ngx import PaperlessNgxServer

REGISTRY = {}


def register(name):
    def decorate(factory):
        REGISTRY[name] = factory
        return factory
    return decorate


def read_secret(state_dir, name):
    """A secret of the lab's state dir as the password lookup wrote it (the value, then maybe `` salt=...``)."""
    try:
        with open(os.path.join(state_dir, "secrets", name)) as handle:
            return handle.read().split(" ", 1)[0].strip() or None
    except OSError:
        return None


def lab_secret(state_dir, name, make):
    """A secret kept in the lab's state dir: the inventory reads the same file
    (ansible.builtin.password lookup), so the fake and the roles agree on it."""
    value = read_secret(state_dir, name)
    if value:
        return value
    path = os.path.join(state_dir, "secrets", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    value = make()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value + "\n")
    return value


# The user's Paperless-ngx: in the reference system a Service in namespace docs.
PAPERLESS_NGX_NAMES = ("paperless.docs.svc.cluster.local", "paperless.docs.svc", "paperless.docs")
PAPERLESS_NGX_PORT = 8000
PAPERLESS_NGX_USER = "paperless-ai"


@register("paperless-ngx")
def paperless_ngx(lab, host):
    state_dir = lab.state_dir
    # DRF tokens are 40 hex characters; made once, kept across `lab down` and `up`.
    lab_secret(state_dir, "paperless_api_token", lambda: _secrets.token_hex(20))

    # Read at each request: `lab up --fresh` or a hand edit takes effect at once.
    server = PaperlessNgxServer((host, PAPERLESS_NGX_PORT), lambda: read_secret(state_dir, "paperless_api_token"),
                                username=PAPERLESS_NGX_USER).start()
    return server, list(PAPERLESS_NGX_NAMES)


# The cloud providers of the catalog, beyond the internet: each under its API's
# host name, on an unprivileged port and over plain HTTP (the lab has no TLS),
# which the lab inventory's litellm_api_bases name. Each accepts exactly the key
# the lab keeps for it in its state dir, as the real APIs accept only their own.
CLOUD_PORT = 8080
CLOUD = {
    "openai": ("api.openai.com", ["gpt-4o-mini"]),
    "groq": ("api.groq.com", ["llama-3.3-70b-versatile", "mixtral-8x7b-32768"]),
    "mistral": ("api.mistral.ai", ["mistral-small-latest"]),
    "gemini": ("generativelanguage.googleapis.com", ["gemini-2.0-flash", "gemini-2.5-flash"]),
}


def _cloud(provider):
    host_name, models = CLOUD[provider]

    def factory(lab, host):
        key = lab_secret(lab.state_dir, "%s_api_key" % provider,
                         lambda: "lab-%s-%s" % (provider, _secrets.token_hex(16)))
        if provider == "gemini":
            server = FakeGemini((host, CLOUD_PORT), models=models, api_key=key)
        else:
            server = FakeChatServer((host, CLOUD_PORT), flavour=provider, models=models, api_key=key)
        return server.start(), [host_name]
    return factory


for _provider in CLOUD:
    register(_provider)(_cloud(_provider))


class External:
    def __init__(self, lab):
        self.lab = lab
        self.net = "127.%d" % (200 + lab.slot)
        self.servers = {}
        self.names = {}

    def start(self):
        for index, (name, factory) in enumerate(sorted(REGISTRY.items()), start=2):
            host = "%s.0.%d" % (self.net, index)
            server, names = factory(self.lab, host)
            self.servers[name] = server
            for dns_name in names:
                self.names[dns_name] = host
        return self

    def server(self, name):
        return self.servers[name]

    def stop(self):
        for server in self.servers.values():
            server.stop()
        self.servers = {}

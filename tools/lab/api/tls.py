"""The API over TLS, where in-cluster clients find it: the same handler as the
plain HTTP port, behind the lab's serving certificate (tools/lab/pki.py).

The handshake runs in the connection's own thread, so a client that stalls in
it holds up no other. The lab's admin endpoint (``/lab/...``) stays on the
plain port: pods have no business with fault knobs."""

from __future__ import annotations

import json
import ssl

from .server import ApiHttpServer


def _no_admin(method, path, body):
    return 404, {"Content-Type": "application/json"}, json.dumps(
        {"error": "the lab's admin endpoint is on the plain HTTP port"}).encode()


class ApiHttpsServer(ApiHttpServer):
    insecure = False  # every request authenticates (authn.py)
    def __init__(self, address, api, cert_file, key_file):
        super().__init__(address, api, _no_admin)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(cert_file, key_file)

    def finish_request(self, request, client_address):
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that does not trust the lab's CA, or hung up: nothing to serve
        try:
            super().finish_request(request, client_address)
        finally:
            request.close()

"""`python -m lab port-forward`: the lab's stand-in for `kubectl port-forward`.

kubectl 1.37 forwards through the API server over SPDY/3.1 streams tunnelled in
WebSocket frames (staging/src/k8s.io/client-go/tools/portforward,
PortForwardWebsockets); the lab's API answers that request with 501. It needs no
tunnel: every pod and Service of the lab listens on a loopback address of this
machine (network.py), so this command relays a local port straight to it, with
kubectl's arguments and first lines of output.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import urllib.error
import urllib.parse
import urllib.request

from .network import relay_bytes

PATHS = {"pod": "/api/v1/namespaces/%s/pods/%s", "pods": "/api/v1/namespaces/%s/pods/%s",
         "svc": "/api/v1/namespaces/%s/services/%s", "service": "/api/v1/namespaces/%s/services/%s",
         "services": "/api/v1/namespaces/%s/services/%s"}


def resolve(api_port, namespace, target):
    """The loopback address behind ``pod/NAME`` (its pod IP) or ``svc/NAME`` (its cluster IP)."""
    kind, _, name = target.rpartition("/")
    kind = kind or "pod"
    if kind not in PATHS or not name:
        raise SystemExit("error: %s: the lab forwards to pod/NAME or svc/NAME" % target)
    url = "http://127.0.0.1:%d%s" % (api_port, PATHS[kind] % (urllib.parse.quote(namespace), urllib.parse.quote(name)))
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            obj = json.load(response)
    except urllib.error.HTTPError as err:
        raise SystemExit('Error from server (NotFound): %s' % json.load(err).get("message", err))
    address = obj["spec"].get("clusterIP") if kind.startswith("s") else (obj.get("status") or {}).get("podIP")
    if not address:
        raise SystemExit("error: %s has no address yet (not scheduled, or not running)" % target)
    return address


class _Relay(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            upstream = socket.create_connection((self.server.remote_host, self.server.remote_port), timeout=10)
        except OSError as err:
            print("E lab port-forward: connecting to %s:%d: %s" % (self.server.remote_host, self.server.remote_port,
                                                                   err), flush=True)
            return
        upstream.settimeout(None)
        for sock in (upstream, self.request):   # small writes leave at once (no Nagle delay), as kube-proxy's
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        print("Handling connection for %d" % self.server.server_address[1], flush=True)
        threading.Thread(target=relay_bytes, args=(upstream, self.request), daemon=True).start()
        relay_bytes(self.request, upstream)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def start(api_port, namespace, target, ports, address="127.0.0.1"):
    """A relay per LOCAL[:REMOTE] of ``ports``, each serving in a thread; stop them with shutdown()."""
    remote_host = resolve(api_port, namespace, target)
    servers = []
    for spec in ports:
        local, _, remote = str(spec).partition(":")
        server = _Server((address, int(local or 0)), _Relay)
        server.remote_host, server.remote_port = remote_host, int(remote or local)
        print("Forwarding from %s:%d -> %d" % (address, server.server_address[1], server.remote_port), flush=True)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return servers


def serve(api_port, namespace, target, ports, address="127.0.0.1"):
    """Forward until interrupted, as kubectl port-forward does."""
    servers = start(api_port, namespace, target, ports, address)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.shutdown()
    return 0

"""The lab's cluster network, all on loopback (127.0.0.0/8 is loopback on Linux).

- Each node has a pod range, 127.(100+n).k.0/24 for the k-th node (k3s gives each
  node a /24 of 10.42.0.0/16), whose first address is the node's own on the pod
  network (flannel.1's on a real node); each pod gets its own address in its
  node's range and its processes bind there on their real container ports, and
  connect from there (lab/sitecustomize); each Service gets a cluster IP in
  127.(150+n).0.0/16 and keeps its real port (n = the lab's address slot,
  tools/lab/address_slot.py, so two labs on one machine never share addresses).
- kube-proxy: a TCP listener per Service port forwards to a ready endpoint; with
  no ready endpoint the listener is closed, so clients get "connection refused",
  as kube-proxy's REJECT rule gives them.
- Cluster DNS: ``<svc>.<ns>.svc.cluster.local`` (and the short forms) resolve
  through a table the lab's child processes read (lab/sitecustomize); the
  manifests are never rewritten.
- The API server's service proxy (``services/NAME:PORT/proxy/...``) forwards
  HTTP to an endpoint and drops ``Authorization``, as the real one does, from
  the server node's pod-network address: what a pod on another node sees of it.
- 127.0.0.1 is the machine the lab runs on: every node's own address at once
  (the kubelet's probes, ``python -m lab port-forward``, the tests).
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import posixpath
import socket
import struct
import threading
import urllib.parse

from .api.errors import ApiError

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length", "authorization", "host"}


def _address(prefix, index):
    return "%s.%d.%d" % (prefix, index // 250, index % 250 + 2)


def pod_ready(pod):
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def selector_matches(selector, labels):
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


def target_port(service_port, pod):
    target = service_port.get("targetPort", service_port["port"])
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return port["containerPort"]
    return None


class Network:
    def __init__(self, store, state_dir, slot=0, nodes=()):
        self.store = store
        self.pod_net = "127.%d" % (100 + slot)
        self.node_index = {name: index for index, name in enumerate(nodes)}
        self.service_net = "127.%d" % (150 + slot)
        self.dns_file = os.path.join(state_dir, "dns.json")
        self.external_names = {}     # outside services' names (tools/lab/external.py), shadowed by a Service
        self.lock = threading.RLock()
        self.listeners = {}          # (ip, port) -> ServiceListener
        self.pod_ips = {}            # pod uid -> ip
        self.next_host = {}          # node index -> the next host number to try in its range
        self.round_robin = itertools.count()
        used = {(s.get("spec") or {}).get("clusterIP") for s in store.list("services")}
        self.service_index = itertools.count(len([u for u in used if u]))

    # -- addresses ------------------------------------------------------------------

    def allocate_ip(self, namespace, name):
        taken = {(s.get("spec") or {}).get("clusterIP") for s in self.store.list("services")}
        while True:
            address = _address(self.service_net, next(self.service_index))
            if address not in taken:
                return address

    def node_address(self, node):
        """A node's own address on the pod network: the first of its range (flannel.1's)."""
        return "%s.%d.0" % (self.pod_net, self.node_index.get(node, 0))

    def node_cidr(self, node):
        return self.node_address(node) + "/24"

    def pod_ip(self, uid, node=None):
        """A free address in ``node``'s range (.2 to .251; .1 is the bridge's on a real node)."""
        index = self.node_index.get(node, 0)
        with self.lock:
            if uid not in self.pod_ips:
                used = set(self.pod_ips.values())
                host = self.next_host.get(index, 0)
                for _ in range(250):
                    address = "%s.%d.%d" % (self.pod_net, index, host % 250 + 2)
                    host += 1
                    if address not in used:
                        break
                else:
                    raise RuntimeError("no free pod address left on node %s" % node)
                self.next_host[index] = host
                self.pod_ips[uid] = address
            return self.pod_ips[uid]

    def release_pod_ip(self, uid):
        with self.lock:
            self.pod_ips.pop(uid, None)

    # -- endpoints --------------------------------------------------------------------

    def endpoints(self, service, port_spec):
        """(ip, port) of the ready pods behind one Service port."""
        namespace = service["metadata"]["namespace"]
        selector = (service.get("spec") or {}).get("selector") or {}
        found = []
        for pod in self.store.list("pods", namespace):
            if pod_ready(pod) and selector_matches(selector, pod["metadata"].get("labels")):
                ip, port = (pod.get("status") or {}).get("podIP"), target_port(port_spec, pod)
                if ip and port:
                    found.append((ip, port))
        return found

    def pick(self, endpoints):
        return endpoints[next(self.round_robin) % len(endpoints)]

    # -- reconciling (called by the controller loop) ----------------------------------

    def reconcile(self):
        table, wanted = dict(self.external_names), {}
        for service in self.store.list("services"):
            spec, metadata = service.get("spec") or {}, service["metadata"]
            ip = spec.get("clusterIP")
            if not ip or metadata.get("deletionTimestamp"):
                continue
            name, namespace = metadata["name"], metadata["namespace"]
            for alias in ("%s.%s.svc.cluster.local" % (name, namespace), "%s.%s.svc" % (name, namespace),
                          "%s.%s" % (name, namespace)):
                table[alias] = ip
            for port_spec in spec.get("ports") or []:
                if self.endpoints(service, port_spec):
                    wanted[(ip, port_spec["port"])] = (namespace, name, port_spec)
        self.write_dns(table)
        with self.lock:
            for key in [k for k in self.listeners if k not in wanted]:
                self.listeners.pop(key).close()
            for key, target in wanted.items():
                if key not in self.listeners:
                    try:
                        self.listeners[key] = ServiceListener(self, key, target).start()
                    except OSError:
                        pass  # the address is still in TIME_WAIT; the next pass retries

    def write_dns(self, table):
        text = json.dumps(table, sort_keys=True)
        try:
            with open(self.dns_file) as handle:
                if handle.read() == text:
                    return
        except OSError:
            pass
        tmp = self.dns_file + ".tmp"
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, self.dns_file)

    def close(self):
        with self.lock:
            for listener in self.listeners.values():
                listener.close()
            self.listeners = {}

    # -- the API server's service proxy -----------------------------------------------

    def proxy(self, method, namespace, name_port, rest, query, headers, body):
        name, _, port = name_port.partition(":")
        if name in ("http", "https") and port:
            name, _, port = port.partition(":")
        service = self.store.get("services", namespace, name)
        if service is None:
            raise ApiError(404, 'services "%s" not found' % name, details={"name": name, "kind": "services"})
        ports = (service.get("spec") or {}).get("ports") or []
        chosen = [p for p in ports if not port or str(p.get("port")) == port or p.get("name") == port]
        if not chosen:
            raise ApiError(503, 'no endpoints available for service "%s"' % name_port)
        endpoints = self.endpoints(service, chosen[0])
        if not endpoints:
            raise ApiError(503, 'no endpoints available for service "%s"' % name, reason="ServiceUnavailable")
        ip, target = self.pick(endpoints)
        return self.forward_http(ip, target, method, rest, query, headers, body,
                                 "/api/v1/namespaces/%s/services/%s/proxy" % (namespace, name_port))

    def pod_proxy(self, method, namespace, name_port, rest, query, headers, body):
        """The API server's pod proxy (``pods/NAME[:PORT]/proxy/...``), as kube-apiserver v1.31 resolves it
        (pkg/registry/core/pod/strategy.go, ResourceLocation): ``name``, ``name:port`` or ``scheme:name:port``;
        without a port the first declared container port; a pod without an IP is 400 "address not allowed"."""
        parts = name_port.split(":")
        if len(parts) == 3:
            parts = parts[1:]
        name, port = parts[0], parts[1] if len(parts) > 1 else ""
        pod = self.store.get("pods", namespace, name)
        if pod is None:
            raise ApiError(404, 'pods "%s" not found' % name, details={"name": name, "kind": "pods"})
        if not port:
            declared = [p["containerPort"] for c in (pod.get("spec") or {}).get("containers") or []
                        for p in c.get("ports") or []]
            port = str(declared[0]) if declared else "80"
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            raise ApiError(400, "address not allowed", reason="BadRequest")
        return self.forward_http(ip, int(port), method, rest, query, headers, body,
                                 "/api/v1/namespaces/%s/pods/%s/proxy" % (namespace, name_port))

    def api_source(self):
        """Where the API server's proxied requests come from: its node's pod-network address (the
        control-plane node is the lab's first), which a pod on that same node counts as local."""
        return self.node_address(next(iter(self.node_index), None))

    def forward_http(self, ip, target, method, rest, query, headers, body, prefix):
        path = "/" + rest
        flat = {k: v[-1] for k, v in query.items()}
        if flat:
            path += "?" + "&".join("%s=%s" % item for item in flat.items())
        forward = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
        connection = http.client.HTTPConnection(ip, target, timeout=600, source_address=(self.api_source(), 0))
        try:
            connection.request(method, path, body=body or None, headers=forward)
            response = connection.getresponse()
            payload = response.read()
        except OSError as err:
            # Go's net.OpError text: "dial tcp 10.42.1.5:8000: connect: connection refused".
            reason = "connect: %s" % err.strerror.lower() if err.strerror else str(err)
            raise ApiError(503, "error trying to reach service: dial tcp %s:%s: %s" % (ip, target, reason))
        finally:
            connection.close()
        out = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
        for key in [k for k in out if k.lower() == "location"]:
            out[key] = proxied_location(out[key], prefix, headers.get("Host") or "", "%s:%s" % (ip, target))
        return response.status, out, payload


def proxied_location(location, prefix, api_host, backend):
    """A redirect of the backend, rewritten to stay in the proxy as kube-apiserver does
    (k8s.io/apimachinery v0.31 pkg/util/proxy/transport.go, rewriteURL): a path on the
    same host gets the proxy's prefix and the API server's address; another host or a
    relative path is left alone."""
    target = urllib.parse.urlsplit(location)
    if (target.netloc and target.netloc not in (backend, api_host)) or not target.path.startswith("/"):
        return location
    if target.path.startswith(prefix):
        path = target.path
    else:
        path = posixpath.join(prefix, target.path.lstrip("/"))
        if target.path.endswith("/") and not path.endswith("/"):
            path += "/"
    return urllib.parse.urlunsplit(("http", api_host, path, target.query, target.fragment))


class ServiceListener:
    """kube-proxy for one Service port: accept, pick a ready endpoint, pipe bytes."""

    def __init__(self, network, key, target):
        self.network, self.key, self.target = network, key, target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(key)
        self.sock.listen(128)
        self.closed = False

    def start(self):
        threading.Thread(target=self.accept_loop, name="svc-%s:%s" % self.key, daemon=True).start()
        return self

    def accept_loop(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.forward, args=(client,), daemon=True).start()

    def forward(self, client):
        namespace, name, port_spec = self.target
        service = self.network.store.get("services", namespace, name)
        endpoints = self.network.endpoints(service, port_spec) if service else []
        if not endpoints:
            client.close()
            return
        try:
            # From the client's own address, as kube-proxy's DNAT keeps it: a NetworkPolicy sees who asks.
            upstream = socket.create_connection(self.network.pick(endpoints), timeout=10,
                                                source_address=(client.getpeername()[0], 0))
        except OSError:
            # Refused (by the endpoint or a policy) after this listener accepted: the client sees a reset.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=relay_bytes, args=(upstream, client), daemon=True).start()
        relay_bytes(client, upstream)

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def relay_bytes(source, target):
    """Copy one direction of a TCP connection until either side ends, then close both."""
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

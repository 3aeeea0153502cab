"""NetworkPolicy on the lab's loopback network, enforced by the kernel's netfilter as k3s enforces it.

k3s runs kube-router's network policy controller (k3s v1.31 pkg/agent/netpol, kube-router v2
pkg/controllers/netpol/pod_fw.go and policy.go). For each pod a policy selects it programs an
iptables chain in the filter table that, in this order:
- accepts the packets of connections already accepted (conntrack RELATED,ESTABLISHED);
- accepts traffic to the pod from an address local to the pod's node ("rule to permit the
  traffic traffic to pods when source is the pod's local node", ``-m addrtype --src-type LOCAL``);
- marks what a policy's ingress (to the pod) or egress (from it) rules allow: peers by pod
  and namespace selectors (the selected pods' current IPs) or ipBlock (with except), ports
  by number, range (endPort) or name (the container port's number);
- REJECTs what is not marked (``-j REJECT``: icmp-port-unreachable, so a connect fails at
  once with "connection refused", not a timeout).
A pod no policy selects for a direction is not isolated in it.

Here the same rules go into chains LABNP<slot>... jumped to from OUTPUT (every lab packet is
local, so OUTPUT sees each one once), keyed on the lab's pod addresses (tools/lab/network.py):
pods connect from their own address (lab/sitecustomize), kube-proxy's stand-in connects to an
endpoint from the client's address, and the API server's proxy from the server node's. Local
to every node is 127.0.0.1, the machine itself (probes, port-forward, tests).

The lab's kube-proxy is a userspace listener, so a Service's address gets the rules of its
endpoints too (when its endpoints all answer alike): a denied client is refused at connect,
as after kube-proxy's DNAT. Otherwise the listener accepts, its own connect is refused, and the
client sees a reset. Cluster DNS is a file here, not traffic: a policy's DNS egress rule is not
exercised. Needs root (CAP_NET_ADMIN) and iptables; without them the lab says once that
policies are not enforced, and ``enforced`` is False.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess

MARK = "0x2000000/0x2000000"   # a bit of the packet mark of its own (kube-router's is 0x10000)
MACHINE = "127.0.0.1"


def label_selects(selector, labels):
    """metav1.LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    labels = labels or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and (key not in labels or labels[key] not in values):
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def policy_types(spec):
    """networking/v1 defaulting: Ingress always, Egress when the policy has egress rules."""
    return spec.get("policyTypes") or ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def named_port(pod, name, protocol):
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name and (port.get("protocol") or "TCP").lower() == protocol:
                return port["containerPort"]
    return None


def port_ranges(ports, pod):
    """A rule's ports as [(protocol, low, high)] on ``pod``, or [None] for every port; a name the
    pod does not declare matches nothing."""
    if not ports:
        return [None]
    found = []
    for item in ports:
        protocol = (item.get("protocol") or "TCP").lower()
        port = item.get("port")
        if port is None:
            found.append((protocol, 1, 65535))
            continue
        if isinstance(port, str) and not port.isdigit():
            port = named_port(pod, port, protocol) if pod else None
            if port is None:
                continue
        found.append((protocol, int(port), int(item.get("endPort") or port)))
    return found


def in_block(ip, block):
    address = ipaddress.ip_address(ip)
    return address in ipaddress.ip_network(block["cidr"], strict=False) and not any(
        address in ipaddress.ip_network(e, strict=False) for e in block.get("except") or [])


def port_covers(port, protocol, number):
    return port is None or (port[0] == protocol and port[1] <= number <= port[2])


def _port_match(port):
    if port is None:
        return ""
    protocol, low, high = port
    if (low, high) == (1, 65535):
        return "-p %s" % protocol
    return "-p %s --dport %s" % (protocol, low if low == high else "%d:%d" % (low, high))


class Cluster:
    """The pods (with their addresses), namespaces and policies of one pass."""

    def __init__(self, store, network):
        self.network = network
        addresses = dict(network.pod_ips)
        self.pods = [p for p in store.list("pods") if p["metadata"]["uid"] in addresses]
        self.ip = {p["metadata"]["uid"]: addresses[p["metadata"]["uid"]] for p in self.pods}
        self.namespace_labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {}
                                 for n in store.list("namespaces")}
        self.policies = store.list("networkpolicies")
        self.services = store.list("services")

    def selected_by(self, pod, direction):
        namespace, labels = pod["metadata"]["namespace"], pod["metadata"].get("labels")
        return [p for p in self.policies if p["metadata"]["namespace"] == namespace
                and direction in policy_types(p.get("spec") or {})
                and label_selects((p.get("spec") or {}).get("podSelector") or {}, labels)]

    def peer_pods(self, peer, namespace):
        """The pods a podSelector/namespaceSelector peer stands for (NetworkPolicyPeer)."""
        pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
        return [p for p in self.pods
                if (label_selects(namespaces, self.namespace_labels.get(p["metadata"]["namespace"]))
                    if namespaces is not None else p["metadata"]["namespace"] == namespace)
                and label_selects(pods or {}, p["metadata"].get("labels"))]

    def node_address(self, pod):
        return self.network.node_address((pod.get("spec") or {}).get("nodeName"))

    # -- what is allowed, as (kind, peer, port): kind "any", "ip" (an address) or "block" --------

    def ingress(self, pod):
        allowed = []
        for policy in self.selected_by(pod, "Ingress"):
            namespace = policy["metadata"]["namespace"]
            for rule in (policy.get("spec") or {}).get("ingress") or []:
                ports = port_ranges(rule.get("ports"), pod)
                for kind, peer in self.peers(rule.get("from"), namespace):
                    allowed += [(kind, peer, port) for port in ports]
        return allowed

    def egress(self, pod):
        allowed = []
        for policy in self.selected_by(pod, "Egress"):
            namespace = policy["metadata"]["namespace"]
            for rule in (policy.get("spec") or {}).get("egress") or []:
                for kind, peer, target in self.peers(rule.get("to"), namespace, with_pods=True):
                    # A named port is the destination pod's; an ipBlock has none to name.
                    allowed += [(kind, peer, port) for port in port_ranges(rule.get("ports"), target)]
        return allowed

    def peers(self, peers, namespace, with_pods=False):
        if not peers:
            return [("any", None, None)] if with_pods else [("any", None)]
        found = []
        for peer in peers:
            if "ipBlock" in peer:
                found.append(("block", peer["ipBlock"], None) if with_pods else ("block", peer["ipBlock"]))
                continue
            for target in self.peer_pods(peer, namespace):
                ip = self.ip[target["metadata"]["uid"]]
                found.append(("ip", ip, target) if with_pods else ("ip", ip))
        return found

    def service_ports(self):
        """(cluster IP, port, protocol, [(endpoint pod, its target port)]) of each Service port."""
        from .network import selector_matches, target_port
        for service in self.services:
            spec = service.get("spec") or {}
            ip, selector = spec.get("clusterIP"), spec.get("selector") or {}
            if not ip or ip == "None":
                continue
            namespace = service["metadata"]["namespace"]
            pods = [p for p in self.pods if p["metadata"]["namespace"] == namespace
                    and selector_matches(selector, p["metadata"].get("labels"))]
            for port in spec.get("ports") or []:
                targets = [(p, target_port(port, p)) for p in pods]
                yield ip, port["port"], (port.get("protocol") or "TCP").lower(), [t for t in targets if t[1]]


class Rules:
    """iptables-restore text for one lab's chains."""

    def __init__(self, slot):
        self.main = "LABNP%d" % slot
        self.chains = [self.main]
        self.lines = ["-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" % self.main]

    def chain(self, kind, key):
        name = "%s-%s-%s" % (self.main, kind, hashlib.sha1(key.encode()).hexdigest()[:10])
        if name not in self.chains:
            self.chains.append(name)
        return name

    def allow(self, chain, kind, peer, port, direction):
        flag = "-s" if direction == "in" else "-d"
        ports = _port_match(port) if port != "matched" else ""
        if kind == "any":
            self.add(chain, ports, "-j MARK --set-xmark %s" % MARK)
        elif kind == "ip":
            self.add(chain, "%s %s/32" % (flag, peer), ports, "-j MARK --set-xmark %s" % MARK)
        elif peer.get("except"):
            block = self.chain("B", repr((direction, sorted(peer.items()))))
            if not any(line.startswith("-A %s " % block) for line in self.lines):
                for item in peer["except"]:
                    self.add(block, "%s %s" % (flag, item), "-j RETURN")
                self.add(block, "-j MARK --set-xmark %s" % MARK)
            self.add(chain, "%s %s" % (flag, peer["cidr"]), ports, "-j %s" % block)
        else:
            self.add(chain, "%s %s" % (flag, peer["cidr"]), ports, "-j MARK --set-xmark %s" % MARK)

    def finish(self, chain, what):
        self.add(chain, "-m mark ! --mark %s -m comment --comment %s -j REJECT" % (MARK, _quote(what)))
        self.add(chain, "-j MARK --set-xmark 0x0/%s" % MARK.split("/")[1])

    def add(self, chain, *parts):
        self.lines.append(" ".join(["-A", chain] + [p for p in parts if p]))

    def text(self):
        declared = [":%s - [0:0]" % name for name in self.chains]
        return "\n".join(["*filter"] + declared + self.lines + ["COMMIT", ""])


def _quote(text):
    return '"%s"' % text.replace('"', "'")


def render(cluster, slot):
    """The rules for ``cluster`` (a Cluster), or None when no policy exists (nothing to install)."""
    if not cluster.policies:
        return None
    rules = Rules(slot)
    isolated_in = {}
    for pod in cluster.pods:
        if not cluster.selected_by(pod, "Ingress"):
            continue
        uid, ip = pod["metadata"]["uid"], cluster.ip[pod["metadata"]["uid"]]
        isolated_in[uid] = cluster.ingress(pod)
        chain = rules.chain("I", uid)
        rules.add(rules.main, "-d %s/32 -j %s" % (ip, chain))
        for local in (ip, MACHINE, cluster.node_address(pod)):   # its own loopback; its node
            rules.allow(chain, "ip", local, None, "in")
        for kind, peer, port in isolated_in[uid]:
            rules.allow(chain, kind, peer, port, "in")
        rules.finish(chain, "rule to REJECT traffic destined for POD name:%s namespace: %s" % (
            pod["metadata"]["name"], pod["metadata"]["namespace"]))
    service_ports = list(cluster.service_ports())   # once per pass, not once per egress-isolated pod
    for ip, port, protocol, targets in service_ports:
        _service_ingress(rules, cluster, isolated_in, ip, port, protocol, targets)
    for pod in cluster.pods:
        if not cluster.selected_by(pod, "Egress"):
            continue
        uid, ip = pod["metadata"]["uid"], cluster.ip[pod["metadata"]["uid"]]
        allowed = cluster.egress(pod)
        chain = rules.chain("E", uid)
        rules.add(rules.main, "-s %s/32 -j %s" % (ip, chain))
        rules.allow(chain, "ip", ip, None, "out")
        for kind, peer, port in allowed:
            rules.allow(chain, kind, peer, port, "out")
        for service_ip, service_port, protocol, targets in service_ports:
            if any(_reaches(entry, cluster.ip[t["metadata"]["uid"]], protocol, number)
                   for entry in allowed for t, number in targets):
                rules.allow(chain, "ip", service_ip, (protocol, service_port, service_port), "out")
        rules.finish(chain, "rule to REJECT traffic from POD name:%s namespace: %s" % (
            pod["metadata"]["name"], pod["metadata"]["namespace"]))
    return rules


def _reaches(entry, ip, protocol, number):
    kind, peer, port = entry
    if not port_covers(port, protocol, number):
        return False
    return kind == "any" or (kind == "ip" and peer == ip) or (kind == "block" and in_block(ip, peer))


def _service_ingress(rules, cluster, isolated_in, ip, port, protocol, targets):
    """A Service port gets its endpoints' ingress rules when every endpoint is isolated and
    allows the same peers on its target port; otherwise the listener's connect decides."""
    if not targets or any(t["metadata"]["uid"] not in isolated_in for t, _ in targets):
        return
    views = {frozenset((kind, repr(peer)) for kind, peer, p in isolated_in[t["metadata"]["uid"]]
                       if port_covers(p, protocol, number)) for t, number in targets}
    if len(views) != 1:
        return
    chain = rules.chain("S", "%s:%s/%s" % (ip, port, protocol))
    rules.add(rules.main, "-d %s/32 -p %s --dport %s -j %s" % (ip, protocol, port, chain))
    for target, number in targets:
        for local in (cluster.ip[target["metadata"]["uid"]], MACHINE, cluster.node_address(target)):
            rules.allow(chain, "ip", local, None, "in")
    first, number = targets[0]
    for kind, peer, p in isolated_in[first["metadata"]["uid"]]:
        if port_covers(p, protocol, number):
            rules.allow(chain, kind, peer, "matched", "in")
    rules.finish(chain, "rule to REJECT traffic destined for Service %s:%s" % (ip, port))


class Enforcer:
    """Keeps one lab's chains equal to its policies (``reconcile``), and removes them (``close``)."""

    def __init__(self, store, network, slot, log=print):
        self.store, self.network, self.slot, self.log = store, network, slot, log
        self.main = "LABNP%d" % slot
        self.applied = None
        self.seen = None             # (changes, pod addresses) at the last pass
        self.changes = 0             # writes and deletes of the kinds the rules are made of
        store.listeners.append(self.changed)
        self.policies = set()        # "namespace/name" of the policies in force
        self.installed = set()
        self.enforced, self.reason = self.check()
        if self.enforced:
            remove_chains(self.main)   # a crashed lab's, on this slot
        else:
            self.log("NetworkPolicies are not enforced: %s" % self.reason)

    def changed(self, plural, event, obj):
        if plural in ("pods", "services", "namespaces", "networkpolicies"):
            self.changes += 1

    @staticmethod
    def check():
        if not shutil.which("iptables-restore"):
            return False, "iptables is not installed"
        if os.geteuid() != 0:
            return False, "iptables needs root (CAP_NET_ADMIN)"
        probe = _iptables("-S", "OUTPUT")
        if probe.returncode:
            return False, "iptables -S OUTPUT failed: %s" % probe.stderr.strip()
        return True, ""

    def reconcile(self):
        if not self.enforced:
            return
        # Rules follow objects and pod addresses only: a pass that saw neither change has nothing to do.
        seen = (self.changes, tuple(sorted(self.network.pod_ips.items())))
        if seen == self.seen:
            return
        self.seen = seen
        if self.applied is None and not self.store.list("networkpolicies"):
            return   # nothing installed and nothing to install: most labs
        cluster = Cluster(self.store, self.network)
        rules = render(cluster, self.slot)
        text = rules.text() if rules else None
        if text == self.applied:
            return
        if text is None:
            remove_chains(self.main)
            self.installed = set()
        else:
            result = subprocess.run(["iptables-restore", "-w", "5", "--noflush"], input=text, text=True,
                                    capture_output=True)
            if result.returncode:
                self.log("iptables-restore failed: %s" % result.stderr.strip())
                self.seen = None   # try again next pass
                return
            if _iptables("-C", "OUTPUT", "-j", self.main).returncode:
                _iptables("-I", "OUTPUT", "-j", self.main)
            stale = self.installed - set(rules.chains)
            for name in stale:
                _iptables("-F", name)
            for name in stale:
                _iptables("-X", name)
            self.installed = set(rules.chains)
        self.applied = text
        self.policies = {"%s/%s" % (p["metadata"]["namespace"], p["metadata"]["name"]) for p in cluster.policies}

    def close(self):
        if self.enforced:
            remove_chains(self.main)
        self.applied, self.installed, self.policies = None, set(), set()


def _iptables(*args):
    return subprocess.run(["iptables", "-w", "5"] + list(args), capture_output=True, text=True)


def remove_chains(main):
    """Take out the jump to ``main`` and every chain of that lab."""
    while not _iptables("-D", "OUTPUT", "-j", main).returncode:
        pass
    listing = _iptables("-S").stdout.splitlines()
    names = [line.split()[1] for line in listing if line.startswith("-N ")
             and (line.split()[1] == main or line.split()[1].startswith(main + "-"))]
    for name in names:
        _iptables("-F", name)
    for name in names:
        _iptables("-X", name)

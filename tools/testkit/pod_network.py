"""Reach a lab address as a pod would: a short Python process with the pod's network identity
(its address as source, cluster DNS), the way the lab starts a container's process
(tools/lab/kubelet.py, tools/lab/hooks/sitecustomize.py). The lab does not serve
``kubectl exec``; this stands in for it in tests of who may reach what."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lab import TOOLS

_PROBE = r"""
import json, socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n")
        first = sock.recv(64)
        outcome = "open" if first else "closed"
except ConnectionRefusedError:
    outcome = "refused"
except ConnectionResetError:
    outcome = "reset"
except socket.timeout:
    outcome = "timeout"
except OSError as err:
    outcome = "error: %s" % err
print(json.dumps(outcome))
"""


def reach(state_dir, source_ip, host, port, timeout=5.0):
    """"open" (it answered), "refused", "reset", "timeout", "closed" or "error: ..." for a TCP
    connection from ``source_ip`` (a pod's address) to ``host``:``port`` with an HTTP request, in
    the lab kept in ``state_dir`` (its cluster DNS)."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.pathsep.join([os.path.join(TOOLS, "lab", "hooks"),
                                                                             TOOLS]),
           "LAB_DNS_FILE": os.path.join(state_dir, "dns.json"), "LAB_POD_IP": source_ip}
    result = subprocess.run([sys.executable, "-c", _PROBE, host, str(port), str(timeout)], env=env,
                            capture_output=True, text=True, timeout=timeout + 30)
    if result.returncode:
        raise RuntimeError("the probe failed: %s" % result.stderr.strip())
    return json.loads(result.stdout)

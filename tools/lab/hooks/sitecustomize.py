"""Cluster DNS and pod-local addresses for the lab's child processes.

Python imports this module at start-up when its directory is on PYTHONPATH
(the lab puts it there for the processes it starts). It wraps
socket.getaddrinfo (and uvloop's, which resolves in C and would not see the
wrap; LiteLLM's proxy runs on uvloop) so that:
- ``<service>.<namespace>.svc.cluster.local`` and its short forms resolve to
  the Service's cluster IP, from the table in $LAB_DNS_FILE (what cluster DNS
  does);
- with $LAB_POD_IP set, ``127.0.0.1`` and ``localhost`` mean the pod's own
  address (what a container's loopback means), for probes run "inside" a pod,
  and the process's IPv4 connections leave from that address (a pod's traffic
  carries its pod IP, which the lab's NetworkPolicies match on);
- with $LAB_MOUNTS set, paths under the container's volume mounts are read
  from the pod's volumes (lab_mounts.py).
"""

import json
import os
import socket

_DNS_FILE = os.environ.get("LAB_DNS_FILE")
_POD_IP = os.environ.get("LAB_POD_IP")
_cache = {"mtime": None, "table": {}}
_original = socket.getaddrinfo


def _table():
    try:
        mtime = os.stat(_DNS_FILE).st_mtime_ns
    except (OSError, TypeError):
        return {}
    if mtime != _cache["mtime"]:
        try:
            with open(_DNS_FILE) as handle:
                _cache["table"] = json.load(handle)
            _cache["mtime"] = mtime
        except (OSError, ValueError):
            pass
    return _cache["table"]


def _lab_getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str):
        if _POD_IP and name in ("127.0.0.1", "localhost"):
            return _original(_POD_IP, *args, **kwargs)
        short = name.rstrip(".")
        address = _table().get(short)
        if address is None and short.endswith(".svc.cluster.local"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (lab DNS: no Service %s)" % short)
        if address:
            return _original(address, *args, **kwargs)
    return _original(host, *args, **kwargs)


def _lab_host(host):
    """The address a lab name stands for, or the name itself."""
    name = host.decode() if isinstance(host, bytes) else host
    if not isinstance(name, str):
        return host
    if _POD_IP and name in ("127.0.0.1", "localhost"):
        return _POD_IP
    return _table().get(name.rstrip("."), host)


def _from_pod(connect):
    """A socket's connect, first bound to the pod's address unless the program bound it itself."""
    def wrapped(sock, address, *args):
        if sock.family == socket.AF_INET:
            try:
                if sock.getsockname() == ("0.0.0.0", 0):
                    sock.bind((_POD_IP, 0))
            except OSError:
                pass
        return connect(sock, address, *args)
    return wrapped


def _patch_uvloop():
    try:
        import uvloop
    except ImportError:
        return

    class LabLoop(uvloop.Loop):
        async def getaddrinfo(self, host, *args, **kwargs):
            return await super().getaddrinfo(_lab_host(host), *args, **kwargs)

        async def create_connection(self, *args, **kwargs):
            # uvloop connects in C (libuv), past the socket methods wrapped below.
            if _POD_IP and kwargs.get("sock") is None and kwargs.get("local_addr") is None \
                    and kwargs.get("family", socket.AF_UNSPEC) in (socket.AF_UNSPEC, socket.AF_INET):
                kwargs["local_addr"] = (_POD_IP, 0)
                kwargs["family"] = socket.AF_INET
            return await super().create_connection(*args, **kwargs)

    uvloop.Loop = LabLoop


if _DNS_FILE or _POD_IP:
    socket.getaddrinfo = _lab_getaddrinfo
    _patch_uvloop()
if _POD_IP:
    socket.socket.connect = _from_pod(socket.socket.connect)
    socket.socket.connect_ex = _from_pod(socket.socket.connect_ex)
if os.environ.get("LAB_MOUNTS"):
    import lab_mounts  # noqa: F401  (the container's paths, for the images whose own programs run here)

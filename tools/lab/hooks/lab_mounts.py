"""A container's filesystem for a program the lab runs as a host process: the
paths it opens under its volume mounts ($LAB_MOUNTS, container path -> host
directory) are read from the pod's volumes, as inside the container.

Imported by sitecustomize for the images whose own programs the lab runs (the
official Python image, the FAKE dcgm-exporter): an in-cluster client there
opens /var/run/secrets/kubernetes.io/serviceaccount/token and hands ca.crt to
ssl, and a launcher puts its ConfigMap's directory on sys.path. Covered: open,
os.open/stat/lstat/access/listdir/scandir (os.path builds on them), ssl's
certificate loading, and imports from mapped sys.path entries. Host paths the
lab hands over (the state directory, its tools, the interpreter's) stay as
they are."""

import builtins
import io
import json
import os
import sys

_MOUNTS = sorted(json.loads(os.environ.get("LAB_MOUNTS") or "{}").items(), key=lambda item: -len(item[0]))
_TOOLS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_HOST = tuple(p for p in (os.environ.get("LAB_STATE_DIR"), _TOOLS, sys.prefix, sys.base_prefix) if p)


def host_path(path):
    """The host path of a container path (str, bytes or path-like); anything else as given."""
    if isinstance(path, int):
        return path
    try:
        text = os.fsdecode(os.fspath(path))
    except TypeError:
        return path
    if not text.startswith("/") or any(text == h or text.startswith(h.rstrip("/") + "/") for h in _HOST):
        return path
    for mount, source in _MOUNTS:
        if text == mount or text.startswith(mount.rstrip("/") + "/"):
            mapped = source + text[len(mount.rstrip("/")):] if mount != "/" else source + text
            return os.fsencode(mapped) if isinstance(path, bytes) else mapped
    return path


def _wrap_first(function):
    def wrapper(*args, **kwargs):
        if args:
            args = (host_path(args[0]),) + args[1:]
        elif "path" in kwargs:
            kwargs["path"] = host_path(kwargs["path"])
        elif "file" in kwargs:
            kwargs["file"] = host_path(kwargs["file"])
        return function(*args, **kwargs)
    wrapper.__wrapped__ = function
    return wrapper


def _install():
    builtins.open = io.open = _wrap_first(builtins.open)
    for name in ("open", "stat", "lstat", "access", "listdir", "scandir"):
        setattr(os, name, _wrap_first(getattr(os, name)))
    import ssl
    load_verify, load_chain = ssl.SSLContext.load_verify_locations, ssl.SSLContext.load_cert_chain

    def load_verify_locations(self, cafile=None, capath=None, cadata=None):
        return load_verify(self, host_path(cafile) if cafile else cafile, host_path(capath) if capath else capath,
                           cadata)

    def load_cert_chain(self, certfile, keyfile=None, password=None):
        return load_chain(self, host_path(certfile), host_path(keyfile) if keyfile else keyfile, password)

    ssl.SSLContext.load_verify_locations = load_verify_locations
    ssl.SSLContext.load_cert_chain = load_cert_chain
    sys.path_hooks.insert(0, _mapped_finder)
    sys.path_importer_cache.clear()


def _mapped_finder(entry):
    """A sys.path entry under a mount imports from the volume (FileFinder on the host directory)."""
    mapped = host_path(entry)
    if mapped == entry:
        raise ImportError("not under a mount")
    from importlib import machinery
    loaders = [(machinery.ExtensionFileLoader, machinery.EXTENSION_SUFFIXES),
               (machinery.SourceFileLoader, machinery.SOURCE_SUFFIXES),
               (machinery.SourcelessFileLoader, machinery.BYTECODE_SUFFIXES)]
    return machinery.FileFinder(mapped, *loaders)


if _MOUNTS:
    _install()

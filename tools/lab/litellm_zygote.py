"""REAL LiteLLM proxies started by fork from an interpreter that has imported LiteLLM already.

Importing ``litellm.proxy.proxy_server`` costs about 7 CPU seconds; the gateway
tests start a fresh proxy per test (no cooldown or counter leaks from one test
to the next), so most of their time went into that import. The zygote imports
it once, then forks one child per proxy, and the child runs LiteLLM's own
command line (``litellm.proxy.proxy_cli.run_server``, what the ``litellm``
script calls) with its own environment, working directory and log: the same
code, config parsing and startup as ``litellm --config ...``.

Fork-safety: the zygote has a single thread when it forks (LiteLLM starts no
thread at import), and whatever LiteLLM reads from the environment at import
time is the zygote's environment: a zygote serves only proxies whose
environment matches it apart from ``RUNTIME_ONLY`` names, which LiteLLM reads
at startup or per request (master key, provider keys, Redis address).

Used by tools/lab/litellm_proxy.py when ``LAB_LITELLM_FORK=1`` (the project tests set
it); the lab's LiteLLM pods and the benchmarks start LiteLLM the plain way, so
their start-up time is the real one.

Protocol, one request per connection on a unix socket: the client sends one
JSON line ``{"argv", "env", "cwd", "log"}``, the zygote answers ``{"pid"}`` and
later ``{"exit": code}`` when that child ends (or the connection closes).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile

RUNTIME_ONLY = {"LITELLM_MASTER_KEY", "OPENAI_API_KEY", "GROQ_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY",
                "REDIS_HOST", "REDIS_PORT"}
# pytest sets this to the test and phase under way, so it differs for every test: kept in the
# import environment, it gave each gateway test a zygote of its own (~15 CPU s to start, ~320 MB
# left running). LiteLLM never reads it (no use in litellm 1.108.7's package).
NEVER_READ = {"PYTEST_CURRENT_TEST"}


def import_env(env):
    """The part of an environment LiteLLM may read at import time: what a zygote must share."""
    return {k: v for k, v in env.items() if k not in RUNTIME_ONLY and k not in NEVER_READ}


def _child(request, listener, clients, wakeup):
    """In the forked child: become the proxy described by ``request``; never returns."""
    code = 1
    try:
        listener.close()
        for connection in clients:
            connection.close()
        os.close(wakeup[0])
        os.close(wakeup[1])
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["litellm"] + request["argv"]
        from litellm.proxy.proxy_cli import run_server
        run_server.main(args=request["argv"], prog_name="litellm")
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child reports every failure in its log and exit code
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(path):
    import litellm.proxy.proxy_server  # noqa: F401 - the import every child shares
    from litellm.proxy.proxy_cli import run_server  # noqa: F401

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wakeup = os.pipe()
    os.set_blocking(wakeup[0], False)
    os.set_blocking(wakeup[1], False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wakeup[0], selectors.EVENT_READ, "child")
    selector.register(sys.stdin, selectors.EVENT_READ, "parent")
    children = {}  # pid -> client connection
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "parent":  # the process that started the zygote is gone (stdin at EOF)
                if not sys.stdin.readline():
                    for pid in children:
                        try:
                            os.killpg(pid, signal.SIGKILL)
                        except OSError:
                            pass
                    # Not a normal exit: threads LiteLLM starts at import (some versions do) would
                    # keep the interpreter alive after its parent is gone.
                    os._exit(0)
            elif key.data == "accept":
                connection, _ = listener.accept()
                with connection.makefile("r") as reader:
                    request = json.loads(reader.readline())
                pid = os.fork()
                if pid == 0:
                    _child(request, listener, list(children.values()) + [connection], wakeup)
                connection.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                children[pid] = connection
            else:
                try:
                    os.read(wakeup[0], 512)
                except BlockingIOError:
                    pass
                while children:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                    if pid == 0:
                        break
                    connection = children.pop(pid, None)
                    if connection:
                        try:
                            connection.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode()
                                               + b"\n")
                        except OSError:
                            pass
                        connection.close()


class Forked:
    """A forked proxy, as much of ``subprocess.Popen`` as LiteLLMProxy uses."""

    def __init__(self, connection, pid):
        self.connection, self.pid, self.returncode = connection, pid, None

    def poll(self):
        if self.returncode is None:
            self.connection.setblocking(False)
            try:
                line = self.connection.recv(4096)
            except BlockingIOError:
                return None
            self.returncode = json.loads(line).get("exit", -1) if line else -1
        return self.returncode

    def wait(self, timeout=None):
        self.connection.setblocking(True)
        self.connection.settimeout(timeout)
        try:
            line = self.connection.recv(4096)
        except socket.timeout:
            raise subprocess.TimeoutExpired("litellm (forked)", timeout) from None
        self.returncode = json.loads(line).get("exit", -1) if line else -1
        return self.returncode


_ZYGOTES = {}  # the import environment, as JSON -> (process, socket path)


def spawn(argv, env, cwd, log):
    """Start ``litellm ARGV`` by fork from a zygote with this import environment (started on first use)."""
    key = json.dumps(import_env(env), sort_keys=True)
    if key not in _ZYGOTES or _ZYGOTES[key][0].poll() is not None:
        directory = tempfile.mkdtemp(prefix="litellm-zygote-")
        path = os.path.join(directory, "socket")
        process = subprocess.Popen([sys.executable, "-m", "lab.litellm_zygote", path], env=import_env(env),
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the LiteLLM zygote did not start (exit %s)" % process.wait())
        _ZYGOTES[key] = (process, path)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(_ZYGOTES[key][1])
    connection.sendall(json.dumps({"argv": argv, "env": env, "cwd": cwd, "log": log}).encode() + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = connection.recv(4096)
        if not chunk:
            raise RuntimeError("the LiteLLM zygote closed the connection")
        reply += chunk
    return Forked(connection, json.loads(reply)["pid"])


if __name__ == "__main__":
    serve(sys.argv[1])

"""A threaded HTTP server base for the fakes.

Two traps of Python's http.server are avoided here: headers and body go out
in ONE write, and TCP_NODELAY is set, so a keep-alive client (LiteLLM's
proxy, the kubernetes client) does not stall ~40 ms per request on Nagle and
delayed ACKs, which would falsify every latency measured through a fake.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.lock:
                self.server.connections.discard(self.connection)

    def log_message(self, *args):  # keep test output clean
        pass

    def read_raw(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def read_json(self):
        raw = self.read_raw()
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return None

    def send_body(self, status, body, content_type="application/json", headers=None):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        lines = ["HTTP/1.1 %d %s" % (status, self.responses.get(status, ("",))[0])]
        lines += ["Content-Type: %s" % content_type] if content_type else []  # None: no Content-Type
        lines += ["Content-Length: %d" % len(body)]
        lines += ["%s: %s" % item for item in (headers or {}).items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self.wfile.flush()

    def send_stream(self, chunks, content_type="application/x-ndjson"):
        """Chunked transfer encoding, one write per chunk (how Ollama streams)."""
        self.start_chunks(content_type)
        for chunk in chunks:
            self.send_chunk(chunk)
        self.end_chunks()

    def start_chunks(self, content_type="application/x-ndjson"):
        """The status line and headers of a chunked answer, sent now; the chunks follow as they come."""
        self.wfile.write(("HTTP/1.1 200 OK\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                          % content_type).encode("latin-1"))
        self.wfile.flush()

    def send_chunk(self, chunk):
        data = chunk.encode("utf-8") if isinstance(chunk, str) else chunk
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunks(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def client_gone(self):
        """True once the client has closed its end (a pipelined next request is not a hang-up)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def hang(self):
        """A process that accepts connections and never answers: wait until released, then drop."""
        self.server.release.wait()
        self.close_connection_now()

    def close_connection_now(self):
        """Drop the connection without an answer (or mid-answer)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class ClientGone(ConnectionAbortedError):
    """The client hung up while its answer was generated: the generation stops.

    Real servers abort the request: vLLM v0.11.0 cancels the handler when the client
    disconnects (vllm/entrypoints/utils.py, ``with_cancellation``); Ollama v0.13.5 ends
    the completion when the request's context is done (server/routes.go passes
    ``c.Request.Context()`` to the runner). A timed-out gateway request therefore frees
    the server instead of queueing the next one behind an answer nobody reads."""


def sleep_until(deadline, gone=None):
    """Sleep to a time.monotonic() deadline (no drift when called once per token); with ``gone``
    (a callable), raise ClientGone as soon as it says the client has hung up."""
    while True:
        remaining = deadline - time.monotonic()
        if gone is not None and gone():
            raise ClientGone("the client hung up")
        if remaining <= 0:
            return
        time.sleep(min(remaining, 0.1) if gone is not None else remaining)


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.hits = {}
        self.lock = threading.Lock()
        self.connections = set()
        self.stopped = False
        # Set to let the handlers of a "hang" fault go (they then drop their connections).
        self.release = threading.Event()

    def handle_error(self, request, client_address):
        """A client that went away mid-answer (a timeout, a fallback) is no error of the server's."""
        if isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            return
        super().handle_error(request, client_address)

    def reset_counters(self):
        """Forget what was asked so far (between test cases)."""
        with self.lock:
            self.hits = {}

    def count(self, key):
        with self.lock:
            self.hits[key] = self.hits.get(key, 0) + 1

    @property
    def url(self):
        host, port = self.server_address[:2]
        return "http://%s:%d" % (host, port)

    def start(self):
        thread = threading.Thread(target=self.serve_forever, name=type(self).__name__, daemon=True)
        thread.start()
        return self

    def stop(self):
        """Stop like a killed process: refuse new connections, cut open ones."""
        if self.stopped:
            return
        self.stopped = True
        self.release.set()
        self.shutdown()
        self.server_close()
        with self.lock:
            open_connections = list(self.connections)
        for connection in open_connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

"""FAKE Paperless-AI client (image clusterzx/paperless-ai v3).

It reads its settings as v3 does: the container environment, then
``/app/data/.env``, whose values win (the setup check reads that file). It
sends one classification request to ``CUSTOM_BASE_URL`` with ``CUSTOM_MODEL``
and ``CUSTOM_API_KEY``, retrying until the gateway answers, and records what it
used in ``/app/data/lab-client-report.json`` (a hash of the key, never the key).
It listens on port 3000 like the web UI."""

import hashlib
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request


def read_env_file(path):
    values = {}
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return values
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.replace("export ", "").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def settings(data_dir):
    merged = dict(os.environ)
    merged.update(read_env_file(os.path.join(data_dir, ".env")))
    return merged


def classify(config, report_path):
    body = json.dumps({"model": config.get("CUSTOM_MODEL", ""), "max_tokens": 64, "messages": [
        {"role": "user", "content": "Classify this document: Invoice 2026-11 from ACME GmbH, total 12.50 EUR."}]})
    url = config.get("CUSTOM_BASE_URL", "").rstrip("/") + "/chat/completions"
    report = {"provider": config.get("AI_PROVIDER"), "base_url": config.get("CUSTOM_BASE_URL"),
              "model": config.get("CUSTOM_MODEL"),
              "api_key_sha256": hashlib.sha256(config.get("CUSTOM_API_KEY", "").encode()).hexdigest()}
    for attempt in range(1, 121):
        request = urllib.request.Request(url, data=body.encode(), method="POST", headers={
            "Content-Type": "application/json", "Authorization": "Bearer " + config.get("CUSTOM_API_KEY", "")})
        try:
            with urllib.request.urlopen(request, timeout=150) as response:
                report.update(status=response.status, attempts=attempt,
                              answered_by=response.headers.get("x-litellm-model-group"))
                break
        except urllib.error.HTTPError as err:
            report.update(status=err.code, attempts=attempt, error=err.read().decode()[:300])
            if err.code in (401, 403, 404):
                break
        except OSError as err:
            report.update(status=None, attempts=attempt, error=str(err))
        time.sleep(2)
    with open(report_path, "w") as handle:
        json.dump(report, handle, indent=2)
    print("INFO lab fake Paperless-AI: classification request -> %s" % report.get("status"), flush=True)


def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else "/app/data"
    config = settings(data_dir)
    print("INFO lab fake Paperless-AI: provider=%s base_url=%s model=%s" % (
        config.get("AI_PROVIDER"), config.get("CUSTOM_BASE_URL"), config.get("CUSTOM_MODEL")), flush=True)
    threading.Thread(target=classify, args=(config, os.path.join(data_dir, "lab-client-report.json")),
                     daemon=True).start()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((os.environ.get("LAB_POD_IP", "127.0.0.1"), 3000))
    listener.listen(16)
    while True:
        connection, _ = listener.accept()
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        connection.close()


if __name__ == "__main__":
    main()

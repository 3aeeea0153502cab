"""A raw request to the lab's API, for tests and benchmarks that look under the Kubernetes client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def api_request(port, method, path, body=None, content_type="application/json"):
    """(status, parsed body) of one request to the API on 127.0.0.1:port; HTTP errors are returned, not raised."""
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")

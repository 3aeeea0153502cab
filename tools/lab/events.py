"""Events the lab's own components record (the kubelet's FailedMount, the
ReplicaSet controller's FailedCreate), shaped as client-go's event recorder
writes them (k8s.io/client-go v0.31 tools/record/event.go): named
``<object>.<hex nanoseconds>``, with the involved object, the source component,
first and last timestamps and a count.

The same event again (same object, reason, message and source) is counted on
the existing one, as the recorder's correlator aggregates repeats; the count is
written at most every REPEAT_SECONDS, so a condition that persists does not
make a write on every pass of the lab's loop."""

from __future__ import annotations

import datetime
import time

from .api.store import now_rfc3339

REPEAT_SECONDS = 10.0


def record(store, involved, reason, message, component, host=None, warning=True):
    """Record an event about ``involved`` (an object as stored) from ``component``."""
    metadata = involved["metadata"]
    namespace = metadata.get("namespace") or "default"
    for event in store.list("events", namespace, field_selector="involvedObject.uid=%s,reason=%s,source=%s"
                            % (metadata["uid"], reason, component)):
        if event.get("message") != message:
            continue
        if time.time() - _seconds(event.get("lastTimestamp")) >= REPEAT_SECONDS:
            event.update(count=event.get("count", 1) + 1, lastTimestamp=now_rfc3339())
            store.put("events", event)
        return
    stamp = now_rfc3339()
    source = {"component": component}
    if host:
        source["host"] = host
    store.create("events", {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "%s.%x" % (metadata["name"], time.time_ns()), "namespace": namespace},
        "involvedObject": {"apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
                           "name": metadata["name"], "namespace": namespace, "uid": metadata["uid"],
                           "resourceVersion": metadata.get("resourceVersion")},
        "reason": reason, "message": message, "type": "Warning" if warning else "Normal", "source": source,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1, "reportingComponent": component,
        "reportingInstance": host or ""})


def _seconds(stamp):
    try:
        return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return 0.0

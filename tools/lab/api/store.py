"""The lab API's object store: resourceVersions, generations, selectors,
optional persistence to a data directory, and change notifications for the
controllers."""

from __future__ import annotations

import datetime
import json
import os
import re
import threading
import uuid


def json_copy(value):
    """A deep copy of JSON-shaped data (dicts, lists, scalars): about twice as fast as copy.deepcopy
    on the lab's objects, and the controller loop lists the store five times a second."""
    if isinstance(value, dict):
        return {key: json_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_copy(item) for item in value]
    return value


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- selectors ---------------------------------------------------------------------

_SET = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_selector(text):
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def parse_label_selector(text):
    """Requirements of a label selector (equality and set-based), as (key, op, values)."""
    requirements = []
    for part in _split_selector(text or ""):
        part = part.strip()
        for op in ("!=", "==", "="):
            if op in part and "(" not in part:
                key, value = part.split(op, 1)
                requirements.append((key.strip(), "!=" if op == "!=" else "=", [value.strip()]))
                break
        else:
            match = _SET.match(part)
            if not match:
                raise ValueError("unable to parse requirement: %r" % part)
            negate, key, op, values = match.groups()
            if op:
                requirements.append((key, op, [v.strip() for v in values.split(",") if v.strip()]))
            else:
                requirements.append((key, "!exists" if negate else "exists", []))
    return requirements


def labels_match(labels, requirements):
    labels = labels or {}
    for key, op, values in requirements:
        present = key in labels
        if op == "=" and labels.get(key) != values[0]:
            return False
        if op == "!=" and present and labels[key] == values[0]:
            return False
        if op == "in" and (not present or labels[key] not in values):
            return False
        if op == "notin" and present and labels[key] in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
    return True


FIELDS = {
    "metadata.name": lambda o: o["metadata"].get("name"),
    "metadata.namespace": lambda o: o["metadata"].get("namespace"),
    "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName", ""),
    "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
    # Events' own (kubernetes v1.31 pkg/registry/core/event/strategy.go, ToSelectableFields): kubectl describe
    # finds an object's events by them.
    "reason": lambda o: o.get("reason", ""),
    "type": lambda o: o.get("type", ""),
    "source": lambda o: (o.get("source") or {}).get("component", ""),
    "reportingComponent": lambda o: o.get("reportingComponent", ""),
}
for _field in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"):
    FIELDS["involvedObject." + _field] = lambda o, field=_field: str((o.get("involvedObject") or {}).get(field, ""))


def parse_field_selector(text):
    requirements = []
    for part in _split_selector(text or ""):
        negate = "!=" in part
        key, value = part.split("!=" if negate else ("==" if "==" in part else "="), 1)
        key = key.strip()
        if key not in FIELDS:
            raise ValueError('field label not supported: %s' % key)
        requirements.append((key, negate, value.strip()))
    return requirements


def fields_match(obj, requirements):
    return all((FIELDS[key](obj) == value) != negate for key, negate, value in requirements)


# -- the store -----------------------------------------------------------------------

class Store:
    """Objects by (plural, namespace, name); thread-safe; optional JSON persistence."""

    def __init__(self, data_dir=None):
        self.lock = threading.RLock()
        self.objects = {}
        self.version = 0
        self.listeners = []
        self.changes, self.saved_at = 0, None   # writes and deletes, and their count at the last save
        self.data_dir = data_dir
        if data_dir and os.path.exists(self._file):
            with open(self._file) as handle:
                saved = json.load(handle)
            self.version = saved["version"]
            self.objects = {tuple(json.loads(k)): v for k, v in saved["objects"].items()}

    @property
    def _file(self):
        return os.path.join(self.data_dir, "objects.json")

    def save(self):
        if not self.data_dir or self.saved_at == self.changes:
            return
        with self.lock:
            self.saved_at = self.changes
            data = {"version": self.version, "objects": {json.dumps(list(k)): v for k, v in self.objects.items()}}
        os.makedirs(self.data_dir, exist_ok=True)
        tmp = self._file + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, self._file)

    def next_version(self):
        self.version += 1
        return str(self.version)

    def get(self, plural, namespace, name):
        with self.lock:
            obj = self.objects.get((plural, namespace or "", name))
            return json_copy(obj) if obj else None

    def list(self, plural, namespace=None, label_selector=None, field_selector=None, where=None):
        """Copies of the matching objects; ``where(obj)`` filters further before anything is copied."""
        labels = parse_label_selector(label_selector) if label_selector else []
        fields = parse_field_selector(field_selector) if field_selector else []
        with self.lock:
            found = [(key, o) for key, o in self.objects.items()
                     if key[0] == plural and (namespace is None or key[1] == namespace)
                     and labels_match(o["metadata"].get("labels"), labels) and fields_match(o, fields)
                     and (where is None or where(o))]
            found.sort(key=lambda item: item[0])
            return [json_copy(o) for _, o in found]

    def put(self, plural, obj, dry_run=False, event="MODIFIED"):
        """Store ``obj`` with a new resourceVersion; return the stored copy."""
        with self.lock:
            obj = json_copy(obj)
            metadata = obj["metadata"]
            key = (plural, metadata.get("namespace") or "", metadata["name"])
            if not dry_run:
                metadata["resourceVersion"] = self.next_version()
                self.objects[key] = obj
                self._notify(plural, event, obj)
            return json_copy(obj)

    def create(self, plural, obj, dry_run=False, generation=False):
        """``generation``: the kind tracks spec changes in metadata.generation (workloads, custom resources)."""
        metadata = obj["metadata"]
        metadata.setdefault("uid", str(uuid.uuid4()))
        metadata.setdefault("creationTimestamp", now_rfc3339())
        if generation:
            metadata["generation"] = 1
        return self.put(plural, obj, dry_run=dry_run, event="ADDED")

    def delete(self, plural, namespace, name):
        with self.lock:
            obj = self.objects.pop((plural, namespace or "", name), None)
            if obj:
                obj = json_copy(obj)
                self._notify(plural, "DELETED", obj)
            return obj

    def _notify(self, plural, event, obj):
        self.changes += 1
        for listener in list(self.listeners):
            listener(plural, event, obj)

# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes objects as the roles build them: checksums, redaction, YAML."""

from __future__ import annotations

import hashlib
import json

REDACTED = "<redacted>"


def checksum(*payloads):
    """A stable sha256 over any JSON-able values (dict key order ignored)."""
    digest = hashlib.sha256()
    for payload in payloads:
        digest.update(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return digest.hexdigest()


def redact_secrets(objects):
    """Copies of ``objects`` in which every Secret value is replaced by a marker."""
    redacted = []
    for obj in objects:
        if obj.get("kind") == "Secret":
            obj = dict(obj)
            for field in ("data", "stringData"):
                if obj.get(field):
                    obj[field] = {key: REDACTED for key in obj[field]}
        redacted.append(obj)
    return redacted


def split_secrets(objects):
    """(non-secret objects, Secret objects): Secrets are applied with no_log."""
    return ([o for o in objects if o.get("kind") != "Secret"],
            [o for o in objects if o.get("kind") == "Secret"])


def by_namespace_presence(objects, existing):
    """(objects a dry run can check, objects in namespaces that do not exist yet).

    A server-side dry run of an object in a namespace that the same run
    creates fails with 404 on a real API server: check mode reports those as
    to be created instead of failing."""
    existing = set(existing)
    ready, pending = [], []
    for obj in objects:
        namespace = (obj.get("metadata") or {}).get("namespace")
        (pending if namespace and namespace not in existing else ready).append(obj)
    return ready, pending

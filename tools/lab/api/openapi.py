"""The OpenAPI v3 documents of the lab's API (`/openapi/v3` and one document per
group-version), which kubectl reads before it writes:

- `kubectl apply`/`create` look for the `fieldValidation` parameter on each
  kind's PATCH operation (k8s.io/cli-runtime v0.31
  pkg/resource/query_param_verifier_v3.go); found, they leave validation to
  the server and send `fieldValidation=Strict`. Not found, they fall back to
  the protobuf OpenAPI v2 document, which the lab does not serve.
- client-side apply builds its strategic merge patch from the kind's schema
  when the PATCH operation accepts `application/strategic-merge-patch+json`
  (k8s.io/kubectl v0.31 pkg/cmd/apply/patcher.go, gvkSupportsPatchOpenAPIV3).

The schemas are the official Kubernetes 1.31 definitions the lab validates
with (`kubernetes-validate`'s copy, with the `x-kubernetes-*` extensions),
turned back from JSON Schema into OpenAPI: `#/$defs/` references point into
`components/schemas`, nullable type lists become one type, IntOrString is the
string of format int-or-string that kube-openapi publishes. The paths and
operations follow kube-apiserver's (k8s.io/apiserver v0.31
pkg/endpoints/installer.go): list, create and deletecollection on a
collection; get, replace, patch and delete on an object; create only for the
access reviews. Custom resources get the schema an unvalidated CRD publishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

from . import resources
from .errors import resource_name

_lock = threading.Lock()
_cache = {}
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json")


def _definitions():
    import kubernetes_validate
    path = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema",
                        "v%s.0-local" % resources.KUBERNETES_VERSION, "_definitions.json")
    with open(path) as handle:
        return json.load(handle)["$defs"]


def _openapi(node):
    """A JSON Schema node of kubernetes-validate as the OpenAPI schema it came from."""
    if isinstance(node, list):
        return [_openapi(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("$schema", "$id"):
            continue
        if key == "$ref":
            out[key] = value.replace("#/$defs/", "#/components/schemas/")
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if len(types) == 1:
                out[key] = types[0]
        else:
            out[key] = _openapi(value)
    return out


def _references(node, found):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            found.add(ref[len("#/$defs/"):])
        for value in node.values():
            _references(value, found)
    elif isinstance(node, list):
        for item in node:
            _references(item, found)


def _closure(definitions, names):
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen or name not in definitions:
            continue
        seen.add(name)
        found = set()
        _references(definitions[name], found)
        todo.extend(found - seen)
    return seen


def _state():
    with _lock:
        if "definitions" not in _cache:
            definitions = _definitions()
            by_gvk = {}
            for name, schema in definitions.items():
                for gvk in schema.get("x-kubernetes-group-version-kind") or []:
                    by_gvk[(gvk.get("group", ""), gvk.get("version"), gvk.get("kind"))] = name
            _cache["definitions"], _cache["by_gvk"] = definitions, by_gvk
        return _cache


def _gv_path(group, version):
    return "api/%s" % version if not group else "apis/%s/%s" % (group, version)


def _crd_name(kind):
    return "%s.%s.%s" % (".".join(reversed(kind.group.split("."))), kind.version, kind.kind)


def _crd_schema(kind):
    return {"description": "%s of the custom resource %s (its CRD declares no schema in the lab)"
                           % (kind.kind, resource_name(kind)),
            "type": "object",
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "metadata": {"$ref": "#/components/schemas/" + OBJECT_META}},
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-group-version-kind": [{"group": kind.group, "version": kind.version, "kind": kind.kind}]}


def _parameter(name, where="query", description=""):
    return {"name": name, "in": where, "description": description, "required": where == "path",
            "schema": {"type": "string", "uniqueItems": True}}


WRITE_PARAMETERS = [
    _parameter("dryRun", description="When present, indicates that modifications should not be persisted."),
    _parameter("fieldManager", description="A name associated with the actor or entity that is making these "
                                           "changes."),
    _parameter("fieldValidation", description="Ignore, Warn or Strict: what the server does with unknown or "
                                              "duplicate fields in the object."),
]


def _operation(kind, action, verb_name, schema_ref, body_types=None, status="200"):
    gv = "".join(part.capitalize() for part in (kind.group.split(".")[0] if kind.group else "core",
                                                kind.version))
    scope = "Namespaced" if kind.namespaced else ""
    operation = {"operationId": "%s%s%s%s" % (verb_name, gv, scope, kind.kind),
                 "x-kubernetes-action": action,
                 "x-kubernetes-group-version-kind": {"group": kind.group, "version": kind.version,
                                                     "kind": kind.kind},
                 "responses": {status: {"description": "OK" if status == "200" else "Created",
                                        "content": {"application/json": {"schema": {"$ref": schema_ref}}}}}}
    if body_types:
        operation["requestBody"] = {"required": True, "content": {
            t: {"schema": {"$ref": schema_ref}} if t == "application/json" else
            {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}}
            for t in body_types}}
        operation["parameters"] = list(WRITE_PARAMETERS) + (
            [_parameter("force", description="Force applies the request (server-side apply only).")]
            if action == "patch" else [])
    return operation


def _paths(kind, schema_ref):
    base = "/" + _gv_path(kind.group, kind.version)
    collection = base + ("/namespaces/{namespace}/" if kind.namespaced else "/") + kind.plural
    scope = [_parameter("namespace", "path", "object name and auth scope, such as for teams and projects")] \
        if kind.namespaced else []
    if not kind.stored:   # the access reviews: create only
        return {collection: {"parameters": scope,
                             "post": _operation(kind, "post", "create", schema_ref, ["application/json"], "201")}}
    patch_types = [t for t in PATCH_TYPES if kind.builtin or t != "application/strategic-merge-patch+json"]
    return {
        collection: {"parameters": scope,
                     "get": _operation(kind, "list", "list", schema_ref),
                     "post": _operation(kind, "post", "create", schema_ref, ["application/json"], "201"),
                     "delete": _operation(kind, "deletecollection", "deleteCollection", schema_ref)},
        collection + "/{name}": {"parameters": scope + [_parameter("name", "path", "name of the %s" % kind.kind)],
                                 "get": _operation(kind, "get", "read", schema_ref),
                                 "put": _operation(kind, "put", "replace", schema_ref, ["application/json"]),
                                 "patch": _operation(kind, "patch", "patch", schema_ref, patch_types),
                                 "delete": _operation(kind, "delete", "delete", schema_ref)},
    }


def document(gv_path):
    """The OpenAPI v3 document of one group-version (``api/v1``, ``apis/apps/v1``), or None."""
    with _lock:
        if gv_path in _cache:
            return _cache[gv_path]
    state = _state()
    definitions, by_gvk = state["definitions"], state["by_gvk"]
    kinds = [k for k in resources.KINDS if _gv_path(k.group, k.version) == gv_path]
    if not kinds:
        return None
    paths, schemas, roots = {}, {}, {"io.k8s.apimachinery.pkg.apis.meta.v1.Patch", OBJECT_META}
    for kind in kinds:
        name = by_gvk.get((kind.group, kind.version, kind.kind))
        if name is None:
            name = _crd_name(kind)
            schemas[name] = _crd_schema(kind)
        else:
            roots.add(name)
        paths.update(_paths(kind, "#/components/schemas/" + name))
    for name in _closure(definitions, roots):
        schemas[name] = ({"type": "string", "format": "int-or-string"} if name == INT_OR_STRING
                         else _openapi(definitions[name]))
    doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": resources.GIT_VERSION},
           "paths": paths, "components": {"schemas": dict(sorted(schemas.items()))}}
    with _lock:
        _cache[gv_path] = doc
    return doc


def index():
    """/openapi/v3: each group-version's document, by a URL whose hash changes with it."""
    paths = {}
    for gv_path in sorted({_gv_path(k.group, k.version) for k in resources.KINDS}):
        digest = hashlib.sha512(json.dumps(document(gv_path), sort_keys=True).encode()).hexdigest()[:128].upper()
        paths[gv_path] = {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (gv_path, digest)}
    return {"paths": paths}


def unknown_fields(kind, obj):
    """The fields of ``obj`` that the official schema of ``kind`` does not have, as kube-apiserver's strict
    decoding names them (``spec.template.spec.containers[0].imagee``); custom resources keep every field."""
    state = _state()
    name = state["by_gvk"].get((kind.group, kind.version, kind.kind))
    found = []
    if name is not None:
        _walk(state["definitions"], state["definitions"][name], obj, "", found)
    return found


def _walk(definitions, schema, value, path, found):
    while isinstance(schema, dict) and "$ref" in schema:
        schema = definitions.get(schema["$ref"][len("#/$defs/"):], {})
    if not isinstance(schema, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = "%s.%s" % (path, key) if path else key
            if properties is not None and key in properties:
                _walk(definitions, properties[key], item, where, found)
            elif isinstance(extra, dict):
                _walk(definitions, extra, item, where, found)
            elif properties is not None:
                found.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _walk(definitions, schema["items"], item, "%s[%d]" % (path, index), found)

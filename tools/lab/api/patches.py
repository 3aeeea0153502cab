"""The three patch formats of the Kubernetes API, as the real API server applies them.

- JSON merge patch (RFC 7386): maps merge, null deletes, lists replace.
- Strategic merge patch: like merge patch, but the lists that carry a
  ``patchMergeKey`` in the Kubernetes types (containers by name, env by name,
  container ports by containerPort, Service ports by port, volumes by name,
  volumeMounts by mountPath, ...) merge element by element; ``$patch: delete``
  removes an element, ``$patch: replace`` replaces a map or list; lists without
  a merge key (args, tolerations, envFrom, ...) are replaced whole. Only the
  built-in kinds support it: custom resources answer 415, as the real API does.
- JSON patch (RFC 6902): add, remove, replace, move, copy, test.
"""

from __future__ import annotations

import copy

# field name -> merge key, where the Kubernetes types declare patchStrategy=merge.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "ownerReferences": "uid",
    "conditions": "type",
    "resourceClaims": "name",
}
# Lists of scalars merged as sets (patchStrategy=merge without a key).
MERGED_SCALAR_LISTS = ("finalizers",)
DIRECTIVE = "$patch"


class PatchError(ValueError):
    """A patch that cannot be applied (the API answers 422 or 400)."""


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(field, parent):
    if field == "ports":
        # Container ports merge by containerPort, Service ports by port.
        return "containerPort" if ("image" in parent or "name" in parent) else "port"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(target, patch):
    """A strategic merge patch on a built-in kind."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get(DIRECTIVE) == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != DIRECTIVE}
    if patch.get(DIRECTIVE) == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key == "$retainKeys" or key == DIRECTIVE:
            continue  # ordering hints and retain lists change nothing here
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field, []) if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value, patch)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    return result


def _merge_list(field, current, patch_list, parent):
    current = current if isinstance(current, list) else []
    if any(isinstance(item, dict) and item.get(DIRECTIVE) == "replace" for item in patch_list):
        return [copy.deepcopy(item) for item in patch_list if not (isinstance(item, dict) and DIRECTIVE in item)]
    if field in MERGED_SCALAR_LISTS:
        return current + [v for v in patch_list if v not in current]
    key = _merge_key(field, parent)
    if not key or not all(isinstance(item, dict) for item in patch_list):
        return copy.deepcopy(patch_list)
    result = [copy.deepcopy(item) for item in current]
    for item in patch_list:
        if key not in item:
            raise PatchError("map: %s does not contain declared merge key: %s" % (item, key))
        index = next((i for i, existing in enumerate(result)
                      if isinstance(existing, dict) and existing.get(key) == item[key]), None)
        if item.get(DIRECTIVE) == "delete":
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError("JSON pointer must start with '/': %s" % path)
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _walk(document, parts):
    node = document
    for part in parts:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise PatchError("path not found: /%s" % "/".join(parts))
    return node


def json_patch(target, operations):
    """RFC 6902 JSON patch."""
    document = copy.deepcopy(target)
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    for operation in operations:
        op, parts = operation.get("op"), _pointer(operation.get("path", ""))
        try:
            if op in ("add", "replace"):
                parent, last = _walk(document, parts[:-1]), parts[-1]
                value = copy.deepcopy(operation["value"])
                if isinstance(parent, list):
                    if last == "-":
                        parent.append(value)
                    elif op == "add":
                        parent.insert(int(last), value)
                    else:
                        parent[int(last)] = value
                else:
                    if op == "replace" and last not in parent:
                        raise PatchError("replace of a missing path: %s" % operation["path"])
                    parent[last] = value
            elif op == "remove":
                parent, last = _walk(document, parts[:-1]), parts[-1]
                if isinstance(parent, list):
                    parent.pop(int(last))
                else:
                    del parent[last]
            elif op in ("move", "copy"):
                source = _pointer(operation["from"])
                value = copy.deepcopy(_walk(document, source))
                if op == "move":
                    document = json_patch(document, [{"op": "remove", "path": operation["from"]}])
                document = json_patch(document, [{"op": "add", "path": operation["path"], "value": value}])
            elif op == "test":
                if _walk(document, parts) != operation.get("value"):
                    raise PatchError("test failed at %s" % operation["path"])
            else:
                raise PatchError("unknown JSON patch operation: %r" % op)
        except (KeyError, IndexError, ValueError, TypeError) as err:
            if isinstance(err, PatchError):
                raise
            raise PatchError("cannot apply %s at %s: %s" % (op, operation.get("path"), err))
    return document

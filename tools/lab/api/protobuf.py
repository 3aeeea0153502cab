"""Request bodies in Kubernetes' protobuf encoding, for the few kinds the lab's
clients send that way: kubectl 1.37 posts its access reviews (`auth can-i`) and
its TokenRequests (`create token`) as `application/vnd.kubernetes.protobuf`, where
the other requests it and the collection make carry JSON.

The envelope is the magic bytes "k8s\\0" and a runtime.Unknown message
(k8s.io/apimachinery v0.31 pkg/runtime/serializer/protobuf/protobuf.go,
pkg/runtime/generated.proto); the review messages follow
k8s.io/api v0.31 authorization/v1/generated.proto, TokenRequest
authentication/v1/generated.proto. Decoded to the dict the same
object has in JSON; fields the lab does not read are skipped.
"""

from __future__ import annotations

from .errors import ApiError

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# field number -> (JSON name, nested schema or "string" / "strings" / "bool" / "int")
_RESOURCE = {1: ("namespace", "string"), 2: ("verb", "string"), 3: ("group", "string"), 4: ("version", "string"),
             5: ("resource", "string"), 6: ("subresource", "string"), 7: ("name", "string")}
_NON_RESOURCE = {1: ("path", "string"), 2: ("verb", "string")}
_ACCESS_SPEC = {1: ("resourceAttributes", _RESOURCE), 2: ("nonResourceAttributes", _NON_RESOURCE),
                3: ("user", "string"), 4: ("groups", "strings"), 6: ("uid", "string")}
_RULES_SPEC = {1: ("namespace", "string")}
_META = {1: ("name", "string"), 3: ("namespace", "string")}
SCHEMAS = {
    "SelfSubjectAccessReview": {1: ("metadata", _META), 2: ("spec", _ACCESS_SPEC)},
    "SubjectAccessReview": {1: ("metadata", _META), 2: ("spec", _ACCESS_SPEC)},
    "LocalSubjectAccessReview": {1: ("metadata", _META), 2: ("spec", _ACCESS_SPEC)},
    "SelfSubjectRulesReview": {1: ("metadata", _META), 2: ("spec", _RULES_SPEC)},
    "TokenRequest": {1: ("metadata", _META), 2: ("spec", {1: ("audiences", "strings"),
                                                         4: ("expirationSeconds", "int")})},
}
_UNKNOWN = {1: ("typeMeta", {1: ("apiVersion", "string"), 2: ("kind", "string")}), 2: ("raw", "bytes")}


def _varint(data, pos):
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data):
    """(field number, wire type, value) of each field of one message."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
            if len(value) != length:
                raise ValueError("truncated field %d" % number)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError("wire type %d" % wire)
        yield number, wire, value


def _message(data, schema):
    out = {}
    for number, wire, value in _fields(data):
        if number not in schema:
            continue
        name, kind = schema[number]
        if kind == "string":
            out[name] = value.decode()
        elif kind == "bytes":
            out[name] = value
        elif kind == "strings":
            out.setdefault(name, []).append(value.decode())
        elif kind == "bool":
            out[name] = bool(value)
        elif kind == "int":  # int64 as a varint, two's complement when negative
            out[name] = value - (1 << 64) if value >= 1 << 63 else value
        else:
            out[name] = _message(value, kind)
    return out


def decode(body, kind):
    """The object of ``kind`` in ``body`` (a protobuf envelope), as its JSON dict."""
    if not body.startswith(MAGIC):
        raise ApiError(400, "the body of the request is not a protobuf envelope (no k8s magic prefix)")
    if kind not in SCHEMAS:
        raise ApiError(415, "the lab's API emulator reads protobuf bodies only of %s; send JSON"
                            % ", ".join(sorted(SCHEMAS)))
    try:
        unknown = _message(body[len(MAGIC):], _UNKNOWN)
        obj = _message(unknown.get("raw", b""), SCHEMAS[kind])
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, "the protobuf body of %s does not decode: %s" % (kind, err))
    obj.update(unknown.get("typeMeta") or {})
    obj.setdefault("spec", {})
    return obj

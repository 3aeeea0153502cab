"""Status objects: the error bodies the real Kubernetes API answers with."""

from __future__ import annotations

REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict",
           410: "Gone", 415: "UnsupportedMediaType", 422: "Invalid", 500: "InternalError", 501: "NotImplemented",
           503: "ServiceUnavailable", 504: "Timeout"}


class ApiError(Exception):
    def __init__(self, code, message, reason=None, details=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self):
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
                "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def resource_name(kind):
    return kind.plural if not kind.group else "%s.%s" % (kind.plural, kind.group)


def not_found(kind, name):
    return ApiError(404, '%s "%s" not found' % (resource_name(kind), name),
                    details={"name": name, "group": kind.group, "kind": kind.plural})


def already_exists(kind, name):
    return ApiError(409, '%s "%s" already exists' % (resource_name(kind), name), reason="AlreadyExists",
                    details={"name": name, "group": kind.group, "kind": kind.plural})


def conflict(kind, name):
    return ApiError(409, 'Operation cannot be fulfilled on %s "%s": the object has been modified; please apply your '
                         'changes to the latest version and try again' % (resource_name(kind), name),
                    reason="Conflict", details={"name": name, "group": kind.group, "kind": kind.plural})


def invalid(kind, name, causes):
    message = '%s "%s" is invalid: %s' % (kind.kind, name, "; ".join(c["message"] for c in causes))
    return ApiError(422, message, details={"name": name, "group": kind.group, "kind": kind.kind, "causes": causes})


def not_implemented(method, path):
    return ApiError(501, "the lab's API emulator does not support %s %s" % (method, path))

"""The lab's Kubernetes API emulator: an HTTP server on loopback that behaves
like k3s's API server for what the collection uses, and fails loudly (501)
on anything else.

Served: discovery; get/list (label and field selectors, cluster-wide lists);
create; replace (409 on a stale resourceVersion); patch (merge, strategic
merge on built-in kinds, JSON patch); delete; the status and scale
subresources; dryRun=All; the service proxy; pods/log (tail, previous,
follow); access reviews (access_review.py); TokenRequest; the ServiceAccount
admission of pods (admission.py); /healthz, /livez and /readyz. Every request is
authenticated (authn.py) and authorised by RBAC (rbac.py) first. Objects of built-in kinds are
validated against the official schema of Kubernetes 1.31 (422 when invalid).
A no-op write returns the stored object unchanged (same resourceVersion), as
the real API server does, so clients can tell "nothing changed".
"""

from __future__ import annotations

import base64
import copy
import json
import select
import socket
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import access_review, admission, openapi, patches, protobuf, rbac, resources
from .errors import ApiError, already_exists, conflict, invalid, not_found, not_implemented
from .store import now_rfc3339

MIN_TOKEN_SECONDS, DEFAULT_TOKEN_SECONDS = 600, 3600  # token.go: at least 10 minutes, one hour unless asked

# kube-apiserver's health endpoints (k8s.io/apiserver pkg/server/healthz): each check's line with ?verbose.
HEALTH_CHECKS = {"healthz": ("ping", "log", "etcd"), "livez": ("ping", "log", "etcd"),
                 "readyz": ("ping", "log", "etcd", "informer-sync", "shutdown")}
# How often a followed log is read again for what the container wrote since.
FOLLOW_INTERVAL = 0.2
SERVER_FIELDS = ("uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp", "managedFields")
PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
    "application/apply-patch+yaml": "apply",
}


def _validator():
    try:
        import kubernetes_validate
    except ImportError:  # pragma: no cover - the lab's requirements carry it
        return None
    return kubernetes_validate


class Route:
    """A parsed API path."""

    def __init__(self, kind, namespace=None, name=None, sub=None, rest=""):
        self.kind, self.namespace, self.name, self.sub, self.rest = kind, namespace, name, sub, rest


class ApiServer:
    """Routing and semantics; the HTTP handler below only moves bytes."""

    def __init__(self, store, services=None, validate=True):
        self.store = store
        self.services = services          # the lab's service proxy backend (resolves endpoints)
        self.logs = None                  # the kubelet's container logs: (pod, container) -> text or None
        self.validator = _validator() if validate else None
        self.authenticator = None         # authn.Authenticator; None: every request is the insecure port's
        self.authorizer = rbac.Authorizer(store)
        self.tokens = None                # service_accounts.Tokens, for TokenRequest
        # The API fault knob: fail `remaining` requests with `mode`; with `after_patch_of` set
        # ("deployments"), only once a PATCH of that resource has gone through ("during a switch").
        self.faults = {"mode": None, "remaining": 0, "after_patch_of": None}
        self.fault_lock = threading.Lock()
        self.requests = 0
        # Set to a list to record every request as (method, path, query), as sent: the tests
        # derive the RBAC rights a client used from it (None: nothing kept).
        self.request_log = None
        self.follows = 0                  # log streams open now (kubectl logs -f), for the tests
        self.follows_lock = threading.Lock()
        # fieldValidation of the request being served (kubectl sends Strict once it finds the parameter
        # in the OpenAPI document); per thread, as each request has its own.
        self.request_state = threading.local()

    # -- routing ------------------------------------------------------------------

    def route(self, path):
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return None
        kind = resources.BY_PATH.get((group, version, rest[0]))
        if kind is None or (namespace is not None and not kind.namespaced):
            return None
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        tail = "/".join(rest[3:])
        return Route(kind, namespace, name, sub, tail)

    def handle(self, method, raw_path, headers, body, insecure=True):
        """(status, response headers, body bytes). ``insecure``: the request came to the plain HTTP port."""
        parsed = urllib.parse.urlsplit(raw_path)
        path, query = parsed.path, urllib.parse.parse_qs(parsed.query)
        self.requests += 1
        if self.request_log is not None:
            self.request_log.append((method, path, parsed.query))
        fault = self.take_fault(path)
        if fault == "5xx":
            return self.error(ApiError(500, "Internal error occurred: the lab's fault knob is set"))
        if fault == "timeout":
            time.sleep(60)
            return self.error(ApiError(504, "Timeout: the lab's fault knob is set"))
        try:
            user = self.authenticator.authenticate(headers, insecure) if self.authenticator else None
            if user is not None:
                request = rbac.attributes(method, path, parsed.query)
                allowed, reason = self.authorizer.authorize(user, request)
                if not allowed:
                    raise rbac.forbidden(user, request, reason)
            health = self.health(method, path, parsed.query)
            if health is not None:
                return health
            discovery = self.discovery(method, path)
            if discovery is not None:
                return self.json(200, discovery)
            if method == "GET" and (path == "/openapi/v3" or path.startswith("/openapi/v3/")):
                gv_path = path[len("/openapi/v3/"):].strip("/")
                doc = openapi.index() if not gv_path else openapi.document(gv_path)
                if doc is None:
                    raise ApiError(404, "the server could not find the requested resource")
                return self.json(200, doc)
            route = self.route(path)
            if route is None:
                raise not_implemented(method, path)
            if route.sub == "proxy" and route.kind.plural == "services":
                return self.services.proxy(method, route.namespace, route.name, route.rest, query, headers, body)
            if route.sub == "proxy" and route.kind.plural == "pods":
                return self.services.pod_proxy(method, route.namespace, route.name, route.rest, query, headers, body)
            if route.sub == "log" and route.kind.plural == "pods" and method == "GET":
                return 200, {"Content-Type": "text/plain"}, self.pod_log(route, query)
            if route.sub == "portforward" and route.kind.plural == "pods":
                raise ApiError(501, "the lab's API emulator does not serve port-forward (kubectl's SPDY streams); "
                                    "reach the pod or Service at its loopback address, or run: python -m lab "
                                    "port-forward -n %s pod/%s PORT" % (route.namespace, route.name))
            sent = (headers.get("Content-Type") or "").split(";")[0].strip()
            if route.sub == "token" and route.kind.plural == "serviceaccounts" and method == "POST":
                asked = protobuf.decode(body, "TokenRequest") if sent == protobuf.CONTENT_TYPE else self.parse(body)
                return self.json(201, self.token_request(route, asked))
            if not route.kind.stored:
                if method != "POST" or route.name is not None:
                    raise ApiError(405, "the server does not allow this method on the requested resource")
                review = protobuf.decode(body, route.kind.kind) if sent == protobuf.CONTENT_TYPE else self.parse(body)
                return self.json(201, access_review.answer(route.kind.kind, route.namespace, review,
                                                           self.authorizer, user))
            dry_run = "All" in query.get("dryRun", [])
            answer = self.json(*self.dispatch(method, route, query, headers, body, dry_run, path))
            self.arm_fault(method, path)
            return answer
        except ApiError as err:
            return self.error(err)

    def token_request(self, route, request):
        """A TokenRequest's answer (pkg/registry/core/serviceaccount/storage/token.go and the validation of
        pkg/apis/authentication/validation, v1.31): a token for an existing ServiceAccount, valid for
        spec.expirationSeconds (10 minutes at least, one hour unless asked)."""
        self.get(route)  # 404 for a ServiceAccount that does not exist
        spec = (request or {}).get("spec") or {}
        seconds = spec.get("expirationSeconds")
        if seconds is None:  # a nil *int64, as kubectl sends it without --duration
            seconds = DEFAULT_TOKEN_SECONDS
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise ApiError(400, "the request body does not decode: spec.expirationSeconds is not an integer")
        problem = ("less than 10 minutes" if seconds < MIN_TOKEN_SECONDS else
                   "larger than 2^32 seconds" if seconds > 2 ** 32 else None)
        if problem:
            message = "spec.expirationSeconds: Invalid value: %d: may not specify a duration %s" % (seconds, problem)
            raise ApiError(422, 'TokenRequest.authentication.k8s.io "%s" is invalid: %s' % (route.name, message),
                           details={"name": route.name, "group": "authentication.k8s.io", "kind": "TokenRequest",
                                    "causes": [{"reason": "FieldValueInvalid", "message": message,
                                                "field": "spec.expirationSeconds"}]})
        token, expires = self.tokens.request(route.namespace, route.name, seconds)
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": route.name, "namespace": route.namespace, "creationTimestamp": None},
                "spec": dict(spec, expirationSeconds=seconds, audiences=spec.get("audiences") or
                             ["https://kubernetes.default.svc.cluster.local", "k3s"]),
                "status": {"token": token, "expirationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                time.gmtime(expires))}}

    def take_fault(self, path):
        if path.startswith("/lab/"):
            return None
        with self.fault_lock:
            if self.faults["remaining"] > 0 and not self.faults.get("after_patch_of"):
                self.faults["remaining"] -= 1
                return self.faults["mode"]
        return None

    def arm_fault(self, method, path):
        """A PATCH of the watched resource went through: the burst starts with the next request."""
        with self.fault_lock:
            watched = self.faults.get("after_patch_of")
            if watched and method == "PATCH" and "/%s/" % watched in path:
                self.faults["after_patch_of"] = None

    @staticmethod
    def health(method, path, query):
        """(status, headers, body) of /healthz, /livez, /readyz and their single checks; None otherwise.
        ``query`` is the raw query string (``?verbose`` has no value)."""
        parts = path.strip("/").split("/")
        if method != "GET" or parts[0] not in HEALTH_CHECKS or len(parts) > 2:
            return None
        checks = HEALTH_CHECKS[parts[0]]
        if len(parts) == 2:
            if parts[1] not in checks:
                return 404, {"Content-Type": "text/plain; charset=utf-8"}, b"404 page not found\n"
            text = "ok"
        elif "verbose" in urllib.parse.parse_qs(query, keep_blank_values=True):
            text = "".join("[+]%s ok\n" % name for name in checks) + "%s check passed\n" % parts[0]
        else:
            text = "ok"
        return 200, {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}, text.encode()

    @staticmethod
    def discovery(method, path):
        if method != "GET":
            return None
        path = path.rstrip("/")
        if path == "/version":
            return resources.version_info()
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}
        if path == "/apis":
            return resources.group_list()
        if path == "/api/v1":
            return resources.resource_list("", "v1")
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "apis":
            listing = resources.resource_list(parts[1], parts[2])
            if listing is None:
                raise ApiError(404, "the server could not find the requested resource")
            return listing
        return None

    def dispatch(self, method, route, query, headers, body, dry_run, path):
        kind = route.kind
        validation = (query.get("fieldValidation") or [""])[0]
        if validation not in ("", "Ignore", "Warn", "Strict"):
            raise ApiError(400, 'fieldValidation: Unsupported value: "%s": supported values: "Ignore", "Strict", '
                                '"Warn"' % validation)
        self.request_state.strict = validation == "Strict"
        if route.namespace and not self.store.get("namespaces", "", route.namespace) and method in ("POST", "PUT"):
            raise ApiError(404, 'namespaces "%s" not found' % route.namespace,
                           details={"name": route.namespace, "kind": "namespaces"})
        if route.name is None:
            if method == "GET":
                return 200, self.list(route, query)
            if method == "POST":
                return 201, self.create(route, self.parse(body), dry_run)
            raise not_implemented(method, path)
        if route.sub is None:
            if method == "GET":
                return 200, self.get(route)
            if method == "PUT":
                return 200, self.replace(route, self.parse(body), dry_run)
            if method == "PATCH":
                return 200, self.patch(route, headers, body, dry_run)
            if method == "DELETE":
                return 200, self.delete(route, dry_run)
        elif route.sub == "status" and "status" in kind.subresources:
            if method == "GET":
                return 200, self.get(route)
            if method in ("PUT", "PATCH"):
                return 200, self.write_status(route, method, headers, body, dry_run)
        elif route.sub == "scale" and "scale" in kind.subresources:
            if method == "GET":
                return 200, self.scale_of(self.get(route))
            if method in ("PUT", "PATCH"):
                return 200, self.write_scale(route, method, headers, body, dry_run)
        raise not_implemented(method, path)

    def pod_log(self, route, query):
        """A container's log, with the apiserver's checks of the container name
        (kubernetes v1.31 pkg/registry/core/pod/strategy.go, LogLocation) and the kubelet's
        answers (pkg/kubelet/kubelet_pods.go, GetContainerLogs): bytes, or with follow=true an
        iterator of them that ends when the container stops or the client hangs up."""
        pod = self.get(route)
        names = [c["name"] for c in pod["spec"].get("containers") or []]
        init_names = [c["name"] for c in pod["spec"].get("initContainers") or []]
        container = (query.get("container") or [""])[0]
        if not container:
            if len(names) != 1:
                message = "a container name must be specified for pod %s, choose one of: [%s]" % (
                    route.name, " ".join(names))
                if init_names:
                    message += " or one of the init containers: [%s]" % " ".join(init_names)
                raise ApiError(400, message)
            container = names[0]
        if container not in names + init_names:
            raise ApiError(400, "container %s is not valid for pod %s" % (container, route.name))
        for flag in ("sinceSeconds", "sinceTime", "timestamps", "limitBytes"):
            if flag in query and query[flag][0] not in ("false", "0"):
                raise not_implemented("GET", "pods/log?%s" % flag)
        follow, previous = (query.get(flag, ["false"])[0] == "true" for flag in ("follow", "previous"))
        if not pod["spec"].get("nodeName"):
            raise ApiError(400, "pod %s does not have a host assigned" % route.name)
        text = self.logs(pod, container, previous=previous)
        if text is None:
            if previous:
                raise ApiError(400, 'previous terminated container "%s" in pod "%s" not found' % (
                    container, route.name))
            # the kubelet's answer for a container that never started
            raise ApiError(400, 'container "%s" in pod "%s" is waiting to start: ContainerCreating' % (
                container, route.name))
        tail = (query.get("tailLines") or [""])[0]
        shown = text
        if tail:
            lines = text.splitlines(keepends=True)
            shown = "".join(lines[-int(tail):]) if int(tail) > 0 else ""
        if not follow or previous:
            return shown.encode()
        return self.follow_log(pod, container, shown.encode(), len(text))

    def follow_log(self, pod, container, first, sent):
        """The rest of a followed log as the container writes it, until it stops running
        (or its pod goes): the kubelet's follow ends with the container."""
        with self.follows_lock:
            self.follows += 1
        try:
            yield first
            namespace, name, uid = pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"]
            while True:
                time.sleep(FOLLOW_INTERVAL)
                current = self.store.get("pods", namespace, name)
                text = self.logs(current, container) if current and current["metadata"]["uid"] == uid else None
                if text is not None and len(text) > sent:
                    yield text[sent:].encode()
                    sent = len(text)
                else:
                    yield b""  # nothing new: the handler looks whether the client is still there
                statuses = ((current or {}).get("status") or {}).get("containerStatuses") or []
                running = any(s.get("name") == container and "running" in (s.get("state") or {}) for s in statuses)
                if text is None or not running:
                    return
        finally:
            with self.follows_lock:
                self.follows -= 1

    # -- verbs ----------------------------------------------------------------------

    @staticmethod
    def parse(body):
        try:
            return json.loads(body or b"{}")
        except ValueError as err:
            raise ApiError(400, "the request body is not JSON: %s" % err)

    def get(self, route):
        obj = self.store.get(route.kind.plural, route.namespace, route.name)
        if obj is None:
            raise not_found(route.kind, route.name)
        return obj

    def list(self, route, query):
        try:
            items = self.store.list(route.kind.plural, route.namespace, query.get("labelSelector", [None])[0],
                                    query.get("fieldSelector", [None])[0])
        except ValueError as err:
            raise ApiError(400, str(err))
        for item in items:  # list items carry no kind or apiVersion, as on the real API
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {"kind": route.kind.kind + "List", "apiVersion": route.kind.api_version,
                "metadata": {"resourceVersion": str(self.store.version)}, "items": items}

    def check_type(self, route, obj):
        kind = route.kind
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            raise ApiError(400, "the object has no metadata")
        if obj.get("kind", kind.kind) != kind.kind or obj.get("apiVersion", kind.api_version) != kind.api_version:
            raise ApiError(400, "the API version in the data (%s) does not match the expected API version (%s)"
                           % (obj.get("apiVersion"), kind.api_version))
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
        if kind.namespaced:
            namespace = obj["metadata"].get("namespace") or route.namespace
            if route.namespace and namespace != route.namespace:
                raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the "
                                    "request")
            obj["metadata"]["namespace"] = namespace
        else:
            obj["metadata"].pop("namespace", None)

    def validate(self, kind, obj):
        name = obj["metadata"].get("name", "")
        if not name:
            raise invalid(kind, "", [{"reason": "FieldValueRequired", "message": "metadata.name: Required value",
                                      "field": "metadata.name"}])
        if not kind.builtin or self.validator is None:
            return
        unknown = openapi.unknown_fields(kind, obj) if getattr(self.request_state, "strict", False) else []
        if unknown:
            # k8s.io/apimachinery v0.31 pkg/runtime/serializer/json (strict decoding), as the handlers report it
            raise ApiError(400, '%s in version "%s" cannot be handled as a %s: strict decoding error: %s' % (
                kind.kind, kind.version, kind.kind, ", ".join('unknown field "%s"' % f for f in unknown)))
        clean = {k: v for k, v in obj.items() if k != "status"}
        clean["metadata"] = {k: v for k, v in obj["metadata"].items() if k not in SERVER_FIELDS}
        try:
            self.validator.validate(clean, resources.KUBERNETES_VERSION, strict=False)
        except self.validator.ValidationError as err:
            path = ".".join(str(p) for p in getattr(err, "path", []) or [])
            raise invalid(kind, name, [{"reason": "FieldValueInvalid", "message": "%s: %s" % (path or "<root>",
                                                                                             err.message),
                                        "field": path}])

    def create(self, route, obj, dry_run):
        self.check_type(route, obj)
        if route.kind.kind == "Pod":  # mutating admission runs before validation, as in kube-apiserver
            admission.admit_pod(self.store, obj)
        self.validate(route.kind, obj)
        name = obj["metadata"]["name"]
        if self.store.get(route.kind.plural, obj["metadata"].get("namespace"), name):
            raise already_exists(route.kind, name)
        for field in SERVER_FIELDS:
            obj["metadata"].pop(field, None)
        self.defaults(route.kind, obj)
        generation = route.kind.plural in ("deployments", "replicasets", "daemonsets") or not route.kind.builtin
        return self.store.create(route.kind.plural, obj, dry_run=dry_run, generation=generation)

    def defaults(self, kind, obj):
        """The few server-side defaults the lab's controllers and clients rely on."""
        spec = obj.setdefault("spec", {}) if kind.kind in ("Deployment", "ReplicaSet", "Service", "DaemonSet") \
            else None
        if kind.kind == "ReplicaSet":
            spec.setdefault("replicas", 1)
        if kind.kind == "Deployment":
            spec.setdefault("replicas", 1)
            spec.setdefault("strategy", {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        if kind.kind == "Service":
            spec.setdefault("type", "ClusterIP")
            if "clusterIP" not in spec and self.services:
                spec["clusterIP"] = self.services.allocate_ip(obj["metadata"].get("namespace"),
                                                              obj["metadata"]["name"])
                spec["clusterIPs"] = [spec["clusterIP"]]
        if kind.kind == "Namespace":
            obj.setdefault("status", {"phase": "Active"})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        if kind.kind == "Secret":
            self.secret_data(obj)
        if kind.kind == "PersistentVolumeClaim":
            obj.setdefault("status", {"phase": "Bound", "accessModes": obj["spec"].get("accessModes", []),
                                      "capacity": ((obj["spec"].get("resources") or {}).get("requests") or {})})
            obj["spec"].setdefault("storageClassName", "local-path")
            obj["spec"].setdefault("volumeMode", "Filesystem")

    def _store_update(self, route, current, updated, dry_run, status_write=False):
        """Write ``updated`` over ``current``: no-op writes change nothing, spec changes bump generation."""
        for field in SERVER_FIELDS:
            if field in current["metadata"]:
                updated["metadata"][field] = current["metadata"][field]
            else:
                updated["metadata"].pop(field, None)
        if not status_write and "status" in current:
            updated["status"] = current["status"]  # the main resource does not write status
        if status_write:
            updated = dict(current, status=updated.get("status", current.get("status")))
        self.defaults_keep(route.kind, current, updated)
        if updated == current:
            return current
        if not status_write and updated.get("spec") != current.get("spec") and "generation" in current["metadata"]:
            updated["metadata"]["generation"] = current["metadata"]["generation"] + 1
        self.validate(route.kind, updated)
        return self.store.put(route.kind.plural, updated, dry_run=dry_run)

    @staticmethod
    def secret_data(obj):
        """stringData is write-only: the API stores it base64-encoded in data."""
        string_data = obj.pop("stringData", None) or {}
        if string_data:
            data = obj.setdefault("data", {}) or {}
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
        obj.setdefault("type", "Opaque")

    @staticmethod
    def defaults_keep(kind, current, updated):
        """Server-assigned fields a client's full object leaves out stay as they were."""
        if kind.kind == "Service":
            for field in ("clusterIP", "clusterIPs", "type"):
                if field in current.get("spec", {}) and field not in updated.setdefault("spec", {}):
                    updated["spec"][field] = current["spec"][field]
        if kind.kind == "Deployment":
            spec = updated.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            if "strategy" not in spec and "strategy" in current.get("spec", {}):
                spec["strategy"] = current["spec"]["strategy"]
        if kind.kind == "PersistentVolumeClaim":
            for field in ("storageClassName", "volumeMode", "volumeName"):
                if field in current.get("spec", {}) and field not in updated.setdefault("spec", {}):
                    updated["spec"][field] = current["spec"][field]
        if kind.kind == "Namespace":
            labels = updated["metadata"].setdefault("labels", {})
            labels.setdefault("kubernetes.io/metadata.name", current["metadata"]["name"])
        if kind.kind == "Secret":
            ApiServer.secret_data(updated)

    def replace(self, route, obj, dry_run):
        self.check_type(route, obj)
        current = self.get(route)
        version = obj["metadata"].get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            raise conflict(route.kind, route.name)
        if obj["metadata"].get("name", route.name) != route.name:
            raise ApiError(400, "the name of the object (%s) does not match the name on the URL (%s)"
                           % (obj["metadata"].get("name"), route.name))
        return self._store_update(route, current, obj, dry_run)

    def apply_patch(self, kind, current, headers, body):
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip()
        style = PATCH_TYPES.get(content_type)
        if style is None:
            raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                                + ", ".join(PATCH_TYPES))
        if style == "strategic" and not kind.builtin:
            raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                                "application/json-patch+json, application/merge-patch+json, "
                                "application/apply-patch+yaml")
        if style == "apply":
            raise not_implemented("PATCH (server-side apply)", "application/apply-patch+yaml")
        patch = self.parse(body)
        try:
            if style == "merge":
                return patches.merge_patch(current, patch)
            if style == "strategic":
                return patches.strategic_merge_patch(current, patch)
            return patches.json_patch(current, patch)
        except patches.PatchError as err:
            raise ApiError(422, str(err))

    def patch(self, route, headers, body, dry_run):
        current = self.get(route)
        updated = self.apply_patch(route.kind, current, headers, body)
        if not isinstance(updated, dict):
            raise ApiError(422, "the patch turned the object into a non-object")
        version = (updated.get("metadata") or {}).get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            raise conflict(route.kind, route.name)
        updated.setdefault("metadata", {})["name"] = current["metadata"]["name"]
        if route.kind.namespaced:
            updated["metadata"]["namespace"] = current["metadata"]["namespace"]
        updated["kind"], updated["apiVersion"] = route.kind.kind, route.kind.api_version
        return self._store_update(route, current, updated, dry_run)

    def write_status(self, route, method, headers, body, dry_run):
        current = self.get(route)
        updated = self.parse(body) if method == "PUT" else self.apply_patch(route.kind, current, headers, body)
        return self._store_update(route, current, updated, dry_run, status_write=True)

    def delete(self, route, dry_run):
        current = self.get(route)
        if dry_run:
            return current
        if route.kind.kind in ("Namespace", "Pod"):
            # Graceful: marked now, removed by the lab's controllers once its contents or processes are gone.
            if "deletionTimestamp" not in current["metadata"]:
                current["metadata"]["deletionTimestamp"] = now_rfc3339()
                if route.kind.kind == "Namespace":
                    current["status"] = {"phase": "Terminating"}
                return self.store.put(route.kind.plural, current)
            return current
        self.store.delete(route.kind.plural, route.namespace, route.name)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": route.name, "group": route.kind.group, "kind": route.kind.plural,
                            "uid": current["metadata"]["uid"]}}

    # -- the scale subresource ---------------------------------------------------

    @staticmethod
    def scale_of(obj):
        labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        metadata = obj["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": metadata["name"], "namespace": metadata.get("namespace"),
                             "uid": metadata["uid"], "resourceVersion": metadata["resourceVersion"],
                             "creationTimestamp": metadata["creationTimestamp"]},
                "spec": {"replicas": obj["spec"].get("replicas", 1)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                           "selector": ",".join("%s=%s" % kv for kv in sorted(labels.items()))}}

    def write_scale(self, route, method, headers, body, dry_run):
        current = self.get(route)
        scale = self.scale_of(current)
        if method == "PUT":
            wanted = self.parse(body)
        else:
            style = PATCH_TYPES.get((headers.get("Content-Type") or "").split(";")[0].strip())
            patch = self.parse(body)
            wanted = patches.json_patch(scale, patch) if style == "json" else patches.merge_patch(scale, patch)
        replicas = (wanted.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, 'Scale.autoscaling "%s" is invalid: spec.replicas: Invalid value' % route.name)
        updated = copy.deepcopy(current)
        updated["spec"]["replicas"] = replicas
        stored = self._store_update(route, current, updated, dry_run)
        return self.scale_of(stored)

    # -- responses --------------------------------------------------------------------

    @staticmethod
    def json(status, body):
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def error(self, err):
        return self.json(err.code, err.status())


class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lab-apiserver"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/lab/"):
            status, headers, payload = self.server.admin(self.command, self.path, body)
        else:
            status, headers, payload = self.server.api.handle(self.command, self.path, self.headers, body,
                                                              insecure=self.server.insecure)
        head = ["HTTP/1.1 %d %s" % (status, self.responses.get(status, ("",))[0])]
        head += ["%s: %s" % item for item in headers.items() if item[0].lower() not in ("content-length",
                                                                                      "transfer-encoding",
                                                                                      "connection")]
        if isinstance(payload, bytes):
            head.append("Content-Length: %d" % len(payload))
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
            self.wfile.flush()
            return
        head.append("Transfer-Encoding: chunked")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        try:
            for chunk in payload:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                elif self.client_gone():
                    self.close_connection = True
                    return
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client hung up (kubectl logs -f stopped): the stream ends here
            self.close_connection = True
        finally:
            payload.close()

    def client_gone(self):
        """The client closed its end (a read would give end of file), so a stream to it can stop."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        if isinstance(self.connection, ssl.SSLSocket):
            return self.tls_closed()
        try:
            return not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def tls_closed(self):
        """TLS cannot peek: read what came (nothing is expected during a stream) without waiting."""
        self.connection.setblocking(False)
        try:
            return not self.connection.recv(1)
        except ssl.SSLWantReadError:
            return False
        except OSError:
            return True
        finally:
            self.connection.setblocking(True)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class ApiHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    insecure = True  # the plain port: a request without credentials is the insecure port's (authn.py)

    def __init__(self, address, api, admin):
        super().__init__(address, ApiHandler)
        self.api = api
        self.admin = admin

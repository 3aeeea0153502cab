"""The ServiceAccount admission plugin, as kube-apiserver v1.31 runs it on every pod
create (plugin/pkg/admission/serviceaccount/admission.go):

- a pod without ``serviceAccountName`` gets ``default``;
- a ServiceAccount that does not exist refuses the pod: 403 Forbidden,
  ``pods "NAME" is forbidden: error looking up service account NS/SA:
  serviceaccount "SA" not found`` (NAME is the generateName prefix when the
  pod has no name yet, as admission.NewForbidden names it); ``default`` is
  looked up ten times 100-200 ms apart first, since its controller makes it
  just after the namespace;
- unless ``automountServiceAccountToken: false`` (the pod's, else its
  ServiceAccount's), a projected ``kube-api-access-XXXXX`` volume (the token,
  the namespace's ``kube-root-ca.crt``, the namespace through the downward
  API) is mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount
  in every container and init container that mounts nothing there.
"""

from __future__ import annotations

import random
import time

from .errors import ApiError

DEFAULT = "default"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
# k8s.io/apimachinery pkg/util/rand: the letters of generated names.
LETTERS = "bcdfghjklmnpqrstvwxz2456789"
# pkg/serviceaccount: the bound token's lifetime the admission asks for (1 h 7 s).
TOKEN_SECONDS = 3607


def forbidden(pod, message):
    metadata = pod.get("metadata") or {}
    name = metadata.get("name") or metadata.get("generateName") or "Unknown"
    return ApiError(403, 'pods "%s" is forbidden: %s' % (name, message),
                    details={"name": name, "kind": "pods"})


def service_account(store, namespace, name, wait=True):
    """The ServiceAccount, or None after upstream's look-ups (several only for ``default``)."""
    attempts = 10 if name == DEFAULT and wait else 1
    pause = random.uniform(0.1, 0.2)
    for attempt in range(attempts):
        if attempt:
            time.sleep(pause)
        found = store.get("serviceaccounts", namespace, name)
        if found:
            return found
    return None


def admit_pod(store, pod, wait=True):
    """Mutate ``pod`` as the plugin does, or raise its 403. ``wait=False`` for the lab's own controllers,
    which make every namespace's ``default`` ServiceAccount earlier in the same pass."""
    spec = pod.setdefault("spec", {})
    namespace = pod["metadata"].get("namespace")
    spec["serviceAccountName"] = spec.get("serviceAccountName") or DEFAULT
    spec["serviceAccount"] = spec["serviceAccountName"]  # the deprecated field the API echoes (v1 conversion)
    account = service_account(store, namespace, spec["serviceAccountName"], wait)
    if account is None:
        raise forbidden(pod, 'error looking up service account %s/%s: serviceaccount "%s" not found'
                        % (namespace, spec["serviceAccountName"], spec["serviceAccountName"]))
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        automount = account.get("automountServiceAccountToken")
    if automount is not False:
        mount_token(spec)
    return pod


def mount_token(spec):
    volumes = spec.setdefault("volumes", [])
    name = next((v["name"] for v in volumes if v.get("name", "").startswith(VOLUME_PREFIX)), None)
    new = name is None
    name = name or VOLUME_PREFIX + "".join(random.choice(LETTERS) for _ in range(5))
    needed = False
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        mounts = container.setdefault("volumeMounts", [])
        if not any(m.get("mountPath") == MOUNT_PATH for m in mounts):
            mounts.append({"name": name, "readOnly": True, "mountPath": MOUNT_PATH})
            needed = True
    if new and needed:
        volumes.append({"name": name, "projected": token_volume_source()})
    if not volumes:
        spec.pop("volumes")


def token_volume_source():
    """TokenVolumeSource (admission.go): defaultMode 420 explicitly, as the API stores it."""
    return {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_SECONDS}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}

"""The kubelet's volume plugins, as directories under the lab's state directory
(kubernetes v1.31 pkg/volume: configmap, secret, projected, downwardapi,
hostpath, emptydir; PVCs as local-path folders):

- ConfigMap and Secret volumes project every key, or with ``items`` only the
  listed keys, each at its ``path`` (subdirectories allowed), with ``mode`` or
  ``defaultMode`` (0644); a missing object or item key fails the mount unless
  ``optional: true`` (configmap.go / secret.go, MakePayload);
- projected volumes combine ConfigMap, Secret, downward API and
  ServiceAccount token sources (projected.go); the token is the lab's for the
  pod's ServiceAccount (tools/lab/service_accounts.py);
- a failed mount raises MountFailure with the kubelet's message; the kubelet
  records it (FailedMount), keeps the pod in ContainerCreating and tries again.
"""

from __future__ import annotations

import base64
import os
import posixpath

DEFAULT_MODE = 0o644


class MountFailure(Exception):
    pass


class Volumes:
    def __init__(self, lab, pod, pod_dir):
        self.lab, self.pod, self.dir = lab, pod, pod_dir
        self.namespace = pod["metadata"]["namespace"]

    def materialise(self, volume):
        """The host directory of one volume, filled as the kubelet would fill it."""
        state = self.lab.state_dir
        if "persistentVolumeClaim" in volume:
            path = os.path.join(state, "volumes", "pvc", self.namespace, volume["persistentVolumeClaim"]["claimName"])
        elif "hostPath" in volume:
            path = os.path.join(state, "volumes", "hostpath", volume["hostPath"]["path"].lstrip("/"))
        else:
            path = os.path.join(self.dir, "volumes", volume["name"])
        os.makedirs(path, exist_ok=True)
        try:
            files = self.payload(volume)
        except MountFailure as err:
            raise MountFailure('MountVolume.SetUp failed for volume "%s" : %s' % (volume["name"], err))
        for relative, (data, mode) in files.items():
            target = os.path.join(path, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(data)
            os.chmod(target, mode)
        return path

    def payload(self, volume):
        """{relative path: (bytes, mode)} of a volume that projects data; {} for the others."""
        default = volume.get(_kind(volume), {}).get("defaultMode", DEFAULT_MODE) if _kind(volume) else DEFAULT_MODE
        if "configMap" in volume:
            return self.object_files("configmaps", volume["configMap"], default)
        if "secret" in volume:
            source = dict(volume["secret"], name=volume["secret"].get("secretName"))
            return self.object_files("secrets", source, default)
        if "downwardAPI" in volume:
            return self.downward(volume["downwardAPI"], default)
        if "projected" in volume:
            files = {}
            for source in volume["projected"].get("sources") or []:
                if "configMap" in source:
                    files.update(self.object_files("configmaps", source["configMap"], default))
                elif "secret" in source:
                    files.update(self.object_files("secrets", source["secret"], default))
                elif "downwardAPI" in source:
                    files.update(self.downward(source["downwardAPI"], default))
                elif "serviceAccountToken" in source:
                    account = self.pod["spec"].get("serviceAccountName") or "default"
                    token = self.lab.tokens.token(self.namespace, account)
                    files[_relative(source["serviceAccountToken"]["path"])] = (token.encode(), default)
            return files
        return {}

    def object_files(self, plural, source, default):
        obj = self.lab.store.get(plural, self.namespace, source.get("name"))
        singular = plural[:-1]
        if obj is None:
            if source.get("optional"):
                return {}
            raise MountFailure('%s "%s" not found' % (singular, source.get("name")))
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()} if plural == "configmaps" else \
            {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        items = source.get("items")
        if not items:
            return {_relative(key): (value, default) for key, value in data.items()}
        files = {}
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise MountFailure("configmap references non-existent config key: %s" % item["key"]
                                   if plural == "configmaps" else
                                   "references non-existent secret key: %s" % item["key"])
            files[_relative(item["path"])] = (data[item["key"]], item.get("mode", default))
        return files

    def downward(self, source, default):
        metadata = self.pod["metadata"]
        fields = {"metadata.name": metadata.get("name", ""), "metadata.namespace": self.namespace,
                  "metadata.uid": metadata.get("uid", ""),
                  "metadata.labels": _format_map(metadata.get("labels")),
                  "metadata.annotations": _format_map(metadata.get("annotations"))}
        files = {}
        for item in source.get("items") or []:
            path = (item.get("fieldRef") or {}).get("fieldPath")
            if path not in fields:
                raise MountFailure("unsupported fieldPath: %s" % path)
            files[_relative(item["path"])] = (fields[path].encode(), item.get("mode", default))
        return files


def _kind(volume):
    return next((k for k in ("configMap", "secret", "downwardAPI", "projected") if k in volume), None)


def _relative(path):
    """A projected file's path inside its volume; the API refuses absolute paths and '..' (validation.go)."""
    clean = posixpath.normpath(path)
    if path.startswith("/") or clean == ".." or clean.startswith("../"):
        raise MountFailure("invalid path %r: must be relative and may not contain '..'" % path)
    return clean


def _format_map(values):
    """pkg/fieldpath FormatMap: sorted ``key="value"`` lines."""
    return "\n".join('%s="%s"' % (k, str(v).replace("\\", "\\\\").replace('"', '\\"'))
                     for k, v in sorted((values or {}).items()))

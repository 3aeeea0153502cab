# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters the roles use to build, render and apply Kubernetes objects."""

from __future__ import annotations

import yaml

from ansible_collections.homelab.inference.plugins.plugin_utils import _manifest


class _Dumper(yaml.SafeDumper):
    """Block-style YAML, multi-line strings as literal blocks."""


def _str_presenter(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def _plain(value):
    # Ansible hands filters its own (tagged) subclasses of str, int, dict...;
    # the safe dumper only knows the exact builtins.
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def k8s_documents(objects):
    """Objects as one multi-document YAML string, keys in the order written."""
    return "".join(
        "---\n" + yaml.dump(_plain(obj), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
        for obj in objects
    )


def k8s_checksum(*payloads):
    return _manifest.checksum(*[_plain(p) for p in payloads])


def redact_secrets(objects):
    return _manifest.redact_secrets(objects)


def without_secrets(objects):
    return _manifest.split_secrets(objects)[0]


def only_secrets(objects):
    return _manifest.split_secrets(objects)[1]


def checkable(objects, existing_namespaces):
    return _manifest.by_namespace_presence(objects, existing_namespaces)[0]


def uncheckable(objects, existing_namespaces):
    return _manifest.by_namespace_presence(objects, existing_namespaces)[1]


class FilterModule:
    def filters(self):
        return {
            "k8s_documents": k8s_documents,
            "k8s_checksum": k8s_checksum,
            "redact_secrets": redact_secrets,
            "without_secrets": without_secrets,
            "only_secrets": only_secrets,
            "checkable": checkable,
            "uncheckable": uncheckable,
        }

from __future__ import annotations

import yaml

from ansible_collections.homelab.inference.plugins.filter import manifest
from ansible_collections.homelab.inference.plugins.plugin_utils import _manifest

SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
          "stringData": {"KEY": "sk-canary"}, "data": {"B64": "c2stY2FuYXJ5"}}
CONFIG = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"script": "line1\nline2\n"}}


def test_redaction_replaces_every_secret_value_and_keeps_keys():
    redacted = _manifest.redact_secrets([SECRET, CONFIG])
    assert redacted[0]["stringData"] == {"KEY": _manifest.REDACTED}
    assert redacted[0]["data"] == {"B64": _manifest.REDACTED}
    assert redacted[1] is CONFIG
    assert SECRET["stringData"]["KEY"] == "sk-canary", "the input must not be modified"


def test_split_secrets():
    assert _manifest.split_secrets([SECRET, CONFIG]) == ([CONFIG], [SECRET])


def test_checksum_is_stable_and_order_free():
    assert _manifest.checksum({"a": 1, "b": 2}) == _manifest.checksum({"b": 2, "a": 1})
    assert _manifest.checksum({"a": 1}) != _manifest.checksum({"a": 2})
    assert _manifest.checksum({"a": 1}, "x") != _manifest.checksum({"a": 1}, "y")


def test_documents_round_trip_keep_order_and_literal_blocks():
    text = manifest.k8s_documents([CONFIG, CONFIG])
    assert text.startswith("---\napiVersion: v1\nkind: ConfigMap\n")
    assert "script: |\n    line1\n    line2\n" in text
    assert list(yaml.safe_load_all(text)) == [CONFIG, CONFIG]


def test_documents_accept_subclassed_scalars():
    class Tagged(str):
        pass

    class TaggedInt(int):
        pass

    text = manifest.k8s_documents([{Tagged("kind"): Tagged("Service"), "port": TaggedInt(80)}])
    assert yaml.safe_load(text) == {"kind": "Service", "port": 80}

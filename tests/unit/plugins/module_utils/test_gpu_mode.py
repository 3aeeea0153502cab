from __future__ import annotations

import pytest

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode

MODES = {"ml": {"vllm_model": "vllm-qwen"}, "r1": {"vllm_model": "vllm-r1"}, "gaming": {"vllm_model": None}}


def deployment(replicas=1, label=None, args=None):
    obj = {"metadata": {"labels": {}}, "spec": {"replicas": replicas, "template": {"spec": {"containers": [
        {"name": "vllm", "args": args if args is not None else ["--model", "x", "--served-model-name", "vllm-qwen"]}]}}}}
    if label:
        obj["metadata"]["labels"][_gpu_mode.MODE_LABEL] = label
    return obj


@pytest.mark.parametrize("obj, expected", [
    (None, None),
    ({}, None),
    (deployment(replicas=0, label="ml"), "gaming"),
    (deployment(label="ml"), "ml"),
    (deployment(label="r1", args=["--served-model-name", "vllm-r1"]), "r1"),
    (deployment(label="r1", args=["--served-model-name=vllm-r1"]), "r1"),
    # the label disagrees with what is served (an edit by hand): trust the args
    (deployment(label="r1"), "ml"),
    (deployment(label=None, args=["--served-model-name", "vllm-r1"]), "r1"),
    (deployment(label="turbo", args=["--served-model-name", "unknown"]), None),
    (deployment(label=None, args=[]), None),
    (deployment(label=None, args=["--served-model-name"]), None),
], ids=["missing", "empty", "scaled-to-zero", "labelled-ml", "labelled-r1", "equals-form", "label-contradicted",
        "unlabelled", "unknown", "no-args", "dangling-flag"])
def test_mode_of_deployment(obj, expected):
    assert _gpu_mode.mode_of_deployment(obj, MODES) == expected


def test_zero_replicas_without_a_free_mode_is_unknown():
    modes = {"ml": {"vllm_model": "vllm-qwen"}}
    assert _gpu_mode.mode_of_deployment(deployment(replicas=0), modes) is None

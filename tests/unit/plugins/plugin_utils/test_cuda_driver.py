from __future__ import annotations

import pytest

from ansible_collections.homelab.inference.plugins.plugin_utils import _cuda_driver


@pytest.mark.parametrize("image, repository, tag", [
    ("docker.io/vllm/vllm-openai:v0.11.0", "vllm/vllm-openai", "v0.11.0"),
    ("vllm/vllm-openai:v0.11.0", "vllm/vllm-openai", "v0.11.0"),
    ("index.docker.io/vllm/vllm-openai:v0.11.0", "vllm/vllm-openai", "v0.11.0"),
    ("registry.local:5000/vllm/vllm-openai:v0.11.0", "registry.local:5000/vllm/vllm-openai", "v0.11.0"),
    ("docker.io/vllm/vllm-openai:v0.11.0@sha256:" + "a" * 64, "vllm/vllm-openai", "v0.11.0"),
    ("docker.io/library/busybox:1.36", "busybox", "1.36"),
])
def test_parse_image(image, repository, tag):
    assert _cuda_driver.parse_image(image) == (repository, tag)


@pytest.mark.parametrize("image, message", [
    ("", "the image is empty"),
    ("docker.io/vllm/vllm-openai", "has no tag"),
    ("registry.local:5000/vllm/vllm-openai", "has no tag"),
    ("docker.io/vllm/vllm-openai@sha256:" + "a" * 64, "has no tag"),
    ("docker.io/vllm/vllm-openai:", "has no valid tag"),
])
def test_parse_image_refuses(image, message):
    with pytest.raises(ValueError, match=message):
        _cuda_driver.parse_image(image)


@pytest.mark.parametrize("image", [
    "docker.io/vllm/vllm-openai:v0.11.0",
    "vllm/vllm-openai:v0.11.0",
    "harbor.lan/dockerhub-proxy/vllm/vllm-openai:v0.11.0",
])
def test_requirement_of_an_older_pinned_image(image):
    # vLLM docker/Dockerfile at v0.11.0: ARG CUDA_VERSION=12.8.1; CUDA 12.8 GA needs >= 570.26 (release notes, Table 3).
    assert _cuda_driver.vllm_cuda_requirement(image) == {
        "image": image, "tag": "v0.11.0", "cuda": "12.8.1", "min_driver": "570.26"}


@pytest.mark.parametrize("image", [
    "docker.io/vllm/vllm-openai:v0.32.0",
    "harbor.lan/dockerhub-proxy/vllm/vllm-openai:v0.32.0",
])
def test_requirement_of_the_deployed_image(image):
    # vLLM v0.32.0 is built on CUDA 13.0 (the evidence is in VLLM_TAG_CUDA's comment); CUDA 13.0 GA needs
    # >= 580.65.06 (CUDA 13.0 release notes, Table 3), which the 580 branch runs and 570 does not.
    requirement = _cuda_driver.vllm_cuda_requirement(image)
    assert requirement == {"image": image, "tag": "v0.32.0", "cuda": "13.0.3", "min_driver": "580.65.06"}
    assert _cuda_driver.driver_satisfies("580", requirement["min_driver"])
    assert _cuda_driver.driver_satisfies("580.95.05", requirement["min_driver"])
    assert not _cuda_driver.driver_satisfies("570.124.06", requirement["min_driver"])
    assert not _cuda_driver.driver_satisfies("580.65.05", requirement["min_driver"])


@pytest.mark.parametrize("image, message", [
    ("docker.io/vllm/vllm-openai:v0.99.0", r"no CUDA version recorded for docker.io/vllm/vllm-openai:v0.99.0 "
                                           r"\(known tags: v0.11.0, v0.32.0\); add the tag's ARG CUDA_VERSION"),
    ("docker.io/vllm/vllm-openai:latest", "no CUDA version recorded"),
    ("docker.io/someone/vllm-openai:v0.11.0", "is not vLLM's image"),
    ("docker.io/vllm/vllm-openai", "has no tag"),
])
def test_requirement_refuses_what_is_not_recorded(image, message):
    with pytest.raises(ValueError, match=message):
        _cuda_driver.vllm_cuda_requirement(image)


@pytest.mark.parametrize("cuda, driver", [
    ("12.8", "570.26"), ("12.8.1", "570.26"), ("12.8.0", "570.26"), ("13.0", "580.65.06"), ("13.0.3", "580.65.06"),
])
def test_cuda_min_driver(cuda, driver):
    assert _cuda_driver.cuda_min_driver(cuda) == driver


@pytest.mark.parametrize("cuda, message", [("12.2", "no minimum driver recorded for CUDA 12.2"),
                                           ("twelve", "is not like 12.8"), ("12", "is not like 12.8")])
def test_cuda_min_driver_refuses(cuda, message):
    with pytest.raises(ValueError, match=message):
        _cuda_driver.cuda_min_driver(cuda)


@pytest.mark.parametrize("version, min_driver, ok", [
    ("570.86.15", "570.26", True),       # the part after the branch compares as a number: 86 > 26
    ("570.124.06", "570.26", True),
    ("570.26", "570.26", True),
    ("570.26.0", "570.26", True),
    ("570.9", "570.26", False),
    ("565.77", "570.26", False),
    ("535.309.01", "570.26", False),     # Debian 12's newest (bookworm-security)
    ("580.95.05", "570.26", True),
    (" 580.95.05\n", "570.26", True),    # as nvidia-smi prints it
    ("580", "570.26", True),             # branches: the role pins a branch, not a release
    ("570", "570.26", True),
    ("565", "570.26", False),
    ("535", "570.26", False),
    ("570", "570.124.06", True),
])
def test_driver_satisfies(version, min_driver, ok):
    assert _cuda_driver.driver_satisfies(version, min_driver) is ok


@pytest.mark.parametrize("version", ["", "r570", "570.86.15-1", "570..1", None])
def test_driver_satisfies_refuses_what_is_not_a_version(version):
    with pytest.raises(ValueError, match="is not like 580"):
        _cuda_driver.driver_satisfies(version, "570.26")

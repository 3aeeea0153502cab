"""`site.yml --tags render`: every object the deploy roles would apply, valid
against the official Kubernetes schema, stable, and free of clear-text secrets."""

from __future__ import annotations

import base64
import datetime
import glob
import json
import os
import re

import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode, _gpu_mode_metrics, _gpu_mode_rights
from helpers import ROOT, ansible_playbook

KUBERNETES_VERSION = "1.31.0"
CANARIES = {
    "litellm_master_key": "sk-CANARY-litellm-0c5f1e2a7b3d9e41c8",
    "paperless_ai_api_key": "sk-CANARY-paperless-gateway-5a1b",
    "paperless_ai_paperless_token": "CANARY-paperless-7d41b9",
    "paperless_ai_access_key": "CANARY-paperless-ai-3c2d",
    "litellm_database_url": "postgresql://litellm:CANARY-db-5e6f@db:5432/litellm",
    "litellm_redis_password": "CANARY-redis-91ab",
}
PROVIDER_CANARIES = {"openai": "sk-CANARY-openai-1", "groq": "gsk_CANARY-groq-2", "gemini": "CANARY-gemini-3",
                     "mistral": "CANARY-mistral-4"}
# Every optional object switched on, so that all of them are validated.
OPTIONAL = {"litellm_ingress_host": "litellm.home.example.com", "inference_monitoring": True,
            "inference_monitoring_labels": {"release": "kube-prometheus-stack"},
            "litellm_redis_host": "redis.ml.svc.cluster.local", "gpu_mode_access_enabled": True,
            "gpu_monitoring_dcgm_exporter": True,
            # With a database (litellm_database_url above) clients get LiteLLM's virtual keys, not these.
            "litellm_client_keys": []}
APPS = {"namespaces", "nvidia-device-plugin", "vllm", "ollama", "litellm", "paperless-ai", "gpu-mode-access",
        "gpu-monitoring"}
# Kinds without a schema in the Kubernetes API: checked for their envelope only.
CRD_KINDS = {"IngressRoute", "Certificate", "ServiceMonitor", "PrometheusRule"}


def render(target, *extra):
    args = ["site.yml", "--tags", "render", "-e", "render_dir=%s" % target,
            "-e", json.dumps(dict(CANARIES, litellm_provider_keys=PROVIDER_CANARIES, **OPTIONAL))]
    return ansible_playbook(*args, *extra, check=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    first = tmp_path_factory.mktemp("render1")
    second = tmp_path_factory.mktemp("render2")
    verbose = render(first, "-vvv", "--diff")
    render(second)
    return {"dir": first, "again": second, "output": verbose.stdout + verbose.stderr}


def documents(directory):
    docs = {}
    for path in sorted(glob.glob(os.path.join(str(directory), "*.yaml"))):
        with open(path) as handle:
            docs[os.path.basename(path)[:-5]] = [d for d in yaml.safe_load_all(handle) if d]
    return docs


def all_objects(rendered):
    return [obj for objs in documents(rendered["dir"]).values() for obj in objs]


def find(rendered, kind, name):
    matches = [o for o in all_objects(rendered) if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, "%s/%s rendered %d times" % (kind, name, len(matches))
    return matches[0]


def test_one_file_per_app(rendered):
    assert set(documents(rendered["dir"])) == APPS


def test_render_is_byte_identical_on_a_second_run(rendered):
    for app in APPS:
        with open(os.path.join(str(rendered["dir"]), app + ".yaml"), "rb") as a, \
                open(os.path.join(str(rendered["again"]), app + ".yaml"), "rb") as b:
            assert a.read() == b.read(), app


def test_every_core_object_is_valid_in_strict_mode(rendered):
    objects = [o for o in all_objects(rendered) if o["kind"] not in CRD_KINDS]
    assert len(objects) >= 12
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail("%s/%s is not valid Kubernetes %s: %s" % (obj["kind"], obj["metadata"]["name"],
                                                                  KUBERNETES_VERSION, err.message))


def test_strict_validation_does_reject_an_unknown_field():
    # Guards the test above against a validator that accepts anything.
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_custom_resources_have_their_envelope(rendered):
    for obj in all_objects(rendered):
        if obj["kind"] in CRD_KINDS:
            assert "/" in obj["apiVersion"] and obj["metadata"].get("name") and obj.get("spec"), obj


def test_every_object_carries_the_app_labels(rendered):
    for obj in all_objects(rendered):
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "homelab-inference", obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/name"), obj["metadata"]["name"]


def test_no_clear_text_secret_in_the_render_or_the_verbose_diff_output(rendered):
    needles = set()
    for value in list(CANARIES.values()) + list(PROVIDER_CANARIES.values()):
        needles |= {value, base64.b64encode(value.encode()).decode()}
    for path in glob.glob(os.path.join(str(rendered["dir"]), "*")):
        with open(path) as handle:
            text = handle.read()
        for needle in needles:
            assert needle not in text, "secret leaked into %s" % path
    # Positive control: the verbose output does show the values the roles compute
    # (here a non-secret setting), so a leaked secret would show too.
    assert "CUSTOM_BASE_URL" in rendered["output"]
    for needle in needles:
        assert needle not in rendered["output"], "secret leaked into the -vvv --diff output"


def test_secrets_are_rendered_redacted_with_their_keys(rendered):
    secret = find(rendered, "Secret", "paperless-ai")
    assert secret["stringData"] == {"CUSTOM_API_KEY": "<redacted>", "PAPERLESS_API_TOKEN": "<redacted>",
                                   "API_KEY": "<redacted>"}
    secret = find(rendered, "Secret", "litellm-secrets")
    assert sorted(secret["stringData"]) == ["DATABASE_URL", "GEMINI_API_KEY", "GROQ_API_KEY", "LITELLM_MASTER_KEY",
                                            "MISTRAL_API_KEY", "OPENAI_API_KEY", "REDIS_PASSWORD"]
    assert set(secret["stringData"].values()) == {"<redacted>"}


def test_litellm_config_references_secrets_only_by_environment(rendered):
    data = find(rendered, "ConfigMap", "litellm-config")["data"]
    assert sorted(data) == ["config.yaml", "inference_gateway.json", "inference_gateway.py", "inference_liveness.py"]
    config = yaml.safe_load(data["config.yaml"])
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    assert config["general_settings"]["database_url"] == "os.environ/DATABASE_URL"
    assert config["router_settings"]["redis_password"] == "os.environ/REDIS_PASSWORD"
    keys = {d["model_name"]: d["litellm_params"].get("api_key") for d in config["model_list"]}
    assert keys["openai-gpt4o"] == "os.environ/OPENAI_API_KEY"
    assert keys["groq/llama-3.3-70b-versatile"] == "os.environ/GROQ_API_KEY"


def test_litellm_stays_off_the_gpu_node_and_rolls_on_change(rendered):
    deployment = find(rendered, "Deployment", "litellm")
    pod = deployment["spec"]["template"]["spec"]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"] == [{"key": "nvidia.com/gpu", "operator": "DoesNotExist"}]
    container = pod["containers"][0]
    assert container["image"] == "ghcr.io/berriai/litellm:v1.108.7"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/liveliness"
    assert container["envFrom"] == [{"secretRef": {"name": "litellm-secrets"}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["REDIS_HOST"] == "redis.ml.svc.cluster.local" and env["REDIS_PORT"] == "6379"
    assert find(rendered, "Service", "litellm")["spec"]["ports"][0]["port"] == 4000


def test_litellm_image_matches_the_tested_proxy_version():
    with open(os.path.join(ROOT, "requirements-test.txt")) as handle:
        pinned = [line.split("==")[1].strip() for line in handle if line.startswith("litellm[proxy]==")]
    with open(os.path.join(ROOT, "roles", "litellm", "defaults", "main.yml")) as handle:
        image = yaml.safe_load(handle)["litellm_image"]
    assert pinned and image.endswith(":v" + pinned[0])


def test_litellm_monitoring_objects(rendered):
    monitor = find(rendered, "ServiceMonitor", "litellm")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert find(rendered, "PrometheusRule", "litellm")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics/"
    rules = find(rendered, "PrometheusRule", "litellm")["spec"]["groups"][0]["rules"]
    alerts = [r["alert"] for r in rules]
    assert alerts[:3] == ["VLLMUnavailable", "LiteLLMFallbacksFiring", "LiteLLMFallbacksFailing"]
    assert alerts.count("FreeTierQuotaNearlySpent") == 4, "one per catalog model with a daily quota"
    assert find(rendered, "IngressRoute", "litellm")["spec"]["routes"][0]["match"] == "Host(`litellm.home.example.com`)"
    assert find(rendered, "Certificate", "litellm-tls")["spec"]["issuerRef"]["name"] == "letsencrypt-prod"
    dashboard = find(rendered, "ConfigMap", "litellm-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["litellm.json"])["panels"]


def test_pod_templates_carry_checksums_of_what_they_mount(rendered):
    checked = 0
    for obj in all_objects(rendered):
        template = obj.get("spec", {}).get("template")
        if not template:
            continue
        pod = template["spec"]
        containers = pod.get("containers", []) + pod.get("initContainers", [])
        uses_config = any("configMap" in v for v in pod.get("volumes", [])) or any(
            "configMapRef" in e for c in containers for e in c.get("envFrom", []))
        uses_secret = any("secret" in v for v in pod.get("volumes", [])) or any(
            "secretRef" in e for c in containers for e in c.get("envFrom", []))
        annotations = template["metadata"].get("annotations", {})
        if uses_config:
            assert len(annotations.get("checksum/config", "")) == 64, obj["metadata"]["name"]
            checked += 1
        if uses_secret:
            assert len(annotations.get("checksum/secret", "")) == 64, obj["metadata"]["name"]
            checked += 1
    assert checked >= 2


def test_vllm_deployment_serves_the_default_mode_on_the_gpu(rendered):
    deployment = find(rendered, "Deployment", "vllm-server")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["metadata"]["labels"]["homelab.inference/gpu-mode"] == "ml"
    assert deployment["spec"]["template"]["metadata"]["labels"]["homelab.inference/gpu-mode"] == "ml"
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu": "true"}
    assert {"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in pod["tolerations"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    args = container["args"]
    assert args[:4] == ["--model", "Qwen/Qwen2.5-7B-Instruct-AWQ", "--served-model-name", "vllm-qwen"]
    assert "--reasoning-parser" not in args
    # readiness asks /v1/models for the served name, not just "is the process up"
    assert container["readinessProbe"]["exec"]["command"][-1] == "vllm-qwen"
    assert "/v1/models" in container["readinessProbe"]["exec"]["command"][2]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/root/.cache/huggingface", "/dev/shm"}
    assert find(rendered, "Service", "vllm-api")["spec"]["ports"][0]["port"] == 8000


def test_vllm_r1_mode_renders_reasoning_and_tokenizer(tmp_path):
    render(tmp_path, "-e", "vllm_mode=r1")
    deployment = [d for d in documents(tmp_path)["vllm"] if d["kind"] == "Deployment"][0]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["--model", "casperhansen/deepseek-r1-distill-qwen-7b-awq", "--served-model-name", "vllm-r1"]
    assert args[args.index("--tokenizer") + 1] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert args[args.index("--reasoning-parser") + 1] == "deepseek_r1"
    assert deployment["metadata"]["labels"]["homelab.inference/gpu-mode"] == "r1"


def test_vllm_gpu_free_mode_runs_no_replica(tmp_path):
    render(tmp_path, "-e", "vllm_mode=gaming")
    deployment = [d for d in documents(tmp_path)["vllm"] if d["kind"] == "Deployment"][0]
    assert deployment["spec"]["replicas"] == 0
    assert deployment["metadata"]["labels"]["homelab.inference/gpu-mode"] == "gaming"
    assert deployment["metadata"]["annotations"]["homelab.inference/model"] == ""


def test_ollama_is_pinned_to_its_worker_and_keeps_models_loaded(rendered):
    deployment = find(rendered, "Deployment", "ollama")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "lab-cpu"}
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["OLLAMA_KEEP_ALIVE"] == "-1"
    # Ollama serves the context the catalog declares for its models (the budgets are derived from it).
    assert env["OLLAMA_CONTEXT_LENGTH"] == "4096"
    assert find(rendered, "PersistentVolumeClaim", "ollama")["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert find(rendered, "Service", "ollama")["spec"]["ports"][0]["port"] == 11434


def test_paperless_ai_talks_to_litellm_with_the_chain_head(rendered):
    config = find(rendered, "ConfigMap", "paperless-ai")["data"]
    # The budget fits the smallest context a request for vllm-qwen may meet: ollama-qwen's 4096 tokens
    # (the GPU in another mode); TOKEN_LIMIT in Paperless-AI's 4-characters-a-token estimate.
    assert config == {"AI_PROVIDER": "custom", "CUSTOM_BASE_URL": "http://litellm.ml.svc.cluster.local:4000/v1",
                      "CUSTOM_MODEL": "vllm-qwen", "TOKEN_LIMIT": "3274", "RESPONSE_TOKENS": "1000",
                      "PAPERLESS_API_URL": "http://paperless.docs.svc.cluster.local:8000/api",
                      "PAPERLESS_USERNAME": "paperless-ai"}
    deployment = find(rendered, "Deployment", "paperless-ai")
    init = deployment["spec"]["template"]["spec"]["initContainers"][0]
    managed = [e["value"] for e in init["env"] if e["name"] == "MANAGED_KEYS"][0].split()
    assert managed == ["AI_PROVIDER", "API_KEY", "CUSTOM_API_KEY", "CUSTOM_BASE_URL", "CUSTOM_MODEL",
                       "PAPERLESS_API_TOKEN", "PAPERLESS_API_URL", "PAPERLESS_USERNAME", "RESPONSE_TOKENS",
                       "TOKEN_LIMIT"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == init["image"]
    # probed by its own health endpoint, not by an open port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert container["env"] == [{"name": "PAPERLESS_AI_PORT", "value": "3000"}]


def test_device_plugin_only_on_gpu_nodes(rendered):
    daemonset = find(rendered, "DaemonSet", "nvidia-device-plugin")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu": "true"}
    assert pod["runtimeClassName"] == "nvidia"
    assert any(t.get("key") == "gpu" and t.get("effect") == "NoSchedule" for t in pod["tolerations"])
    assert pod["containers"][0]["image"].startswith("nvcr.io/nvidia/k8s-device-plugin:v")
    assert find(rendered, "RuntimeClass", "nvidia")["handler"] == "nvidia"


def test_namespaces(rendered):
    names = [o["metadata"]["name"] for o in documents(rendered["dir"])["namespaces"]]
    assert names == ["ml", "docs"]


def test_a_relative_render_dir_is_relative_to_where_ansible_playbook_started(tmp_path):
    relative = os.path.relpath(str(tmp_path / "out"), ROOT)
    render(relative)
    assert {name[:-5] for name in os.listdir(str(tmp_path / "out"))} == APPS


def test_gpu_mode_access_grants_the_rights_of_the_modules_calls(rendered):
    objects = documents(rendered["dir"])["gpu-mode-access"]
    assert [o["kind"] for o in objects] == ["ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                            "ClusterRoleBinding"]
    rights = _gpu_mode_rights.rules()
    assert find(rendered, "Role", "gpu-mode")["rules"] == rights["namespaced"][0]["rules"]
    assert find(rendered, "ClusterRole", "homelab-inference-gpu-mode")["rules"] == rights["cluster"]
    account = {"kind": "ServiceAccount", "name": "gpu-mode", "namespace": "ml"}
    for kind, role in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
        binding = next(o for o in objects if o["kind"] == kind)
        assert binding["subjects"] == [account]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role,
                                      "name": next(o for o in objects if o["kind"] == role)["metadata"]["name"]}


def test_gpu_mode_access_is_off_by_default(tmp_path):
    ansible_playbook("site.yml", "--tags", "render", "-e", "render_dir=%s" % tmp_path, check=True)
    assert "gpu-mode-access.yaml" not in os.listdir(str(tmp_path))


def exported_names():
    """Every series name the GPU mode exporter serves, read back from its own text."""
    metrics = _gpu_mode_metrics.SwitchMetrics()
    metrics.observe([])
    record = _gpu_mode.switch_record("ml", "r1", "x", {"total": 1.0}, 0, "GpuModeSwitched")
    metrics.observe([_gpu_mode.switch_event({"kind": "Deployment", "name": "v", "namespace": "ml"}, "GpuModeSwitched",
                                            "m", True, datetime.datetime.now(datetime.timezone.utc), record)])
    text = _gpu_mode_metrics.render(metrics, ["ml"], "ml")
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_gpu_monitoring_objects(rendered):
    objects = documents(rendered["dir"])["gpu-monitoring"]
    kinds = [o["kind"] for o in objects]
    assert kinds[:7] == ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service",
                         "ServiceMonitor"] and "PrometheusRule" in kinds
    assert find(rendered, "Role", "gpu-mode-exporter")["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["vllm-server"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}]
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert find(rendered, kind, "gpu-mode-exporter")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    with open(os.path.join(ROOT, "roles", "gpu_monitoring", "vars", "main.yml")) as handle:
        code = yaml.safe_load(handle)["_gpu_monitoring_code"]
    data = find(rendered, "ConfigMap", "gpu-mode-exporter")["data"]
    assert set(data) == set(code) | {"gpu_mode_exporter.py", "config.json"}
    for name in code:  # the module's own code, unchanged
        with open(os.path.join(ROOT, "plugins", "module_utils", name)) as handle:
            assert data[name] == handle.read().rstrip("\n"), name
    config = json.loads(data["config.json"])
    assert (config["namespace"], config["deployment"], config["container"]) == ("ml", "vllm-server", "vllm")
    assert set(config["modes"]) == {"ml", "r1", "gaming"}
    pod = find(rendered, "Deployment", "gpu-mode-exporter")["spec"]["template"]["spec"]
    items = pod["volumes"][0]["configMap"]["items"]
    assert {i["key"] for i in items} == set(data)
    assert {"key": "_kube_rest.py", "path": "ansible_collections/homelab/inference/plugins/module_utils/_kube_rest.py"} \
        in items
    container = pod["containers"][0]
    assert container["image"].startswith("docker.io/library/python:")
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["serviceAccountName"] == "gpu-mode-exporter"


def test_gpu_monitoring_dashboard_and_alerts_ask_only_for_served_metrics(rendered):
    """A renamed metric would leave a panel or an alert silently empty."""
    served = exported_names()
    dashboard = json.loads(find(rendered, "ConfigMap", "gpu-mode-exporter-dashboard")["data"]["gpu-modes.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = find(rendered, "PrometheusRule", "gpu-mode-exporter")["spec"]["groups"][0]["rules"]
    exprs += [r["expr"] for r in rules]
    asked = {name for expr in exprs for name in re.findall(r"\b(inference_gpu_\w+)", expr)}
    assert asked and asked <= served, asked - served
    assert {"inference_gpu_mode", "inference_gpu_mode_switches_total", "inference_gpu_mode_drained_requests_total",
            "inference_gpu_mode_switch_phase_seconds_bucket"} <= asked
    assert find(rendered, "ConfigMap", "gpu-mode-exporter-dashboard")["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_gpu_monitoring_dcgm_exporter_runs_on_the_gpu_node_beside_vllm(rendered):
    daemonset = find(rendered, "DaemonSet", "dcgm-exporter")
    pod = daemonset["spec"]["template"]["spec"]
    vllm = find(rendered, "Deployment", "vllm-server")["spec"]["template"]["spec"]
    assert daemonset["metadata"]["namespace"] == "kube-system"
    assert (pod["runtimeClassName"], pod["nodeSelector"], pod["tolerations"]) == (
        vllm["runtimeClassName"], vllm["nodeSelector"], vllm["tolerations"])
    container = pod["containers"][0]
    assert "resources" not in container or "nvidia.com/gpu" not in str(container["resources"]), \
        "it must not take the GPU from vLLM"
    assert container["image"].startswith("nvcr.io/nvidia/k8s/dcgm-exporter:")
    assert pod["automountServiceAccountToken"] is False
    monitor = find(rendered, "ServiceMonitor", "dcgm-exporter")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = find(rendered, "Service", "dcgm-exporter")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()

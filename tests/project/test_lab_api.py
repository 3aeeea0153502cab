"""The lab's API emulator against the real Kubernetes API's documented behaviour,
through raw HTTP (status codes and Status bodies) and the real kubernetes client."""

from __future__ import annotations

import os

import pytest
from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException

from lab_fixture import call, start_lab

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "ml"},
      "data": {"a": "1"}}


def deployment(name="web", containers=None):
    containers = containers or [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                                {"name": "sidecar", "image": "side:1"}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "ml"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": containers,
                                           "tolerations": [{"key": "a", "operator": "Exists"}]}}}}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("api"))
    call(lab, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def kube(lab):
    return dynamic.DynamicClient(config.new_client_from_config(os.path.join(lab.state_dir, "kubeconfig")))


def test_discovery_serves_every_group_version_it_advertises(lab):
    status, version = call(lab, "GET", "/version")
    assert status == 200 and version["major"] == "1" and version["minor"] == "31"
    assert call(lab, "GET", "/api")[1]["versions"] == ["v1"]
    groups = call(lab, "GET", "/apis")[1]["groups"]
    for group in groups:
        assert group["preferredVersion"] == group["versions"][0]
        for entry in group["versions"]:
            status, listing = call(lab, "GET", "/apis/%s" % entry["groupVersion"])
            assert status == 200 and listing["kind"] == "APIResourceList", entry
    core = {r["name"]: r for r in call(lab, "GET", "/api/v1")[1]["resources"]}
    assert {"pods", "services", "services/proxy", "configmaps", "secrets", "namespaces", "nodes"} <= set(core)
    apps = {r["name"]: r for r in call(lab, "GET", "/apis/apps/v1")[1]["resources"]}
    assert apps["deployments/scale"]["group"] == "autoscaling" and apps["deployments/scale"]["kind"] == "Scale"


def test_create_get_conflict_and_not_found_answer_with_status_bodies(lab):
    assert call(lab, "POST", "/api/v1/namespaces/ml/configmaps", CM)[0] == 201
    status, body = call(lab, "POST", "/api/v1/namespaces/ml/configmaps", CM)
    assert (status, body["kind"], body["reason"], body["code"]) == (409, "Status", "AlreadyExists", 409)
    assert body["message"] == 'configmaps "settings" already exists'
    status, body = call(lab, "GET", "/api/v1/namespaces/ml/configmaps/missing")
    assert (status, body["reason"], body["message"]) == (404, "NotFound", 'configmaps "missing" not found')
    assert body["details"] == {"name": "missing", "group": "", "kind": "configmaps"}


def test_a_stale_update_gets_409_and_a_no_op_write_keeps_the_resource_version(lab):
    status, current = call(lab, "GET", "/api/v1/namespaces/ml/configmaps/settings")
    stale = dict(current, data={"a": "2"})
    stale["metadata"] = dict(current["metadata"], resourceVersion="1")
    status, body = call(lab, "PUT", "/api/v1/namespaces/ml/configmaps/settings", stale)
    assert (status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    status, same = call(lab, "PUT", "/api/v1/namespaces/ml/configmaps/settings", current)
    assert status == 200 and same["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
    status, changed = call(lab, "PUT", "/api/v1/namespaces/ml/configmaps/settings", dict(current, data={"a": "3"}))
    assert status == 200 and changed["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]


def test_an_invalid_object_is_rejected_with_422(lab):
    bad = deployment("bad")
    bad["spec"]["replicas"] = "two"
    status, body = call(lab, "POST", "/apis/apps/v1/namespaces/ml/deployments", bad)
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["message"].startswith('Deployment "bad" is invalid: spec.replicas')
    assert call(lab, "GET", "/apis/apps/v1/namespaces/ml/deployments/bad")[0] == 404


def test_strategic_merge_patch_merges_containers_by_name_and_replaces_plain_lists(lab):
    assert call(lab, "POST", "/apis/apps/v1/namespaces/ml/deployments", deployment())[0] == 201
    patch = {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]}],
        "tolerations": [{"key": "b", "operator": "Exists"}]}}}}
    status, patched = call(lab, "PATCH", "/apis/apps/v1/namespaces/ml/deployments/web", patch,
                           "application/strategic-merge-patch+json")
    assert status == 200
    containers = {c["name"]: c for c in patched["spec"]["template"]["spec"]["containers"]}
    assert containers["app"]["image"] == "app:2" and containers["sidecar"]["image"] == "side:1"
    assert containers["app"]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert patched["spec"]["template"]["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]
    assert patched["metadata"]["generation"] == 2
    delete = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}
    status, patched = call(lab, "PATCH", "/apis/apps/v1/namespaces/ml/deployments/web", delete,
                           "application/strategic-merge-patch+json")
    assert [c["name"] for c in patched["spec"]["template"]["spec"]["containers"]] == ["app"]


def test_generation_moves_only_on_spec_changes(lab):
    before = call(lab, "GET", "/apis/apps/v1/namespaces/ml/deployments/web")[1]
    status, labelled = call(lab, "PATCH", "/apis/apps/v1/namespaces/ml/deployments/web",
                            {"metadata": {"labels": {"team": "ml"}}}, "application/merge-patch+json")
    assert status == 200 and labelled["metadata"]["generation"] == before["metadata"]["generation"]
    assert labelled["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]


def test_scale_subresource(lab):
    status, scale = call(lab, "GET", "/apis/apps/v1/namespaces/ml/deployments/web/scale")
    assert (status, scale["kind"], scale["apiVersion"], scale["spec"]["replicas"]) == (200, "Scale", "autoscaling/v1",
                                                                                      0)
    status, scale = call(lab, "PATCH", "/apis/apps/v1/namespaces/ml/deployments/web/scale",
                         {"spec": {"replicas": 0}}, "application/merge-patch+json")
    assert status == 200 and scale["status"]["selector"] == "app=web"


def test_json_patch_and_custom_resources(lab):
    status, _ = call(lab, "PATCH", "/api/v1/namespaces/ml/configmaps/settings",
                     [{"op": "add", "path": "/data/b", "value": "x"}, {"op": "remove", "path": "/data/a"}],
                     "application/json-patch+json")
    assert status == 200
    assert call(lab, "GET", "/api/v1/namespaces/ml/configmaps/settings")[1]["data"] == {"b": "x"}
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "r", "namespace": "ml"}, "spec": {"groups": []}}
    assert call(lab, "POST", "/apis/monitoring.coreos.com/v1/namespaces/ml/prometheusrules", rule)[0] == 201
    status, body = call(lab, "PATCH", "/apis/monitoring.coreos.com/v1/namespaces/ml/prometheusrules/r",
                        {"spec": {"groups": [{"name": "g", "rules": []}]}}, "application/strategic-merge-patch+json")
    assert (status, body["reason"]) == (415, "UnsupportedMediaType"), "custom resources take no strategic merge"
    status, merged = call(lab, "PATCH", "/apis/monitoring.coreos.com/v1/namespaces/ml/prometheusrules/r",
                          {"spec": {"groups": [{"name": "g", "rules": []}]}}, "application/merge-patch+json")
    assert status == 200 and merged["metadata"]["generation"] == 2


def test_dry_run_stores_nothing(lab):
    other = dict(CM, metadata={"name": "dry", "namespace": "ml"})
    status, body = call(lab, "POST", "/api/v1/namespaces/ml/configmaps?dryRun=All", other)
    assert status == 201 and body["metadata"]["name"] == "dry"
    assert call(lab, "GET", "/api/v1/namespaces/ml/configmaps/dry")[0] == 404


def test_secrets_store_string_data_as_base64_data(lab):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ml"},
              "stringData": {"KEY": "value"}}
    status, body = call(lab, "POST", "/api/v1/namespaces/ml/secrets", secret)
    assert status == 201 and body["data"] == {"KEY": "dmFsdWU="} and "stringData" not in body


def test_writes_into_a_missing_namespace_get_404(lab):
    status, body = call(lab, "POST", "/api/v1/namespaces/nowhere/configmaps",
                        dict(CM, metadata={"name": "x", "namespace": "nowhere"}))
    assert (status, body["message"]) == (404, 'namespaces "nowhere" not found')


def test_unsupported_requests_fail_loudly_with_501(lab):
    status, body = call(lab, "GET", "/apis/batch/v1/namespaces/ml/jobs")
    assert (status, body["reason"]) == (501, "NotImplemented")
    assert body["message"] == "the lab's API emulator does not support GET /apis/batch/v1/namespaces/ml/jobs"
    assert call(lab, "POST", "/api/v1/namespaces/ml/pods/p/eviction", {})[0] == 501


def test_selectors_through_the_kubernetes_client(lab, kube):
    configmaps = kube.resources.get(api_version="v1", kind="ConfigMap")
    for name, tier in (("one", "gpu"), ("two", "cpu"), ("three", None)):
        labels = {"app": "sel"}
        if tier:
            labels["tier"] = tier
        configmaps.create(body={"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": name, "namespace": "ml", "labels": labels}}, namespace="ml")

    def names(**selector):
        return sorted(i.metadata.name for i in configmaps.get(namespace="ml", **selector).items)

    assert names(label_selector="app=sel,tier=gpu") == ["one"]
    assert names(label_selector="app=sel,tier in (gpu,cpu)") == ["one", "two"]
    assert names(label_selector="app=sel,!tier") == ["three"]
    assert names(label_selector="app=sel,tier notin (gpu)") == ["three", "two"]
    assert names(field_selector="metadata.name=two") == ["two"]


def test_leases_like_the_typed_client_sends_them(lab):
    api = client.CoordinationV1Api(client.ApiClient(client.Configuration(host="http://127.0.0.1:%d" % lab.port)))
    lease = api.create_namespaced_lease("ml", client.V1Lease(metadata=client.V1ObjectMeta(name="lock"),
                                                             spec=client.V1LeaseSpec(holder_identity="a")))
    lease.spec.holder_identity = "b"
    updated = api.replace_namespaced_lease("lock", "ml", lease)
    assert updated.spec.holder_identity == "b"
    lease.spec.holder_identity = "c"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as stale:
        api.replace_namespaced_lease("lock", "ml", lease)
    assert stale.value.status == 409


def test_api_fault_knob_answers_5xx_for_n_requests(lab):
    with lab.api.fault_lock:
        lab.api.faults.update(mode="5xx", remaining=2)
    assert [call(lab, "GET", "/api/v1/namespaces/ml/configmaps")[0] for _ in range(3)] == [500, 500, 200]


@pytest.mark.parametrize("location, expected", [
    ("/setup", "http://127.0.0.1:6443/api/v1/namespaces/docs/services/paperless-ai:3000/proxy/setup"),
    ("/a/b/", "http://127.0.0.1:6443/api/v1/namespaces/docs/services/paperless-ai:3000/proxy/a/b/"),
    ("http://10.42.0.7:3000/login?next=x",
     "http://127.0.0.1:6443/api/v1/namespaces/docs/services/paperless-ai:3000/proxy/login?next=x"),
    ("https://example.org/elsewhere", "https://example.org/elsewhere"),
    ("setup", "setup"),
])
def test_the_service_proxy_keeps_a_backends_redirect_inside_the_proxy(location, expected):
    # kube-apiserver rewrites Location as k8s.io/apimachinery pkg/util/proxy/transport.go does.
    from lab.network import proxied_location
    prefix = "/api/v1/namespaces/docs/services/paperless-ai:3000/proxy"
    assert proxied_location(location, prefix, "127.0.0.1:6443", "10.42.0.7:3000") == expected

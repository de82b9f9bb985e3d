"""Multi-tenancy's pure parts: quantities, quota usage and admission (Kubernetes' message), Secrets holding
API keys, the gateway's key check, the router's key file, and ``odh get`` for the new kinds."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import kubernetes_validate
import pytest

from serving.errors import AdmissionError
from serving.kserve import render
from serving.kserve.quota import (
    Quota,
    check,
    format_quantity,
    parse_quantity,
    pod_usage,
    usage_of,
    validate_quota,
    workloads,
)
from serving.llmd.keyfile import FileKeyRing
from serving.platform.local.listing import resolve_kind, table
from serving.platform.local.platform_config import PlatformConfig, PlatformConfigError
from serving.platform.local.routes import ApiKeys, Backend, Endpoint, RouteTable
from serving.platform.local.tenancy import API_KEY_SECRET_TYPE, admit_resource_quota, admit_secret, gateway_auth_required

KEY_A = "ka-0123456789abcdef0123"
KEY_B = "kb-0123456789abcdef0123"


# -- quantities -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Fraction(1, 2)), ("2", Fraction(2)), (2, Fraction(2)), ("1.5", Fraction(3, 2)), ("512Mi", Fraction(512 << 20)),
    ("1Gi", Fraction(1 << 30)), ("1G", Fraction(10**9)), ("1e3", Fraction(1000)), ("100n", Fraction(1, 10**7)),
])
def test_quantities_parse_exactly(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "5 Gi", "1Zi", None, True, [1], "--1"])
def test_bad_quantities_are_refused_with_an_example(text):
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(("value", "text"), [
    (Fraction(4), "4"), (Fraction(1, 2), "500m"), (Fraction(4 << 30), "4Gi"), (Fraction(1536 << 20), "1536Mi"),
    (Fraction(0), "0"), (Fraction(2100, 1000), "2100m"), (Fraction(3 * 10**9), "3G"),
])
def test_quantities_print_as_the_apiserver_prints_them(value, text):
    assert format_quantity(value) == text
    assert parse_quantity(text) == value


# -- ResourceQuota objects ----------------------------------------------------------------------------------


def _quota(hard, name="compute"):
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"hard": hard}}


def test_a_quota_with_every_supported_key_is_admitted_and_valid_for_kubernetes():
    hard = {"pods": "10", "requests.cpu": "4", "requests.memory": "8Gi", "limits.cpu": "8", "limits.memory": "16Gi",
            "requests.nvidia.com/gpu": "2", "nvidia.com/gpu": "2", "count/inferenceservices.serving.kserve.io": "3",
            "count/llminferenceservices.serving.kserve.io": "1"}
    admitted = admit_resource_quota(_quota(hard))
    kubernetes_validate.validate(admitted, kubernetes_validate.utils.latest_version(), strict=True)
    assert admitted["spec"]["hard"] == hard


@pytest.mark.parametrize(("spec", "field", "says"), [
    ({"hard": {"requests.storage": "1Gi"}}, "spec.hard[requests.storage]", "not a resource this platform counts"),
    ({"hard": {"requests.cpu": "lots"}}, "spec.hard[requests.cpu]", "not a quantity"),
    ({"hard": {"requests.cpu": "-1"}}, "spec.hard[requests.cpu]", "0 or more"),
    ({"hard": {"pods": "1.5"}}, "spec.hard[pods]", "whole units"),
    ({"hard": {}}, "spec.hard", "at least one resource"),
    ({"hard": {"pods": "1"}, "scopes": ["BestEffort"]}, "spec.scopes", "not enforced"),
    ({"hard": {"pods": ["1"]}}, "spec.hard.pods", "not valid"),  # the Kubernetes schema's own answer
])
def test_bad_quotas_are_refused_naming_the_field(spec, field, says):
    obj = _quota({})
    obj["spec"] = spec
    with pytest.raises(AdmissionError) as refused:
        admit_resource_quota(obj)
    assert any(e.field == field and says in e.reason for e in refused.value.errors), refused.value.errors


def test_a_quota_that_is_not_v1_is_refused():
    with pytest.raises(AdmissionError, match="apiVersion"):
        admit_resource_quota({**_quota({"pods": "1"}), "apiVersion": "v2"})


def test_validate_quota_lists_every_problem_at_once():
    errors = validate_quota(_quota({"requests.cpu": "x", "bogus": "1", "pods": "2"}))
    assert {e.field for e in errors} == {"spec.hard[requests.cpu]", "spec.hard[bogus]"}


# -- usage --------------------------------------------------------------------------------------------------


def _isvc(predictor, annotations=None):
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "iris", "namespace": "team-a", "annotations": annotations or {}},
            "spec": {"predictor": predictor}}


def test_a_pod_uses_the_larger_of_its_containers_sum_and_its_largest_init_container():
    spec = {"containers": [{"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                           {"resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "512Mi", "nvidia.com/gpu": "1"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "100Mi"}}}]}
    usage = pod_usage(spec)
    assert usage["requests.cpu"] == 2  # the init container's 2 beats 1 + 0.5
    assert usage["requests.memory"] == (1 << 30) + (512 << 20)  # a request left unset takes its limit
    assert usage["limits.memory"] == 512 << 20
    assert usage["requests.nvidia.com/gpu"] == usage["limits.nvidia.com/gpu"] == 1


def test_a_standard_deployment_counts_at_its_hpa_maximum():
    predictor = {"sklearn": {"storageUri": "s3://m/iris", "resources": {"requests": {"cpu": "2", "memory": "1Gi"},
                                                                          "limits": {"cpu": "2", "memory": "1Gi"}}},
                 "minReplicas": 1, "maxReplicas": 3}
    usage = usage_of(workloads(render(_isvc(predictor)), unbounded=16), "count/inferenceservices.serving.kserve.io")
    assert usage["pods"] == 3
    assert usage["requests.cpu"] == 6 and usage["limits.cpu"] == 6
    assert usage["requests.memory"] == 3 << 30
    assert usage["count/inferenceservices.serving.kserve.io"] == 1


def test_a_serverless_revision_counts_at_max_scale_and_unbounded_at_the_platform_limit():
    serverless = {"serving.kserve.io/deploymentMode": "Serverless"}
    bounded = workloads(render(_isvc({"sklearn": {"storageUri": "s3://m/i"}, "maxReplicas": 4}, serverless)), unbounded=16)
    assert [w.replicas for w in bounded] == [4]
    unbounded = workloads(render(_isvc({"sklearn": {"storageUri": "s3://m/i"}, "minReplicas": 0}, serverless)), unbounded=16)
    assert [w.replicas for w in unbounded] == [16]


def test_a_serverless_canary_counts_both_revisions_that_take_traffic():
    ksvc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "iris-predictor"},
            "spec": {"template": {"metadata": {"annotations": {"autoscaling.knative.dev/max-scale": "2"}},
                                  "spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}},
                     "traffic": [{"revisionName": "iris-predictor-00001", "percent": 80},
                                 {"latestRevision": True, "percent": 20}, {"tag": "old", "revisionName": "x", "percent": 0}]}}
    usage = usage_of(workloads([ksvc], unbounded=16))
    assert usage["pods"] == 4 and usage["requests.cpu"] == 4


def test_a_fixed_deployment_and_an_override_count_their_replicas():
    deployment = {"kind": "Deployment", "metadata": {"name": "engines"},
                  "spec": {"replicas": 2, "template": {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}
    assert usage_of(workloads([deployment], 16))["requests.nvidia.com/gpu"] == 2
    assert usage_of(workloads([deployment], 16, {"engines": 5}))["requests.nvidia.com/gpu"] == 5


# -- admission ----------------------------------------------------------------------------------------------


def test_a_breach_gives_kubernetes_message_naming_the_quota():
    quota = Quota.from_object(_quota({"requests.cpu": "4", "pods": "10"}))
    used = {"requests.cpu": Fraction(2), "pods": Fraction(2)}
    new = {"requests.cpu": Fraction(4), "pods": Fraction(2)}
    assert check([quota], used, {}, new) == [
        "exceeded quota: compute, requested: requests.cpu=4, used: requests.cpu=2, limited: requests.cpu=4"]


def test_several_breached_resources_are_listed_sorted_and_each_quota_apart():
    quotas = [Quota.from_object(_quota({"requests.cpu": "4", "limits.cpu": "4", "pods": "9"})),
              Quota.from_object(_quota({"pods": "3"}, name="small"))]
    messages = check(quotas, {"requests.cpu": Fraction(3), "limits.cpu": Fraction(3), "pods": Fraction(3)}, {},
                     {"requests.cpu": Fraction(2), "limits.cpu": Fraction(2), "pods": Fraction(1)})
    assert messages == [
        "exceeded quota: compute, requested: limits.cpu=2,requests.cpu=2, used: limits.cpu=3,requests.cpu=3, "
        "limited: limits.cpu=4,requests.cpu=4",
        "exceeded quota: small, requested: pods=1, used: pods=3, limited: pods=3"]


def test_an_update_is_charged_only_its_growth_over_its_own_previous_usage():
    quota = Quota.from_object(_quota({"requests.cpu": "4"}))
    old = {"requests.cpu": Fraction(2)}
    used = {"requests.cpu": Fraction(4)}  # old included: the namespace is full
    assert check([quota], used, old, {"requests.cpu": Fraction(2)}) == []  # the same again
    assert check([quota], used, old, {"requests.cpu": Fraction(1)}) == []  # shrinking
    assert check([quota], used, old, {"requests.cpu": Fraction(3)})  # growing past the quota


def test_a_quota_below_current_usage_blocks_growth_only():
    quota = Quota.from_object(_quota({"pods": "1"}))
    used = {"pods": Fraction(5)}
    assert check([quota], used, {"pods": Fraction(5)}, {"pods": Fraction(4)}) == []
    assert check([quota], used, {"pods": Fraction(5)}, {"pods": Fraction(6)})


def test_bare_cpu_and_extended_gpu_keys_are_requests():
    quota = Quota.from_object(_quota({"cpu": "1", "nvidia.com/gpu": "1"}))
    messages = check([quota], {}, {}, {"requests.cpu": Fraction(2), "requests.nvidia.com/gpu": Fraction(2)})
    assert messages == ["exceeded quota: compute, requested: cpu=2,nvidia.com/gpu=2, used: cpu=0,nvidia.com/gpu=0, "
                        "limited: cpu=1,nvidia.com/gpu=1"]


def test_quota_status_has_hard_and_used_under_spec_hard_keys():
    quota = Quota.from_object(_quota({"requests.memory": "4Gi", "pods": "4"}))
    status = quota.status({"requests.memory": Fraction(2 << 30), "pods": Fraction(1), "limits.cpu": Fraction(9)})
    assert status == {"hard": {"pods": "4", "requests.memory": "4Gi"}, "used": {"pods": "1", "requests.memory": "2Gi"}}


# -- Secrets ------------------------------------------------------------------------------------------------


def _secret(**fields):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys", "namespace": "team-a"},
            "type": API_KEY_SECRET_TYPE, **fields}


def test_string_data_is_folded_into_base64_data_as_the_apiserver_does():
    admitted = admit_secret(_secret(stringData={"ci": KEY_A}, data={"ops": base64.b64encode(KEY_B.encode()).decode()}))
    assert "stringData" not in admitted
    assert {k: base64.b64decode(v).decode() for k, v in admitted["data"].items()} == {"ci": KEY_A, "ops": KEY_B}
    kubernetes_validate.validate(admitted, kubernetes_validate.utils.latest_version(), strict=True)


@pytest.mark.parametrize(("fields", "field", "says"), [
    ({"data": {"ci": "%%%"}}, "data[ci]", "not base64"),
    ({"stringData": {"ci": "short"}}, "data[ci]", "16 to 4096"),
    ({"stringData": {"ci": "has spaces in it, sixteen+"}}, "data[ci]", "Bearer token"),
    ({"stringData": {"bad key!": KEY_A}}, "stringData[bad key!]", "data key"),
    ({"stringData": {}}, "data", "at least one key"),
    ({"stringData": {"ci": 5}}, "stringData.ci", "not of type"),  # the Kubernetes schema's own answer
])
def test_bad_api_key_secrets_are_refused_naming_the_field(fields, field, says):
    with pytest.raises(AdmissionError) as refused:
        admit_secret(_secret(**fields))
    assert any(e.field == field and says in e.reason for e in refused.value.errors), refused.value.errors


def test_an_opaque_secret_may_hold_anything():
    admitted = admit_secret({**_secret(stringData={"x": "y"}), "type": "Opaque"})
    assert admitted["data"] == {"x": base64.b64encode(b"y").decode()}


def test_gateway_auth_setting_from_config_file_or_environment(tmp_path):
    assert gateway_auth_required(PlatformConfig.load(tmp_path), {}) is False
    assert gateway_auth_required(PlatformConfig.load(tmp_path), {"ODH_GATEWAY_AUTH": "required"}) is True
    (tmp_path / "config.yaml").write_text("gateway:\n  auth: required\n")
    assert gateway_auth_required(PlatformConfig.load(tmp_path), {}) is True
    (tmp_path / "config.yaml").write_text("gateway:\n  auth: sometimes\n")
    with pytest.raises(PlatformConfigError, match=r"gateway\.auth"):  # config.yaml is read by PlatformConfig
        PlatformConfig.load(tmp_path)
    (tmp_path / "config.yaml").unlink()
    with pytest.raises(AdmissionError, match=r"ODH_GATEWAY_AUTH.*use required or off"):
        gateway_auth_required(PlatformConfig.load(tmp_path), {"ODH_GATEWAY_AUTH": "sometimes"})


# -- the gateway's key check --------------------------------------------------------------------------------


@pytest.fixture
def keys():
    ring = ApiKeys()
    ring.replace({"team-a": [KEY_A], "team-b": [KEY_B]})
    return ring


@pytest.mark.parametrize(("headers", "status"), [
    ([], 401),
    ([(b"Authorization", b"Bearer " + KEY_A.encode())], None),
    ([(b"authorization", b"bearer  " + KEY_A.encode() + b" ")], None),
    ([(b"Authorization", b"Bearer " + KEY_B.encode())], 403),
    ([(b"Authorization", b"Bearer wrong-key-0123456789")], 401),
    ([(b"Authorization", b"Basic " + KEY_A.encode())], 401),
    ([(b"Authorization", b"Bearer")], 401),
    ([(b"Authorization", b"Bearer " + KEY_A.encode() + b" extra")], 401),
    ([(b"Authorization", b"Bearer " + KEY_A.encode())] * 2, 401),
    ([(b"Authorization", b"\xff\x00" * 100)], 401),
])
def test_a_namespace_key_is_required(keys, headers, status):
    refusal = keys.refusal("team-a", headers)
    assert (refusal[0] if refusal else None) == status


def test_replacing_keys_revokes_the_old_ones(keys):
    header = [(b"Authorization", b"Bearer " + KEY_A.encode())]
    keys.replace({"team-b": [KEY_B]})
    assert keys.refusal("team-a", header) == (401, "the API key is not one of namespace team-a")
    assert keys.namespaces() == ["team-b"]


def test_only_marked_routes_carry_the_key_check_and_tag_routes_follow():
    table = RouteTable()
    endpoint = (Endpoint("127.0.0.1", 1),)
    table.set_split("team-a", "iris", [Backend("iris-1", 100, endpoint, tag="latest")])
    table.set("team-a", "open", endpoint)
    table.set_auth([("team-a", "iris")])
    assert table.route("team-a", "iris").auth is table.keys
    assert table.route("team-a", "latest-iris").auth is table.keys
    assert table.route("team-a", "open").auth is None
    table.set_split("team-a", "iris", [Backend("iris-2", 100, endpoint)])  # a new split keeps the mark
    assert table.route("team-a", "iris").auth is table.keys
    table.set_auth([], every_route=True)
    assert table.route("team-a", "open").auth is table.keys
    table.set_auth([])
    assert all(r.auth is None for r in table.routes())


# -- the router's key file ----------------------------------------------------------------------------------


def _write(path: Path, keys: list[dict[str, str]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": keys}))
    os.replace(tmp, path)


def test_the_router_key_file_is_re_read_when_it_changes_and_never_falls_open(tmp_path, monkeypatch):
    monkeypatch.setattr("serving.llmd.keyfile.RELOAD_INTERVAL_S", 0.0)
    path = tmp_path / "keys.json"
    ring = FileKeyRing(path)
    assert ring.check(f"Bearer {KEY_A}") is None  # no file: nobody
    _write(path, [{"key": KEY_A, "tenant": "team-a/ci"}])
    found = ring.check(f"Bearer {KEY_A}")
    assert found is not None and found.tenant == "team-a/ci"
    _write(path, [{"key": KEY_B}])
    assert ring.check(f"Bearer {KEY_A}") is None and ring.check(f"Bearer {KEY_B}") is not None
    path.write_text("{not json")
    assert ring.check(f"Bearer {KEY_B}") is None
    _write(path, [])
    assert ring.check(None) is None and ring.check(f"Bearer {KEY_B}") is None


# -- odh get ------------------------------------------------------------------------------------------------


def test_odh_get_lists_quotas_with_kubectl_columns_and_secrets_without_values():
    info = resolve_kind("quota")
    assert resolve_kind("resourcequotas") is info and info.api_version == "v1"
    quota = {**_quota({"requests.cpu": "4", "limits.cpu": "8", "pods": "10"}),
             "status": {"hard": {"requests.cpu": "4", "limits.cpu": "8", "pods": "10"},
                        "used": {"requests.cpu": "2", "limits.cpu": "2", "pods": "2"}}}
    rendered = table(info, [quota], datetime.now(UTC)).render()
    assert rendered.splitlines()[0].split() == ["NAME", "AGE", "REQUEST", "LIMIT"]
    assert "pods: 2/10, requests.cpu: 2/4" in rendered and "limits.cpu: 2/8" in rendered
    secret = admit_secret(_secret(stringData={"ci": KEY_A}))
    shown = table(resolve_kind("secrets"), [secret], datetime.now(UTC)).render()
    assert API_KEY_SECRET_TYPE in shown and KEY_A not in shown

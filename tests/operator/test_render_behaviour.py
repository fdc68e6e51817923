"""Specific rendering decisions, and the contracts render shares with the server and the reconciler.

- The server container's arguments parse with the server's own ``modelserve serve`` parser.
- The path the server loads is where ``modelserve fetch`` really puts the file (real fetches of
  a local file and of an http:// URL served on 127.0.0.1).
- The HPA's metric names exist in the server's metrics module.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelserve_contract import fetched_model_path
from modelserve_operator.api import parse_quantity
from modelserve_operator.config import DEFAULT_SERVER_GPU_IMAGE, OperatorConfig
from modelserve_operator.render import context_for, render_children
from modelserve_operator.render.deployment import server_args
from modelserve_operator.render.hpa import CUSTOM_METRICS, quantity
from modelserve_operator.render.labels import selector_labels

CONFIG = OperatorConfig(server_image="img/cpu:1", server_gpu_image="img/gpu:1")


def md(spec: dict[str, Any], name: str = "demo", namespace: str = "ml") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": "uid-1"}, "spec": spec}


def pod_spec(out: Any) -> dict[str, Any]:
    return out.find("Deployment")["spec"]["template"]["spec"]


# --------------------------------------------------------------------------- status helpers


def test_url_selector_and_model_name() -> None:
    obj = context_for(md({"model": {"uri": "/m.onnx"}, "service": {"httpPort": 80}}), CONFIG)
    assert obj.url == "http://demo.ml.svc:80/v2/models/demo"
    assert obj.model_name == "demo"
    named = context_for(md({"model": {"uri": "/m.onnx", "name": "resnet50"}}), CONFIG)
    assert named.url == "http://demo.ml.svc:8080/v2/models/resnet50"
    assert named.model_name == "resnet50"
    assert (
        obj.selector_string
        == "app.kubernetes.io/name=modelserve-server,serving.modelserve.io/modeldeployment=demo"
    )


def test_missing_name_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"metadata\.name"):
        render_children({"metadata": {}, "spec": {"model": {"uri": "/m.onnx"}}}, CONFIG)


# --------------------------------------------------------------------------- replicas and optional children


def test_hpa_owns_replicas_when_autoscaled() -> None:
    out = render_children(
        md({"model": {"uri": "/m.onnx"}, "scaling": {"minReplicas": 2, "maxReplicas": 6}}), CONFIG
    )
    assert "replicas" not in out.find("Deployment")["spec"]
    hpa = out.find("HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 6
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"}
    assert out.find("PodDisruptionBudget") is not None


def test_fixed_replicas_set_and_hpa_deleted() -> None:
    out = render_children(
        md({"model": {"uri": "/m.onnx"}, "scaling": {"minReplicas": 3, "maxReplicas": 3}}), CONFIG
    )
    assert out.find("Deployment")["spec"]["replicas"] == 3
    assert out.find("HorizontalPodAutoscaler") is None
    assert ("autoscaling/v2", "HorizontalPodAutoscaler", "demo") in out.delete
    assert out.find("PodDisruptionBudget") is not None  # 3 replicas can be disrupted


def test_single_replica_has_no_pdb() -> None:
    out = render_children(md({"model": {"uri": "/m.onnx"}}), CONFIG)
    assert out.find("Deployment")["spec"]["replicas"] == 1
    assert ("policy/v1", "PodDisruptionBudget", "demo") in out.delete
    assert ("networking.k8s.io/v1", "Ingress", "demo") in out.delete


def test_scaled_to_zero() -> None:
    out = render_children(
        md({"model": {"uri": "/m.onnx"}, "scaling": {"minReplicas": 0, "maxReplicas": 5}}), CONFIG
    )
    assert out.find("Deployment")["spec"]["replicas"] == 0
    assert {kind for _, kind, _ in out.delete} >= {"HorizontalPodAutoscaler", "PodDisruptionBudget"}


def test_podmonitor_only_when_the_api_exists() -> None:
    spec = {"model": {"uri": "/m.onnx"}}
    assert render_children(md(spec), CONFIG).find("PodMonitor") is None
    assert not any(kind == "PodMonitor" for _, kind, _ in render_children(md(spec), CONFIG).delete)
    assert render_children(md(spec), CONFIG, podmonitor_api=True).find("PodMonitor") is not None
    off = render_children(md({**spec, "monitoring": {"podMonitor": False}}), CONFIG, podmonitor_api=True)
    assert ("monitoring.coreos.com/v1", "PodMonitor", "demo") in off.delete


# --------------------------------------------------------------------------- HPA metrics


@pytest.mark.parametrize(
    ("metric", "target", "expected"),
    [
        ("inflight", None, {"type": "Pods", "name": "modelserve_inflight_requests", "averageValue": "4"}),
        ("inflight", 2.5, {"type": "Pods", "name": "modelserve_inflight_requests", "averageValue": "2500m"}),
        ("rps", 100, {"type": "Pods", "name": "modelserve_requests_per_second", "averageValue": "100"}),
        ("gpu", 70, {"type": "Pods", "name": "modelserve_gpu_utilization_ratio", "averageValue": "700m"}),
        ("cpu", 65, {"type": "Resource", "name": "cpu", "averageUtilization": 65}),
    ],
)
def test_hpa_metric(metric: str, target: float | None, expected: dict[str, Any]) -> None:
    scaling: dict[str, Any] = {"maxReplicas": 4, "metric": metric, "scaleDownStabilizationSeconds": 120}
    if target is not None:
        scaling["target"] = target
    hpa = render_children(md({"model": {"uri": "/m.onnx"}, "scaling": scaling}), CONFIG).find(
        "HorizontalPodAutoscaler"
    )
    (m,) = hpa["spec"]["metrics"]
    assert m["type"] == expected["type"]
    if m["type"] == "Pods":
        assert m["pods"]["metric"]["name"] == expected["name"]
        assert m["pods"]["target"] == {"type": "AverageValue", "averageValue": expected["averageValue"]}
    else:
        assert m["resource"] == {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": expected["averageUtilization"]},
        }
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120


def test_custom_metric_names_come_from_the_server() -> None:
    """The HPA asks for the server's own series (rps: the adapter's rate of the _total counter)."""
    from modelserve_server.metrics import METRIC_HELP

    assert CUSTOM_METRICS["inflight"] in METRIC_HELP
    assert CUSTOM_METRICS["gpu"] in METRIC_HELP
    assert CUSTOM_METRICS["rps"].removesuffix("_per_second") + "_total" in METRIC_HELP


@pytest.mark.parametrize(
    ("value", "text"), [(4, "4"), (0.7, "700m"), (2.5, "2500m"), (0.0001, "1m"), (1000, "1000")]
)
def test_quantity(value: float, text: str) -> None:
    assert quantity(value) == text


# --------------------------------------------------------------------------- pod details


def test_server_args_parse_with_the_servers_parser() -> None:
    from modelserve_server.cli import build_parser

    out = render_children(
        md(
            {
                "model": {"uri": "https://h/models/r.onnx", "name": "r"},
                "runtime": {
                    "maxBatchSize": 8,
                    "maxBatchDelayMs": 1.5,
                    "intraOpThreads": 3,
                    "providers": "cuda,cpu",
                },
                "service": {"grpcPort": 0},
            }
        ),
        CONFIG,
    )
    server = pod_spec(out)["containers"][0]
    assert server["command"] == ["modelserve"] and server["args"][0] == "serve"
    args = build_parser().parse_args(server["args"][1:])
    assert args.model == ["r=/models/r.onnx"]
    assert (args.http_port, args.grpc_port, args.max_batch_size) == (8080, 0, 8)
    assert args.max_batch_delay_ms == 1.5 and args.intra_op_threads == 3 and args.providers == "cuda,cpu"
    assert args.drain_seconds == 30 and args.log_format == "json"
    assert [p["name"] for p in server["ports"]] == ["http"]


def test_extra_args_reach_the_server() -> None:
    from modelserve_server.cli import build_parser

    out = render_children(
        md({"model": {"uri": "/m.onnx"}, "runtime": {"args": ["--max-request-bytes", "1024"]}}), CONFIG
    )
    assert build_parser().parse_args(pod_spec(out)["containers"][0]["args"][1:]).max_request_bytes == 1024


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("file_name", ["model.onnx", "my model v2.onnx", "weird#name.onnx"])
def test_model_path_is_where_fetch_puts_it(
    tmp_path: Path, http_root: tuple[str, Path], file_name: str
) -> None:
    """The fetch init container and the server agree on the file (real ``fetch_model`` calls)."""
    from urllib.parse import quote

    from modelserve_server.fetch import fetch_model

    base, www = http_root
    source = tmp_path / "src" / file_name
    source.parent.mkdir()
    source.write_bytes(b"onnx bytes")
    (www / file_name).write_bytes(b"onnx bytes")
    for uri in (source.as_uri(), f"{base}/{quote(file_name)}"):
        dest = tmp_path / f"models-{abs(hash(uri))}"
        landed = fetch_model(uri, dest, copy_local=True)
        expected = fetched_model_path(uri, str(dest))
        assert str(landed) == expected, uri


def test_pvc_mounts_the_claim_read_only() -> None:
    out = render_children(md({"model": {"uri": "pvc://store/bert/model.onnx"}}), CONFIG)
    pod = pod_spec(out)
    assert "initContainers" not in pod
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert models == {"name": "models", "persistentVolumeClaim": {"claimName": "store", "readOnly": True}}
    assert "demo=/models/bert/model.onnx" in pod["containers"][0]["args"]


def test_s3_credentials_and_checksum_reach_the_fetch_container() -> None:
    out = render_children(
        md({"model": {"uri": "s3://b/k/m.onnx", "credentialsSecret": "creds", "sha256": "a" * 64}}), CONFIG
    )
    (fetch,) = pod_spec(out)["initContainers"]
    assert fetch["args"] == ["fetch", "s3://b/k/m.onnx", "/models", "--sha256", "a" * 64, "--check"]
    assert fetch["envFrom"] == [{"secretRef": {"name": "creds"}}]
    assert "envFrom" not in pod_spec(out)["containers"][0], "the server never sees the S3 credentials"


def test_gpu_limits_toleration_and_image() -> None:
    spec = {"model": {"uri": "/m.onnx"}, "resources": {"gpu": 2, "gpuResource": "amd.com/gpu"}}
    spec["scheduling"] = {
        "tolerations": [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    }
    pod = pod_spec(render_children(md(spec), CONFIG))
    server = pod["containers"][0]
    assert server["resources"]["limits"]["amd.com/gpu"] == "2"
    assert pod["tolerations"] == [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert server["image"] == "img/gpu:1" and pod["initContainers"][0]["image"] == "img/gpu:1"


def test_gpu_resource_default_comes_from_the_config() -> None:
    config = OperatorConfig(gpu_resource="nvidia.com/mig-1g.10gb")
    pod = pod_spec(render_children(md({"model": {"uri": "/m.onnx"}, "resources": {"gpu": 1}}), config))
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1"
    assert pod["containers"][0]["image"] == DEFAULT_SERVER_GPU_IMAGE


def test_cpu_pod_has_no_gpu_and_spreads_across_nodes() -> None:
    pod = pod_spec(render_children(md({"model": {"uri": "/m.onnx"}}), CONFIG))
    assert "tolerations" not in pod
    assert pod["containers"][0]["image"] == "img/cpu:1"
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"] == {"matchLabels": selector_labels("demo")}
    off = md({"model": {"uri": "/m.onnx"}, "scheduling": {"topologySpread": {"enabled": False}}})
    assert "topologySpreadConstraints" not in pod_spec(render_children(off, CONFIG))


def test_user_labels_cannot_break_the_selector_and_env_overrides() -> None:
    spec = {
        "model": {"uri": "/m.onnx"},
        "podTemplate": {"labels": {"app.kubernetes.io/name": "evil", "team": "a"}},
        "runtime": {"env": [{"name": "HOME", "value": "/home/x"}, {"name": "EMPTY", "value": ""}]},
    }
    out = render_children(md(spec), CONFIG)
    template = out.find("Deployment")["spec"]["template"]
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "modelserve-server"
    assert template["metadata"]["labels"]["team"] == "a"
    env = template["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == "HOME"] == [{"name": "HOME", "value": "/home/x"}]
    assert {"name": "EMPTY"} in env  # "" is omitted, as the API server stores it


def test_grace_period_and_probes() -> None:
    pod = pod_spec(
        render_children(md({"model": {"uri": "/m.onnx"}, "runtime": {"drainSeconds": 90}}), CONFIG)
    )
    server = pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] > 90 + server["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert "startupProbe" in server
    annotations = render_children(md({"model": {"uri": "/m.onnx"}}), CONFIG).find("Deployment")["spec"][
        "template"
    ]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"


def test_memory_limit_defaults_to_the_request_and_fetch_fits_under_it() -> None:
    spec = {"model": {"uri": "https://h/m.onnx"}, "resources": {"requests": {"memory": "128Mi"}}}
    pod = pod_spec(render_children(md(spec), CONFIG))
    assert pod["containers"][0]["resources"]["limits"] == {"memory": "128Mi"}
    fetch = pod["initContainers"][0]["resources"]
    assert parse_quantity(fetch["requests"]["memory"]) <= parse_quantity(fetch["limits"]["memory"])


@pytest.mark.parametrize("flag", ["--host", "--http-port", "--grpc-port", "--model"])
def test_the_flags_the_pod_depends_on_are_the_operators(flag: str) -> None:
    """(Replaces a test that compared server_args with itself.) What the server parses from the
    rendered arguments is what the pod's ports, probes and volume expect, and ``runtime.args``
    cannot take any of those flags back: ``--host 127.0.0.1`` left the pod never Ready."""
    from pydantic import ValidationError

    from modelserve_server.cli import build_parser

    obj = md({"model": {"uri": "https://h/models/r.onnx"}, "runtime": {"args": ["--max-request-bytes", "9"]}})
    ctx = context_for(obj, CONFIG)
    server = pod_spec(render_children(obj, CONFIG))["containers"][0]
    assert server["args"] == server_args(ctx)
    args = build_parser().parse_args(server["args"][1:])
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert args.host == "0.0.0.0"
    assert (args.http_port, args.grpc_port) == (ports["http"], ports["grpc"])
    assert server["readinessProbe"]["httpGet"]["port"] == "http"
    assert args.model == [f"demo={ctx.model_path}"] and args.max_request_bytes == 9
    mount = next(m for m in server["volumeMounts"] if m["name"] == "models")["mountPath"]
    assert ctx.model_path.startswith(mount + "/")
    assert flag in server["args"]
    for attempt in ([flag, "x"], [f"{flag}=x"], [flag[:5], "x"]):
        with pytest.raises(ValidationError, match=r"runtime\.args must not set"):
            md_spec = {"model": {"uri": "/m.onnx"}, "runtime": {"args": attempt}}
            context_for(md(md_spec), CONFIG)


# --------------------------------------------------------------------------- configuration


def test_config_from_env() -> None:
    config = OperatorConfig.from_env(
        {
            "MODELSERVE_WATCH_NAMESPACES": "a, b,,",
            "MODELSERVE_SERVER_IMAGE": "x/cpu:2",
            "MODELSERVE_SERVER_GPU_IMAGE": "x/gpu:2",
            "MODELSERVE_GPU_RESOURCE": "amd.com/gpu",
            "MODELSERVE_LOG_FORMAT": "text",
            "MODELSERVE_FETCH_IMAGE": "x/fetch:2",
        }
    )
    assert config.watch_namespaces == ("a", "b") and not config.cluster_wide
    assert (config.server_image, config.server_gpu_image, config.fetch_image) == (
        "x/cpu:2",
        "x/gpu:2",
        "x/fetch:2",
    )
    assert config.gpu_resource == "amd.com/gpu" and config.log_format == "text"
    assert OperatorConfig.from_env({}).cluster_wide
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        OperatorConfig.from_env({"MODELSERVE_LOG_FORMAT": "xml"})
    pod = pod_spec(render_children(md({"model": {"uri": "/m.onnx"}}), config))
    assert pod["initContainers"][0]["image"] == "x/fetch:2" and pod["containers"][0]["image"] == "x/cpu:2"
    args = pod["containers"][0]["args"]
    assert args[args.index("--log-format") + 1] == "text"


@pytest.mark.parametrize(
    ("text", "value"), [("500m", 0.5), ("1Gi", 2**30), ("2", 2), (3, 3), ("1.5G", 1.5e9), ("1e3", 1000)]
)
def test_parse_quantity(text: str | int, value: float) -> None:
    assert float(parse_quantity(text)) == value

"""AcceleratorReady: the pure condition, its place in the status, the probe that feeds it, and the GPU
scheduling/rendering rules of issue 13 (taint toleration, threads, engine cache, startup budget).

The real-pod check on CPU is the e2e test; the GPU check is bench/gpu/run.sh step 6 (metadata).
"""

from __future__ import annotations

import asyncio
import datetime
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from modelserve_operator import accelerator as acc
from modelserve_operator.api import parse_spec
from modelserve_operator.config import OperatorConfig
from modelserve_operator.provider_probe import ProviderProbe
from modelserve_operator.render import context_for, render_children
from modelserve_operator.render.common import RenderContext
from modelserve_operator.render.deployment import (
    ENGINE_CACHE_DIR,
    gpu_toleration_keys,
    server_args,
    startup_failure_threshold,
)
from modelserve_operator.status import Transition, compute_status

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def obs(pod: str, provider: str | None, reason: str = "", **kw: Any) -> acc.Observation:
    return acc.Observation(pod, provider, "auto", reason, **kw)


# --------------------------------------------------------------------------------------- pure condition


def test_all_pods_on_tensorrt_is_ready() -> None:
    out = acc.compute([obs("p1", TRT), obs("p2", TRT)], gpu=1, ready_pods=2)
    assert (out.status, out.reason, out.provider) == ("True", "ProviderActive", "tensorrt")
    assert out.message == "2/2 ready pod(s) run TensorrtExecutionProvider"


def test_gpu_pod_on_cpu_fell_back() -> None:
    out = acc.compute(
        [obs("p1", CUDA), obs("p2", CPU, "CUDAExecutionProvider did not load: libcudart")],
        gpu=1,
        ready_pods=2,
    )
    assert (out.status, out.reason) == ("False", "FellBackToCPU")
    assert "1/2" in out.message and "p2" in out.message and "libcudart" in out.message
    assert out.provider == "cpu,cuda"


def test_cpu_pod_on_cpu_is_not_a_fallback() -> None:
    out = acc.compute([obs("p1", CPU)], gpu=0, ready_pods=1)
    assert (out.status, out.reason, out.provider) == ("True", "ProviderActive", "cpu")


def test_tensorrt_to_cuda_fallback_carries_the_reason() -> None:
    reason = "TensorrtExecutionProvider did not load: libnvinfer.so.10: cannot open shared object file"
    out = acc.compute([obs("p1", CUDA, reason), obs("p2", TRT)], gpu=1, ready_pods=2)
    assert (out.status, out.reason) == ("False", "ProviderFallback")
    assert "fell back to cuda" in out.message and "libnvinfer.so.10" in out.message


def test_unreadable_pod_is_unknown_unless_a_fallback_is_known() -> None:
    unread = obs("p2", None, error="GET http://10.0.0.2:8080/v2/models/m: timeout")
    out = acc.compute([obs("p1", TRT), unread], gpu=1, ready_pods=2)
    assert (out.status, out.reason) == ("Unknown", "MetadataUnavailable") and "timeout" in out.message
    fallen = acc.compute([obs("p1", CPU), unread], gpu=1, ready_pods=2)
    assert fallen.status == "False"


def test_pending_probe_and_no_pods_and_not_observed() -> None:
    assert acc.compute([obs("p1", None, pending=True)], gpu=1, ready_pods=1).reason == "Probing"
    assert acc.compute([], gpu=1, ready_pods=0).reason == "NoReadyPods"
    assert acc.compute(None, gpu=1, ready_pods=3).reason == "NotObserved"


def test_probing_after_an_operator_restart_keeps_the_written_condition() -> None:
    written = {
        "provider": "cuda",
        "conditions": [
            {"type": "AcceleratorReady", "status": "False", "reason": "ProviderFallback", "message": "m"}
        ],
    }
    again = acc.compute([obs("p1", None, pending=True)], gpu=1, ready_pods=1, previous=written)
    assert (again.status, again.reason, again.message, again.provider) == (
        "False",
        "ProviderFallback",
        "m",
        "cuda",
    )
    # ... but a real answer replaces it, and with nothing written yet "Probing" is what is known.
    assert acc.compute([obs("p1", TRT)], gpu=1, ready_pods=1, previous=written).reason == "ProviderActive"
    assert acc.compute([obs("p1", None, pending=True)], gpu=1, ready_pods=1, previous={}).reason == "Probing"


def test_parse_metadata_reads_the_server_parameters() -> None:
    meta = {
        "providers": [CUDA, CPU],
        "parameters": {
            "execution_provider": CUDA,
            "requested_providers": "auto",
            "provider_fallback": "true",
            "provider_fallback_reason": "TensorrtExecutionProvider did not load: x",
        },
    }
    got = acc.parse_metadata("p1", meta)
    assert (got.provider, got.requested, got.fell_back) == (CUDA, "auto", True)
    assert acc.parse_metadata("p1", {"providers": [CPU]}).provider == CPU  # an older server
    assert acc.parse_metadata("p1", {}).error


def test_parameter_keys_agree_with_the_server() -> None:
    from modelserve_server.runtime import providers

    assert acc.PARAM_PROVIDER == providers.PARAM_PROVIDER
    assert acc.PARAM_REQUESTED == providers.PARAM_REQUESTED
    assert acc.PARAM_FALLBACK == providers.PARAM_FALLBACK
    assert acc.PARAM_FALLBACK_REASON == providers.PARAM_FALLBACK_REASON
    report = providers.ProviderReport("auto", (CUDA, CPU), "TensorrtExecutionProvider did not load: y")
    parsed = acc.parse_metadata("p", {"parameters": report.parameters()})
    assert (parsed.provider, parsed.fallback_reason) == (CUDA, report.fallback_reason)


# --------------------------------------------------------------------------------------- in the status


SPEC: dict[str, Any] = {"model": {"uri": "file:///models/m.onnx"}, "resources": {"gpu": 1}}


def _md(status: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = {"name": "m", "namespace": "ns", "generation": 1}
    return {"metadata": meta, "spec": SPEC, "status": status or {}}


def _deployment() -> dict[str, Any]:
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1},
    }


def _update(md: dict[str, Any], a: acc.AcceleratorStatus | None) -> Any:
    return compute_status(
        md, context_for(md, OperatorConfig()), deployment=_deployment(), now=NOW, accelerator=a
    )


def test_condition_and_provider_in_status_and_warning_on_first_fallback() -> None:
    fallback = acc.compute([obs("p1", CPU, "CUDAExecutionProvider did not load")], gpu=1, ready_pods=1)
    update = _update(_md(), fallback)
    cond = {c["type"]: c for c in update.status["conditions"]}["AcceleratorReady"]
    assert (cond["status"], cond["reason"]) == ("False", "FellBackToCPU")
    assert update.status["provider"] == "cpu"
    (warning,) = [t for t in update.transitions if t.type == "AcceleratorReady"]
    assert warning.warning  # the reconciler posts it as a Warning event
    # The same observation again writes nothing and posts nothing.
    again = _update({**_md(update.status)}, fallback)
    assert again.patch is None and not [t for t in again.transitions if t.type == "AcceleratorReady"]


def test_recovery_is_not_a_warning_and_stale_provider_is_removed() -> None:
    ok = acc.compute([obs("p1", TRT)], gpu=1, ready_pods=1)
    first = _update(_md(), ok)
    assert not [t for t in first.transitions if t.warning]
    gone = _update(_md(first.status), acc.compute([], gpu=1, ready_pods=0))
    assert gone.patch is not None and gone.patch["provider"] is None  # merge patch deletes it
    assert not Transition("AcceleratorReady", "True", "ProviderActive", "").warning


def test_without_observation_the_status_is_as_before() -> None:
    update = _update(_md(), None)
    assert "provider" not in update.status
    assert [c["type"] for c in update.status["conditions"]] == ["Ready", "Progressing", "Degraded"]


# --------------------------------------------------------------------------------------- the probe


def _pod(name: str, uid: str, restarts: int = 0, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": uid},
        "status": {
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": str(ready)}],
            "containerStatuses": [{"name": "server", "restartCount": restarts}],
        },
    }


@pytest.fixture
async def metadata_server(unused_tcp_port: int) -> AsyncIterator[tuple[int, list[str]]]:
    hits: list[str] = []

    async def meta(request: web.Request) -> web.Response:
        hits.append(request.match_info["model"])
        return web.json_response(
            {
                "name": "m",
                "providers": [CUDA, CPU],
                "parameters": {
                    "execution_provider": CUDA,
                    "requested_providers": "cuda,cpu",
                    "provider_fallback": "false",
                    "provider_fallback_reason": "",
                },
            }
        )

    app = web.Application()
    app.router.add_get("/v2/models/{model}", meta)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", unused_tcp_port)
    await site.start()
    yield unused_tcp_port, hits
    await runner.cleanup()


async def test_probe_asks_in_the_background_then_caches(metadata_server: tuple[int, list[str]]) -> None:
    port, hits = metadata_server
    probe = ProviderProbe(port=port, timeout=5)
    changed = asyncio.Event()
    pods = [_pod("p1", "u1"), _pod("p2", "u2", ready=False)]
    first = probe.observe(pods, "m", changed.set)
    assert [o.pending for o in first] == [True]  # only the ready pod, not answered yet
    await asyncio.wait_for(changed.wait(), 10)
    second = probe.observe(pods, "m", changed.set)
    assert [(o.pod, o.provider) for o in second] == [("p1", CUDA)]
    probe.observe(pods, "m", changed.set)
    assert hits == ["m"]  # cached: one request for the pod's lifetime
    changed.clear()
    probe.observe([_pod("p1", "u1", restarts=1)], "m", changed.set)  # a restarted server is asked again
    await asyncio.wait_for(changed.wait(), 10)
    assert hits == ["m", "m"]
    await probe.close()


async def test_probe_retry_with_the_same_answer_pokes_nobody(unused_tcp_port: int) -> None:
    probe = ProviderProbe(port=unused_tcp_port, timeout=2, retry=0)  # every observe is a retry
    pokes: list[int] = []
    done = asyncio.Event()

    def poke() -> None:
        pokes.append(1)
        done.set()

    probe.observe([_pod("p1", "u1")], "m", poke)
    await asyncio.wait_for(done.wait(), 10)
    (failed,) = probe.observe([_pod("p1", "u1")], "m", poke)  # starts a retry in the background
    assert not failed.pending  # the last answer stands meanwhile: no Probing flap, no status write
    await asyncio.wait_for(asyncio.gather(*probe._asking.values()), 10)
    assert pokes == [1]  # the retry failed the same way: no reconcile
    await probe.close()


async def test_probe_failure_is_reported_and_retried_later(unused_tcp_port: int) -> None:
    probe = ProviderProbe(port=unused_tcp_port, timeout=2, retry=3600)  # nothing listens there
    changed = asyncio.Event()
    probe.observe([_pod("p1", "u1")], "m", changed.set)
    await asyncio.wait_for(changed.wait(), 10)
    (got,) = probe.observe([_pod("p1", "u1")], "m", changed.set)
    assert got.provider is None and not got.pending and "GET http://127.0.0.1" in got.error
    assert acc.compute([got], gpu=1, ready_pods=1).reason == "MetadataUnavailable"
    await probe.close()


# --------------------------------------------------------------------------------------- rendering


def _ctx(spec: dict[str, Any], config: OperatorConfig | None = None) -> RenderContext:
    return RenderContext(
        "m", "ns", "uid", parse_spec({"model": {"uri": "/m.onnx"}, **spec}), config or OperatorConfig()
    )


def _pod_spec(spec: dict[str, Any], config: OperatorConfig | None = None) -> dict[str, Any]:
    md = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
        "spec": {"model": {"uri": "/m.onnx"}, **spec},
    }
    dep = render_children(md, config or OperatorConfig()).find("Deployment")
    assert dep is not None
    pod: dict[str, Any] = dep["spec"]["template"]["spec"]
    return pod


def test_mig_pod_tolerates_the_gpu_node_taint() -> None:
    pod = _pod_spec({"resources": {"gpu": 1, "gpuResource": "nvidia.com/mig-1g.10gb"}})
    keys = [t["key"] for t in pod["tolerations"]]
    assert keys == ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb"]  # was only the resource name
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1"


def test_taint_key_is_configurable() -> None:
    config = OperatorConfig.from_env({"MODELSERVE_GPU_TAINT_KEY": "gpu"})
    pod = _pod_spec({"resources": {"gpu": 1}}, config)
    assert [t["key"] for t in pod["tolerations"]] == ["gpu", "nvidia.com/gpu"]
    assert gpu_toleration_keys("nvidia.com/gpu", "amd.com/gpu") == ["amd.com/gpu"]
    assert gpu_toleration_keys("nvidia.com/gpu", "nvidia.com/gpu") == ["nvidia.com/gpu"]


@pytest.mark.parametrize(("limit", "threads"), [("2", "2"), ("500m", "1"), ("3500m", "3"), (8, "8")])
def test_intra_op_threads_follow_the_cpu_limit(limit: str | int, threads: str) -> None:
    args = server_args(_ctx({"resources": {"limits": {"cpu": limit}, "requests": {"cpu": "100m"}}}))
    assert args[args.index("--intra-op-threads") + 1] == threads


def test_explicit_threads_win_and_no_limit_leaves_it_to_the_server() -> None:
    args = server_args(_ctx({"runtime": {"intraOpThreads": 4}, "resources": {"limits": {"cpu": "2"}}}))
    assert args[args.index("--intra-op-threads") + 1] == "4"
    assert "--intra-op-threads" not in server_args(_ctx({}))


def test_accelerator_options_reach_the_server_flags() -> None:
    spec = {
        "resources": {"gpu": 1},
        "runtime": {
            "accelerator": {
                "fp16": True,
                "int8": True,
                "gpuMemLimit": "8Gi",
                "arenaStrategy": "SameAsRequested",
                "dynamicDims": {"seq": 128},
            }
        },
    }
    args = server_args(_ctx(spec))
    tail = args[args.index("--trt-cache-dir") :]
    assert tail == [
        "--trt-cache-dir",
        ENGINE_CACHE_DIR,
        "--trt-fp16",
        "--trt-int8",
        "--trt-dim",
        "seq=128",
        "--cuda-mem-limit",
        str(8 << 30),
        "--cuda-arena-strategy",
        "same-as-requested",
    ]
    from modelserve_server.cli import build_parser  # the server accepts exactly these

    parsed = build_parser().parse_args(args[1:])
    assert parsed.trt_fp16 and parsed.trt_dim == [("seq", 128)] and parsed.cuda_mem_limit == 8 << 30
    assert "--trt-cache-dir" not in server_args(_ctx({"runtime": {"accelerator": {"fp16": True}}}))  # CPU pod


def test_engine_cache_is_an_empty_dir_or_the_named_claim() -> None:
    pod = _pod_spec({"resources": {"gpu": 1}})
    (vol,) = [v for v in pod["volumes"] if v["name"] == "engine-cache"]
    assert vol == {"name": "engine-cache", "emptyDir": {"sizeLimit": "4Gi"}}
    assert {"name": "engine-cache", "mountPath": ENGINE_CACHE_DIR} in pod["containers"][0]["volumeMounts"]
    pvc = _pod_spec(
        {"resources": {"gpu": 1}, "runtime": {"accelerator": {"engineCache": {"claimName": "engines"}}}}
    )
    (vol,) = [v for v in pvc["volumes"] if v["name"] == "engine-cache"]
    assert vol == {"name": "engine-cache", "persistentVolumeClaim": {"claimName": "engines"}}
    assert not [v for v in _pod_spec({})["volumes"] if v["name"] == "engine-cache"]


def test_startup_budget_follows_the_engine_build() -> None:
    assert startup_failure_threshold(_ctx({})) == 180
    assert (
        startup_failure_threshold(_ctx({"resources": {"gpu": 1}, "runtime": {"providers": "cuda,cpu"}}))
        == 180
    )
    trt = _ctx({"resources": {"gpu": 1}, "runtime": {"accelerator": {"engineBuildSeconds": 1200}}})
    assert startup_failure_threshold(trt) == math.ceil((900 + 1200) / 5)
    pod = _pod_spec({"resources": {"gpu": 1}, "runtime": {"providers": "tensorrt,cuda,cpu"}})
    assert pod["containers"][0]["startupProbe"]["failureThreshold"] == 360

"""The GPU path's pure parts, on CPU: cgroup CPU limits, TensorRT cache keys and profiles, provider
option plumbing, and the provider report the model metadata carries.

What needs a real GPU (engines actually built and reused, CUDA options honoured, a real TensorRT
fallback) is measured by bench/gpu/run.sh; these tests pin down what the server *asks* ONNX Runtime for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import onnxruntime as ort
import pytest
from serverlib import RunningServer, build_mlp

from modelserve_server.cli import build_parser
from modelserve_server.runtime import cgroup, tensorrt
from modelserve_server.runtime.options import GpuOptions, cuda_provider_options
from modelserve_server.runtime.providers import (
    CPU,
    CUDA,
    NOT_IN_BUILD,
    PARAM_FALLBACK,
    PARAM_FALLBACK_REASON,
    PARAM_PROVIDER,
    PARAM_PROVIDERS,
    PARAM_REQUESTED,
    TENSORRT,
    ProviderPlan,
    probe_provider_library,
    provider_report,
    resolve_providers,
)
from modelserve_server.runtime.session import ModelSession

# --------------------------------------------------------------------------------------- cgroup


def _v2(tmp_path: Path, files: dict[str, str], proc: str = "0::/\n") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory\n")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (tmp_path / "proc-cgroup").write_text(proc)
    return root, tmp_path / "proc-cgroup"


def test_cgroup_v2_quota_in_namespace_root(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, {"cpu.max": "200000 100000\n"})
    assert cgroup.cpu_limit(root, proc) == 2.0
    assert cgroup.threads_for_limit(cgroup.cpu_limit(root, proc), 64) == 2


def test_cgroup_v2_unlimited_is_none(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, {"cpu.max": "max 100000\n"})
    assert cgroup.cpu_limit(root, proc) is None
    assert cgroup.threads_for_limit(None, 64) == 0  # ONNX Runtime decides


def test_cgroup_v2_nested_path_takes_the_tightest_ancestor(tmp_path: Path) -> None:
    root, proc = _v2(
        tmp_path,
        {
            "cpu.max": "max 100000",
            "kubepods/cpu.max": "400000 100000",
            "kubepods/pod1/ctr/cpu.max": "max 100000",
        },
        proc="0::/kubepods/pod1/ctr\n",
    )
    assert cgroup.cpu_limit(root, proc) == 4.0


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    cpu = root / "cpu,cpuacct"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("150000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("12:memory:/\n4:cpu,cpuacct:/\n")
    assert cgroup.cpu_limit(root, proc) == 1.5
    assert cgroup.threads_for_limit(1.5, 64) == 1


def test_cgroup_v1_no_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    cpu = root / "cpu"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("3:cpu:/\n")
    assert cgroup.cpu_limit(root, proc) is None


def test_cgroup_missing_files_mean_no_limit(tmp_path: Path) -> None:
    assert cgroup.cpu_limit(tmp_path / "nothing", tmp_path / "no-proc") is None


def test_threads_for_limit_rules() -> None:
    assert cgroup.threads_for_limit(0.5, 64) == 1  # at least one thread
    assert cgroup.threads_for_limit(2.0, 64) == 2  # a cpu: 2 pod on a 64-core node
    assert cgroup.threads_for_limit(8.0, 4) == 4  # never more than the CPUs this process may use
    assert cgroup.parse_cpu_max("50000 100000") == 0.5
    assert cgroup.parse_proc_cgroup("0::/a/b\n") == ("/a/b", None)


def test_cli_threads_default_reads_cgroup(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, {"cpu.max": "300000 100000"})
    assert cgroup.default_intra_op_threads(root, proc) == min(3, len(os.sched_getaffinity(0)))


# --------------------------------------------------------------------------------------- TensorRT


IDENTITY = tensorrt.CacheIdentity("ab" * 32, "NVIDIA H200", "1.31.1", "10.13.3")
PROFILE = ("x:1x64", "x:32x64", "x:32x64")


def test_cache_key_has_every_component() -> None:
    key = tensorrt.cache_key(IDENTITY, GpuOptions(), PROFILE)
    sha, gpu, leaf = key.split("/")
    assert sha == "ab" * 32
    assert gpu == "nvidia-h200"
    assert leaf.startswith("ort-1.31.1_trt-10.13.3_fp32_")


@pytest.mark.parametrize(
    "other",
    [
        (tensorrt.CacheIdentity("cd" * 32, "NVIDIA H200", "1.31.1", "10.13.3"), GpuOptions(), PROFILE),
        (
            tensorrt.CacheIdentity("ab" * 32, "NVIDIA H200 MIG 1g.18gb", "1.31.1", "10.13.3"),
            GpuOptions(),
            PROFILE,
        ),
        (tensorrt.CacheIdentity("ab" * 32, "NVIDIA H200", "1.32.0", "10.13.3"), GpuOptions(), PROFILE),
        (tensorrt.CacheIdentity("ab" * 32, "NVIDIA H200", "1.31.1", "10.14.1"), GpuOptions(), PROFILE),
        (IDENTITY, GpuOptions(trt_fp16=True), PROFILE),
        (IDENTITY, GpuOptions(trt_int8=True), PROFILE),
        (IDENTITY, GpuOptions(), ("x:1x64", "x:64x64", "x:64x64")),
        (IDENTITY, GpuOptions(), None),
    ],
)
def test_cache_key_changes_with_each_component(
    other: tuple[tensorrt.CacheIdentity, GpuOptions, tuple[str, str, str] | None],
) -> None:
    assert tensorrt.cache_key(*other) != tensorrt.cache_key(IDENTITY, GpuOptions(), PROFILE)


def test_cache_key_is_stable() -> None:
    assert tensorrt.cache_key(IDENTITY, GpuOptions(), PROFILE) == tensorrt.cache_key(
        IDENTITY, GpuOptions(), PROFILE
    )


def test_profile_batch_dimension_spans_one_to_max_batch() -> None:
    shapes = tensorrt.profile_shapes([("input", ["batch", 3, 224, 224])], GpuOptions(max_batch_size=16))
    assert shapes == ("input:1x3x224x224", "input:16x3x224x224", "input:16x3x224x224")


def test_profile_uses_declared_dims_for_other_dynamic_dims() -> None:
    opts = GpuOptions(max_batch_size=8, trt_dims=(("seq", 128),))
    shapes = tensorrt.profile_shapes([("ids", ["N", "seq"]), ("mask", [None, "seq"])], opts)
    assert shapes == ("ids:1x128,mask:1x128", "ids:8x128,mask:8x128", "ids:8x128,mask:8x128")


def test_profile_is_none_when_a_dynamic_dim_is_undeclared() -> None:
    assert tensorrt.profile_shapes([("ids", ["N", "seq"])], GpuOptions()) is None


def test_profile_static_shapes_stay() -> None:
    assert tensorrt.profile_shapes([("x", [4, 8])], GpuOptions()) == ("x:4x8", "x:4x8", "x:4x8")


def test_tensorrt_options_plumbing(tmp_path: Path) -> None:
    opts = tensorrt.tensorrt_provider_options(GpuOptions(trt_fp16=True, trt_int8=True), 0, tmp_path, PROFILE)
    assert opts["trt_engine_cache_enable"] is True and opts["trt_timing_cache_enable"] is True
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(tmp_path)
    assert opts["trt_fp16_enable"] is True and opts["trt_int8_enable"] is True
    assert (
        opts["trt_profile_min_shapes"],
        opts["trt_profile_opt_shapes"],
        opts["trt_profile_max_shapes"],
    ) == PROFILE
    plain = tensorrt.tensorrt_provider_options(GpuOptions(), 0, None, None)
    assert plain == {"device_id": 0}  # FP16/INT8 are opt-in, no cache unless asked for


def test_prepare_creates_the_keyed_cache_dir(tmp_path: Path) -> None:
    model = build_mlp(tmp_path / "mlp.onnx")
    setup = tensorrt.prepare(
        model, GpuOptions(trt_cache_dir=tmp_path / "cache", max_batch_size=4), 0, "mlp/1"
    )
    assert setup.profile == ("x:1x64", "x:4x64", "x:4x64")
    assert setup.cache_dir is not None and setup.cache_dir.is_dir()
    rel = setup.cache_dir.relative_to(tmp_path / "cache").parts
    assert rel[0] == tensorrt.file_sha256(model)
    assert rel[2].startswith(f"ort-{ort.__version__}_trt-")
    assert setup.provider_options["trt_engine_cache_path"] == str(setup.cache_dir)


def test_cuda_options_plumbing() -> None:
    assert cuda_provider_options(GpuOptions(), 0) == {
        "device_id": 0,
        "arena_extend_strategy": "kNextPowerOfTwo",
    }
    opts = cuda_provider_options(
        GpuOptions(cuda_mem_limit=2 << 30, cuda_arena_strategy="same-as-requested"), 0
    )
    assert opts == {"device_id": 0, "gpu_mem_limit": 2 << 30, "arena_extend_strategy": "kSameAsRequested"}


def test_plan_hands_options_to_each_provider() -> None:
    gpu = GpuOptions(cuda_mem_limit=1 << 30)
    plan = resolve_providers("tensorrt,cuda,cpu", available=[TENSORRT, CUDA, CPU], gpu=gpu)
    providers = plan.session_providers({"trt_fp16_enable": True})
    assert providers[0] == (TENSORRT, {"device_id": 0, "trt_fp16_enable": True})
    assert providers[1] == (
        CUDA,
        {"device_id": 0, "gpu_mem_limit": 1 << 30, "arena_extend_strategy": "kNextPowerOfTwo"},
    )
    assert providers[2] == CPU
    assert plan.spec == "tensorrt,cuda,cpu"


def test_cli_parses_gpu_flags(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "--model",
            "m.onnx",
            "--trt-cache-dir",
            str(tmp_path),
            "--trt-fp16",
            "--trt-dim",
            "seq=128",
            "--cuda-mem-limit",
            "1073741824",
            "--cuda-arena-strategy",
            "same-as-requested",
        ]
    )
    assert args.trt_cache_dir == tmp_path and args.trt_fp16 and not args.trt_int8
    assert args.trt_dim == [("seq", 128)]
    assert args.cuda_mem_limit == 1 << 30 and args.cuda_arena_strategy == "same-as-requested"


@pytest.mark.parametrize(
    "bad", [["--trt-dim", "seq"], ["--trt-dim", "seq=0"], ["--cuda-arena-strategy", "x"]]
)
def test_cli_refuses_bad_gpu_flags(bad: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "modelserve_cli.main", "serve", "--model", "m.onnx", *bad],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "error" in out.stderr


# --------------------------------------------------------------------------------------- report


def test_report_auto_on_cpu_build_is_no_fallback() -> None:
    plan = resolve_providers("auto", available=[CPU])
    report = provider_report(plan, [CPU], {})
    assert report.parameters() == {
        PARAM_PROVIDER: CPU,
        PARAM_PROVIDERS: CPU,
        PARAM_REQUESTED: "auto",
        PARAM_FALLBACK: "false",
        PARAM_FALLBACK_REASON: "",
    }
    assert dict(plan.skipped) == {TENSORRT: NOT_IN_BUILD, CUDA: NOT_IN_BUILD}


def test_report_auto_tensorrt_that_did_not_load_is_a_fallback_with_the_loader_message() -> None:
    plan = resolve_providers("auto", available=[TENSORRT, CUDA, CPU])
    report = provider_report(
        plan, [CUDA, CPU], {TENSORRT: "libnvinfer.so.10: cannot open shared object file"}
    )
    params = report.parameters()
    assert params[PARAM_PROVIDER] == CUDA and params[PARAM_FALLBACK] == "true"
    assert "TensorrtExecutionProvider did not load: libnvinfer.so.10" in params[PARAM_FALLBACK_REASON]


def test_report_hidden_gpus_are_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    plan = resolve_providers("auto", available=[CUDA, CPU])
    report = provider_report(plan, [CPU], {})
    assert report.fallback and "CUDA_VISIBLE_DEVICES hides every GPU" in report.fallback_reason


def test_report_all_active_is_no_fallback() -> None:
    plan = resolve_providers("tensorrt,cuda,cpu", available=[TENSORRT, CUDA, CPU])
    assert not provider_report(plan, [TENSORRT, CUDA, CPU], {}).fallback


def test_probe_names_the_missing_library_or_build() -> None:
    if TENSORRT in ort.get_available_providers():
        pytest.skip("this ONNX Runtime build has TensorRT")
    assert probe_provider_library(TENSORRT) != ""  # a CPU build: "not part of this ONNX Runtime build"
    assert probe_provider_library(CPU) == ""


def test_session_reports_its_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_mlp(tmp_path / "mlp.onnx")
    session = ModelSession("mlp", "1", model, resolve_providers("cpu"))
    assert session.report.parameters()[PARAM_PROVIDER] == CPU
    assert session.report.parameters()[PARAM_REQUESTED] == "cpu"
    hidden = ProviderPlan((CPU,), False, "auto", ((CUDA, "CUDA_VISIBLE_DEVICES hides every GPU"),))
    assert ModelSession("mlp", "1", model, hidden).report.fallback


def test_metadata_carries_the_provider_parameters(v2_server: RunningServer) -> None:
    with urllib.request.urlopen(f"{v2_server.url}/v2/models/mlp", timeout=10) as resp:
        meta = json.loads(resp.read())
    assert meta["parameters"][PARAM_PROVIDER] == CPU
    assert meta["parameters"][PARAM_FALLBACK] == "false"
    assert set(meta["parameters"]) == {
        PARAM_PROVIDER,
        PARAM_PROVIDERS,
        PARAM_REQUESTED,
        PARAM_FALLBACK,
        PARAM_FALLBACK_REASON,
    }
    # The OpenAPI document declares what the endpoint returns (schemas.ModelMetadata.parameters).
    with urllib.request.urlopen(f"{v2_server.url}/openapi.json", timeout=10) as resp:
        openapi = json.loads(resp.read())
    assert "parameters" in openapi["components"]["schemas"]["ModelMetadata"]["properties"]
    with urllib.request.urlopen(f"{v2_server.url}/v2/models/mlp/config", timeout=10) as resp:
        config = json.loads(resp.read())
    assert config["parameters"][PARAM_PROVIDER] == {"string_value": CPU}

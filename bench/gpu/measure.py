"""Issue 14's GPU measurement, steps 2-7 (bench/gpu/run.sh does step 1, the install, then calls this).

Why one script run once: a lent GPU machine gives ~15 minutes for everything, starts included, so every
figure must come out of a single prepared run of at most 8 minutes. Each step has its own time box and
its failure is recorded, never fatal: a missing TensorRT must not cost the CUDA figures. Everything is
written under --out: results.json (all figures, the commands, the versions) and summary.md (the
section that goes into bench/RESULTS.md), plus the server logs.

    python bench/gpu/measure.py --out "$OUT"                  # on the GPU machine (run.sh calls this)
    python bench/gpu/measure.py --out /tmp/o --cpu-dry-run    # here: CPU provider, tiny model, short runs

--cpu-dry-run substitutes the CPU provider for CUDA/TensorRT and a width-8 ResNet-50 for the real one, so
the whole path (model generation, in-process loop, server start/stop, load, metadata and metrics checks,
the refused-provider check) runs on a machine without a GPU. Figures from a dry run are not GPU figures.

The in-process runs happen in child processes (`measure.py _inproc ...`), so that a hung TensorRT engine
build is killed by its time box instead of stalling the whole script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
LUA = BENCH / "lua" / "infer.lua"

BATCHES = (1, 8, 32)
CONCURRENCY = (1, 8, 32)
TARGET_RATIO = 0.90  # modelserve / in-process at c=32, same provider (issue 14)
TARGET_WARM_SPEEDUP = 5.0  # cold / warm TensorRT start
GPU_SERIES = ("modelserve_gpu_utilization_ratio", "modelserve_gpu_memory_used_bytes")

#: step -> time box in seconds (GPU run). The sum stays under the 8-minute budget with run.sh's install.
BUDGET_S = {
    "models": 40,
    "inprocess": 150,
    "server": 170,
    "restart": 70,
    "refuse": 40,
}
DRY_BUDGET_S = {"models": 40, "inprocess": 120, "server": 200, "restart": 60, "refuse": 40}


# ------------------------------------------------------------------------------------------ recording
class Record:
    """results.json as it grows; every step stores ok/seconds/error and its figures."""

    def __init__(self, out: Path, dry: bool) -> None:
        self.out = out
        self.data: dict[str, Any] = {
            "dry_run": dry,
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "steps": {},
        }

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        entry: dict[str, Any] = {"ok": False}
        self.data["steps"][name] = entry
        started = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            yield entry
            entry["ok"] = entry.get("ok_override", True)
            entry.pop("ok_override", None)
        except Exception as exc:  # recorded, never fatal
            entry["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            entry["traceback"] = traceback.format_exc()[-3000:]
            print(f"   FAILED: {entry['error']}", flush=True)
        finally:
            entry["seconds"] = round(time.monotonic() - started, 2)
            self.save()

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.data, indent=2, default=str) + "\n")


# ------------------------------------------------------------------------------------------ helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def modelserve_bin() -> list[str]:
    exe = Path(sys.executable).parent / "modelserve"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "modelserve_cli.main"]


def serve_help() -> str:
    out = subprocess.run([*modelserve_bin(), "serve", "--help"], capture_output=True, text=True, timeout=60)
    return out.stdout


def versions() -> dict[str, Any]:
    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
    }
    from importlib import metadata

    for dist in (
        "modelserve",
        "onnxruntime",
        "onnxruntime-gpu",
        "tensorrt-cu13-libs",
        "nvidia-cudnn-cu13",
        "nvidia-cuda-runtime",
        "nvidia-ml-py",
        "numpy",
        "onnx",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            facts[f"pkg:{dist}"] = metadata.version(dist)
    try:
        import onnxruntime as ort

        facts["ort_version"] = ort.__version__
        facts["ort_providers"] = ort.get_available_providers()
        with contextlib.suppress(Exception):
            from onnxruntime.capi import build_and_package_info as info

            facts["ort_cuda_version"] = getattr(info, "cuda_version", None)
    except Exception as exc:
        facts["ort_error"] = str(exc)
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,mig.mode.current",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        facts["gpus"] = out.stdout.strip().splitlines()
    facts["wrk"] = shutil.which("wrk")
    facts["LD_LIBRARY_PATH"] = os.environ.get("LD_LIBRARY_PATH", "")
    return facts


# ------------------------------------------------------------------------------------------ models
def make_models(directory: Path, dry: bool) -> dict[str, dict[str, Any]]:
    import models as bm

    directory.mkdir(parents=True, exist_ok=True)
    made: dict[str, dict[str, Any]] = {}
    for name, build, item in (
        ("resnet50", (lambda: bm.build_resnet50(8 if dry else 64)), (3, 224, 224)),
        ("mlp", bm.build_mlp, (64,)),
    ):
        path = directory / f"{name}.onnx"
        model = build()
        bm.write_model(model, path)
        made[name] = {
            "path": str(path),
            "item_shape": list(item),
            "bytes": path.stat().st_size,
            "gflop_per_item": round(bm.flops_per_item(model) / 1e9, 4),
        }
    return made


# ------------------------------------------------------------------------------------------ in-process
def provider_options(kind: str, cache: Path | None) -> list[Any]:
    """ONNX Runtime providers for an in-process run: cuda | trt-fp32 | trt-fp16 | cpu."""
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": 0})
    if kind == "cuda":
        return [cuda, "CPUExecutionProvider"]
    assert cache is not None
    trt: dict[str, Any] = {
        "device_id": 0,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        "trt_fp16_enable": kind == "trt-fp16",
        "trt_profile_min_shapes": "",
        "trt_profile_opt_shapes": "",
        "trt_profile_max_shapes": "",
    }
    return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]


def inproc_child(args: argparse.Namespace) -> int:
    """`_inproc`: one provider, one model; prints one JSON line with items/s per batch (and build times)."""
    import numpy as np
    import onnxruntime as ort

    item = tuple(json.loads(args.item_shape))
    batches = [int(b) for b in args.batches.split(",")]
    cache = Path(args.cache) if args.cache else None
    opts = provider_options(args.kind, cache)
    if args.kind.startswith("trt"):
        shape = "x".join(str(d) for d in item)
        for key, b in (("min", 1), ("opt", max(batches)), ("max", max(batches))):
            opts[0][1][f"trt_profile_{key}_shapes"] = f"input:{b}x{shape}"
    result: dict[str, Any] = {"kind": args.kind, "rates": {}}

    def session() -> tuple[Any, float, float]:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        t0 = time.perf_counter()
        sess = ort.InferenceSession(args.model, sess_options=so, providers=opts)
        created = time.perf_counter() - t0
        t1 = time.perf_counter()
        sess.run(None, {"input": np.zeros((max(batches), *item), np.float32)})  # TensorRT builds here
        return sess, created, time.perf_counter() - t1

    sess, created, first = session()
    result["active_providers"] = sess.get_providers()
    result["cold_create_s"], result["cold_first_run_s"] = round(created, 3), round(first, 3)
    rng = np.random.default_rng(7)
    for batch in batches:
        feeds = {"input": rng.standard_normal((batch, *item)).astype(np.float32)}
        for _ in range(3):
            sess.run(None, feeds)
        runs, start = 0, time.perf_counter()
        while (now := time.perf_counter()) - start < args.seconds or runs < 5:
            sess.run(None, feeds)
            runs += 1
        result["rates"][str(batch)] = round(runs * batch / (now - start), 1)
    if args.kind.startswith("trt"):
        del sess
        _, created2, first2 = session()  # same cache directory: the engine is deserialised, not built
        result["warm_create_s"], result["warm_first_run_s"] = round(created2, 3), round(first2, 3)
        result["cache_files"] = sorted(p.name for p in cache.iterdir()) if cache else []
    print("INPROC_RESULT " + json.dumps(result), flush=True)
    return 0


def run_inproc(
    kind: str,
    model: dict[str, Any],
    batches: tuple[int, ...],
    seconds: float,
    cache: Path | None,
    timeout: float,
    log: Path,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "_inproc",
        "--kind",
        kind,
        "--model",
        model["path"],
        "--item-shape",
        json.dumps(model["item_shape"]),
        "--batches",
        ",".join(map(str, batches)),
        "--seconds",
        str(seconds),
    ]
    if cache is not None:
        cmd += ["--cache", str(cache)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=max(5.0, timeout))
    except subprocess.TimeoutExpired as exc:
        log.write_text(f"{cmd}\nTIMEOUT after {timeout:.0f}s\n{exc.stdout or ''}\n{exc.stderr or ''}")
        return {"kind": kind, "error": f"timed out after {timeout:.0f}s"}
    log.write_text(f"{cmd}\nrc={out.returncode}\n{out.stdout}\n{out.stderr}")
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("INPROC_RESULT ")), None)
    if out.returncode != 0 or line is None:
        return {"kind": kind, "error": f"rc={out.returncode}: {out.stderr[-600:]}"}
    result: dict[str, Any] = json.loads(line.removeprefix("INPROC_RESULT "))
    result["command"] = " ".join(cmd)
    return result


# ------------------------------------------------------------------------------------------ server
class ServerProc:
    """A `modelserve serve` child: start, wait for Ready (timed), stop with SIGTERM."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.cmd = [
            *modelserve_bin(),
            "serve",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(self.port),
            "--grpc-port",
            "0",
            "--log-format",
            "text",
            *args,
        ]
        self.log = log
        self._fh = log.open("w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def wait_ready(self, timeout: float) -> float:
        """Seconds from start to /v2/health/ready == 200; raises if the process exits or time runs out."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited rc={self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(OSError):
                status, _ = http(self.port, "GET", "/v2/health/ready", timeout=2)
                if status == 200:
                    return time.monotonic() - self.started
            time.sleep(0.05)
        raise TimeoutError(f"not ready after {timeout:.0f}s: {self.tail()}")

    def wait_exit(self, timeout: float) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(timeout=timeout)
        return None

    def tail(self, n: int = 1500) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(40) is None:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()


def binary_body(item_shape: list[int], batch: int = 1) -> tuple[bytes, int]:
    import numpy as np

    x = np.random.default_rng(7).standard_normal((batch, *item_shape)).astype("<f4")
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        },
        separators=(",", ":"),
    ).encode()
    return header + x.tobytes(), len(header)


def batch_stats(port: int, model: str) -> tuple[float, float]:
    _, text = http(port, "GET", "/metrics")
    total = count = 0.0
    for line in text.decode().splitlines():
        m = re.match(r"modelserve_batch_size_(sum|count)\{([^}]*)\}\s+(\S+)", line)
        if m and f'model="{model}"' in m.group(2):
            if m.group(1) == "sum":
                total += float(m.group(3))
            else:
                count += float(m.group(3))
    return total, count


def gpu_series(port: int) -> dict[str, float]:
    _, text = http(port, "GET", "/metrics")
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        for name in GPU_SERIES:
            if line.startswith(name + "{") or line.startswith(name + " "):
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def wrk_load(port: int, model: str, body_file: Path, hlen: int, conc: int, seconds: float) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
    threads = max(1, min(conc, (os.cpu_count() or 2) // 4, 4))
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{conc}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA),
        url,
        "--",
        str(body_file),
        "application/octet-stream",
        str(hlen),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed rc={out.returncode}: {out.stdout[-300:]} {out.stderr[-300:]}")
    r = json.loads(line.removeprefix("WRK_RESULT "))
    errors = sum(int(v) for k, v in r.items() if k.startswith("errors_"))
    return {
        "tool": " ".join(cmd),
        "requests": r["requests"],
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1e3,
        "p99_ms": r["p99_us"] / 1e3,
        "errors": errors,
    }


def python_load(port: int, model: str, body: bytes, hlen: int, conc: int, seconds: float) -> dict[str, Any]:
    """Fallback closed-loop load when wrk is missing: `conc` keep-alive connections, one thread each."""
    import http.client

    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(hlen)}

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                conn.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    with lock:
                        errors[0] += 1
                mine.append(time.perf_counter() - t0)
            except OSError:
                with lock:
                    errors[0] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with lock:
            lat.extend(mine)

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(conc)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - started
    lat.sort()
    pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3) if lat else (lambda q: float("nan"))
    return {
        "tool": f"python closed loop, {conc} threads (wrk not found)",
        "requests": len(lat),
        "rps": len(lat) / elapsed,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "errors": errors[0],
    }


def drive(
    server: ServerProc,
    model: str,
    item_shape: list[int],
    conc: int,
    seconds: float,
    work: Path,
    sample_gpu: bool,
) -> dict[str, Any]:
    body, hlen = binary_body(item_shape)
    body_file = work / f"{model}-binary.body"
    body_file.write_bytes(body)
    status, answer = http(
        server.port,
        "POST",
        f"/v2/models/{model}/infer",
        body,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(hlen)},
    )
    if status != 200:
        raise RuntimeError(f"check request: HTTP {status} {answer[:300]!r}")
    samples: list[dict[str, float]] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(Exception):
                samples.append(gpu_series(server.port))

    thread = threading.Thread(target=sampler, daemon=True)
    if sample_gpu:
        thread.start()
    before = batch_stats(server.port, model)
    try:
        run = (
            wrk_load(server.port, model, body_file, hlen, conc, seconds)
            if shutil.which("wrk")
            else python_load(server.port, model, body, hlen, conc, seconds)
        )
    finally:
        stop.set()
    after = batch_stats(server.port, model)
    if after[1] > before[1]:
        run["mean_batch"] = round((after[0] - before[0]) / (after[1] - before[1]), 2)
    if sample_gpu:
        run["gpu_samples"] = samples
    run["concurrency"] = conc
    return run


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="cmd")
    child = sub.add_parser("_inproc")
    child.add_argument("--kind", required=True)
    child.add_argument("--model", required=True)
    child.add_argument("--item-shape", required=True)
    child.add_argument("--batches", required=True)
    child.add_argument("--seconds", type=float, default=3)
    child.add_argument("--cache", default="")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/.gpu-out")))
    parser.add_argument(
        "--cpu-dry-run", action="store_true", default=os.environ.get("MODELSERVE_GPU_DRY_RUN") == "1"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=float(os.environ.get("MEASURE_BUDGET_S", "440")),
        help="wall-clock budget of steps 2-7 (run.sh passes what the install left)",
    )
    args = parser.parse_args(argv)
    if args.cmd == "_inproc":
        return inproc_child(args)
    return measure(args)


def measure(args: argparse.Namespace) -> int:
    dry: bool = args.cpu_dry_run
    out: Path = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="modelserve-gpu-"))
    rec = Record(out, dry)
    deadline = time.monotonic() + args.budget_s
    budgets = DRY_BUDGET_S if dry else BUDGET_S

    def box(step: str) -> float:
        return max(5.0, min(budgets[step], deadline - time.monotonic()))

    seconds = 1.5 if dry else 3.0
    load_s = 2.0 if dry else 5.0
    # What "cuda" and "tensorrt,cuda,cpu" become in a dry run: the CPU provider, same code path.
    cuda_flag, trt_flag = ("cpu", "cpu") if dry else ("cuda", "tensorrt,cuda,cpu")
    inproc_kinds = ("cpu",) if dry else ("cuda", "trt-fp32", "trt-fp16")
    rec.data["facts"] = versions()
    rec.data["facts"]["serve_help_has_trt_flags"] = "--trt-cache-dir" in serve_help()
    trt_flags = rec.data["facts"]["serve_help_has_trt_flags"]
    rec.save()

    models: dict[str, dict[str, Any]] = {}
    with rec.step("2_models") as e:
        models = make_models(work / "models", dry)
        e["models"] = models

    inproc: dict[str, dict[str, Any]] = {}
    with rec.step("3_inprocess") as e:
        for kind in inproc_kinds:
            left = box("inprocess")
            cache = work / f"inproc-cache-{kind}" if kind.startswith("trt") else None
            if cache is not None:
                cache.mkdir(exist_ok=True)
            inproc[kind] = run_inproc(
                kind,
                models["resnet50"],
                BATCHES,
                seconds,
                cache,
                # CUDA needs ~20 s; the TensorRT kinds share the rest (each builds an engine twice).
                min(45.0, left / 3) if kind == "cuda" else left / max(1, len(inproc_kinds) - len(inproc)),
                out / "logs" / f"inproc-{kind}.log",
            )
            print(f"   {kind}: {inproc[kind].get('rates') or inproc[kind].get('error')}", flush=True)
        e["runs"] = inproc
        if any("error" in r for r in inproc.values()):
            e["ok_override"] = False

    common = [
        "--model",
        f"resnet50={models['resnet50']['path']}",
        "--model",
        f"mlp={models['mlp']['path']}",
        "--max-batch-size",
        "32",
        "--max-batch-delay-ms",
        "2",
    ]
    cache_dir = work / "server-engine-cache"
    servers: dict[str, dict[str, Any]] = {}
    with rec.step("4_6_server") as e:
        for label, flag, ref in (
            ("cuda", cuda_flag, inproc_kinds[0]),
            ("tensorrt", trt_flag, inproc_kinds[1 if len(inproc_kinds) > 1 else 0]),
        ):
            entry: dict[str, Any] = {"providers_flag": flag}
            servers[label] = entry
            extra = ["--trt-cache-dir", str(cache_dir)] if trt_flags else []
            server = ServerProc([*common, "--providers", flag, *extra], out / "logs" / f"server-{label}.log")
            entry["command"] = " ".join(server.cmd)
            try:
                entry["ready_s_cold"] = round(server.wait_ready(box("server")), 2)
                status, meta = http(server.port, "GET", "/v2/models/resnet50")
                entry["metadata"] = json.loads(meta) if status == 200 else {"status": status}
                entry["gpu_series_idle"] = gpu_series(server.port)
                entry["runs"] = []
                for conc in CONCURRENCY:
                    if deadline - time.monotonic() < load_s + 15:
                        entry["runs"].append({"concurrency": conc, "error": "skipped: out of time"})
                        continue
                    try:
                        run = drive(
                            server,
                            "resnet50",
                            models["resnet50"]["item_shape"],
                            conc,
                            load_s,
                            work,
                            sample_gpu=True,
                        )
                        base = inproc.get(ref, {}).get("rates", {}).get(str(conc))
                        if base:
                            run["inprocess_items_s"] = base
                            run["ratio"] = round(run["rps"] / base, 3)
                        entry["runs"].append(run)
                        print(
                            f"   {label} c={conc}: {run['rps']:.1f} req/s p50 {run['p50_ms']:.2f} ms "
                            f"p99 {run['p99_ms']:.2f} ms batch {run.get('mean_batch')} "
                            f"ratio {run.get('ratio')}",
                            flush=True,
                        )
                    except Exception as exc:
                        entry["runs"].append({"concurrency": conc, "error": str(exc)[:500]})
                entry["gpu_series_after"] = gpu_series(server.port)
            except Exception as exc:
                entry["error"] = str(exc)[:1500]
            finally:
                server.stop()
        e["servers"] = servers
        e["nvml"] = nvml_verdict(servers)
        expected = {"cuda": "CPUExecutionProvider" if dry else "CUDAExecutionProvider",
                    "tensorrt": "CPUExecutionProvider" if dry else "TensorrtExecutionProvider"}
        e["provider_as_expected"] = {
            label: (srv.get("metadata", {}).get("parameters") or {}).get("execution_provider")
            == expected[label]
            for label, srv in servers.items()
        }
        e["provider_reported"] = {
            label: (
                s.get("metadata", {}).get("parameters")
                or {"providers": s.get("metadata", {}).get("providers")}
            )
            for label, s in servers.items()
        }
        if any("error" in s or any("error" in r for r in s.get("runs", [])) for s in servers.values()):
            e["ok_override"] = False

    with rec.step("5_restart_warm_cache") as e:
        extra = ["--trt-cache-dir", str(cache_dir)] if trt_flags else []
        server = ServerProc([*common, "--providers", trt_flag, *extra], out / "logs" / "server-restart.log")
        e["command"] = " ".join(server.cmd)
        try:
            e["ready_s_warm"] = round(server.wait_ready(box("restart")), 2)
        finally:
            server.stop()
        cold = servers.get("tensorrt", {}).get("ready_s_cold")
        e["ready_s_cold"] = cold
        if cold and e["ready_s_warm"]:
            e["speedup"] = round(cold / e["ready_s_warm"], 2)
        e["engine_cache_files"] = (
            sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*") if p.is_file())
            if cache_dir.exists()
            else []
        )

    with rec.step("7_refuse_unloadable_provider") as e:
        # TensorRT named explicitly with its libraries hidden: start-up must stop, with a clear message.
        env = {
            "LD_LIBRARY_PATH": ":".join(
                p
                for p in os.environ.get("LD_LIBRARY_PATH", "").split(":")
                if p and "tensorrt" not in p.lower()
            )
        }
        server = ServerProc(
            ["--model", f"mlp={models['mlp']['path']}", "--providers", "tensorrt"],
            out / "logs" / "server-refuse.log",
            env=env,
        )
        e["command"] = "LD_LIBRARY_PATH=<without tensorrt_libs> " + " ".join(server.cmd)
        rc = server.wait_exit(box("refuse"))
        e["exit_code"] = rc
        e["log_tail"] = server.tail(800)
        server.stop()
        e["refused"] = rc not in (None, 0)
        e["clear_message"] = (
            "TensorrtExecutionProvider" in e["log_tail"] and "start-up failed" in e["log_tail"]
        )
        if not (e["refused"] and e["clear_message"]):
            e["ok_override"] = False

    rec.data["targets"] = targets(rec.data)
    rec.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    rec.save()
    (out / "summary.md").write_text(summary(rec.data))
    print((out / "summary.md").read_text())
    shutil.rmtree(work, ignore_errors=True)
    return 0


def nvml_verdict(servers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    present = {}
    moving = {}
    for name in GPU_SERIES:
        seen = [
            s
            for srv in servers.values()
            for r in srv.get("runs", [])
            for s in r.get("gpu_samples", [])
            if name in s
        ]
        present[name] = bool(seen)
        values = {round(s[name], 4) for s in seen}
        moving[name] = len(values) > 1
    return {"present": present, "moving": moving}


def targets(data: dict[str, Any]) -> dict[str, Any]:
    steps = data["steps"]
    out: dict[str, Any] = {}
    for label, srv in steps.get("4_6_server", {}).get("servers", {}).items():
        run = next((r for r in srv.get("runs", []) if r.get("concurrency") == 32 and "ratio" in r), None)
        out[f"ratio_c32_{label}"] = {
            "value": run["ratio"] if run else None,
            "target": TARGET_RATIO,
            "met": bool(run and run["ratio"] >= TARGET_RATIO),
        }
    sp = steps.get("5_restart_warm_cache", {}).get("speedup")
    out["warm_start_speedup"] = {
        "value": sp,
        "target": TARGET_WARM_SPEEDUP,
        "met": bool(sp and sp >= TARGET_WARM_SPEEDUP),
    }
    nv = steps.get("4_6_server", {}).get("nvml", {})
    reported = steps.get("4_6_server", {}).get("provider_as_expected", {})
    out["metadata_reports_the_provider_used"] = {
        "value": reported,
        "met": bool(reported) and all(reported.values()),
    }
    out["nvml_present_and_moving"] = {
        "value": nv,
        "met": bool(nv) and all(nv.get("present", {}).values()) and all(nv.get("moving", {}).values()),
    }
    return out


def _fmt(v: Any, spec: str = ".1f") -> str:
    return format(v, spec) if isinstance(v, int | float) else "-"


def summary(data: dict[str, Any]) -> str:
    f = data.get("facts", {})
    s = data["steps"]
    lines = [
        f"Run {data.get('started')} → {data.get('finished')}; "
        + ("**CPU dry run (no GPU figures)**" if data["dry_run"] else "GPU run"),
        "",
        f"- python {f.get('python')}, nproc {f.get('nproc')}, onnxruntime {f.get('ort_version')} "
        f"(CUDA {f.get('ort_cuda_version')}), providers {f.get('ort_providers')}",
        f"- GPUs: {f.get('gpus')}; TensorRT libs: {f.get('pkg:tensorrt-cu13-libs')}"
        f"; wrk: {f.get('wrk')}",
        "",
    ]
    lines += ["| step | ok | seconds | note |", "|---|---|---|---|"]
    for name, e in s.items():
        lines.append(
            f"| {name} | {'yes' if e.get('ok') else 'NO'} | {e.get('seconds')} | "
            f"{(e.get('error') or '')[:120]} |"
        )
    inp = s.get("3_inprocess", {}).get("runs", {})
    if inp:
        lines += [
            "",
            "In-process ONNX Runtime, items/s (resnet50):",
            "",
            "| provider | b=1 | b=8 | b=32 | cold build s | cached s |",
            "|---|---|---|---|---|---|",
        ]
        for kind, r in inp.items():
            rates = r.get("rates", {})
            lines.append(
                f"| {kind} | {_fmt(rates.get('1'))} | {_fmt(rates.get('8'))} | {_fmt(rates.get('32'))} | "
                f"{_fmt(r.get('cold_first_run_s'), '.2f')} | {_fmt(r.get('warm_first_run_s'), '.2f')} |"
                + (f" {r['error'][:100]}" if "error" in r else "")
            )
    srv = s.get("4_6_server", {}).get("servers", {})
    if srv:
        lines += [
            "",
            "modelserve (binary requests, batch-1 each, closed loop):",
            "",
            "| --providers | c | req/s | p50 ms | p99 ms | mean batch | in-process items/s | ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in srv.values():
            for r in e.get("runs", []):
                lines.append(
                    f"| {e['providers_flag']} | {r.get('concurrency')} | {_fmt(r.get('rps'))} | "
                    f"{_fmt(r.get('p50_ms'), '.2f')} | {_fmt(r.get('p99_ms'), '.2f')} | "
                    f"{_fmt(r.get('mean_batch'), '.2f')} | {_fmt(r.get('inprocess_items_s'))} | "
                    f"{_fmt(r.get('ratio'), '.3f')} |" + (f" {r['error'][:80]}" if "error" in r else "")
                )
        lines += [
            "",
            "Provider the model metadata reports: "
            + json.dumps(s.get("4_6_server", {}).get("provider_reported")),
            "",
            "NVML series: " + json.dumps(s.get("4_6_server", {}).get("nvml")),
        ]
    rs = s.get("5_restart_warm_cache", {})
    lines += [
        "",
        f"Time to Ready with `{servers_flag(srv)}`: cold {rs.get('ready_s_cold')} s, "
        f"warm cache {rs.get('ready_s_warm')} s, speedup {rs.get('speedup')}",
    ]
    rf = s.get("7_refuse_unloadable_provider", {})
    lines += [
        "",
        f"Refused provider: exit code {rf.get('exit_code')}, clear message {rf.get('clear_message')}",
    ]
    lines += ["", "Targets: " + json.dumps(data.get("targets"))]
    return "\n".join(lines) + "\n"


def servers_flag(srv: dict[str, Any]) -> str:
    return str(srv.get("tensorrt", {}).get("providers_flag", "tensorrt,cuda,cpu"))


if __name__ == "__main__":
    sys.exit(main())

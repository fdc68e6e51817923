"""Issues 2 and 12's benchmark: modelserve vs KServe vs in-process ONNX Runtime vs nginx, on this machine.

Why one script: the targets are ratios (modelserve / KServe, modelserve / the in-process limit), and ratios
only mean something when every number comes from the same run, on the same machine, under the same
background load. So this script builds the models (bench/models.py), pre-builds the request bodies, measures
the in-process ONNX Runtime limit with modelserve's session settings, starts KServe (from its own virtualenv,
made here on first use) and modelserve on 127.0.0.1, checks every answer against in-process ONNX Runtime,
starts nginx with a static answer as the HTTP limit line,
drives the servers in turn with `wrk` (closed loop, batch-1 requests, JSON and Triton's binary tensor
extension, concurrency 1/8/32), prints the table and writes the "Server" section of bench/RESULTS.md
(bench/report.py; other sections are kept), with issue 12's target table. CPU use of server (with its worker
processes), wrk and everything else is recorded per run.

    .venv/bin/python bench/run.py            # full run (make bench), ~8 minutes
    .venv/bin/python bench/run.py --quick    # smoke run, ~2 minutes, RESULTS.md untouched unless --write

Where a modelserve target is missed, modelserve is profiled with py-spy (installed in the KServe venv) in
the scenario of that target and the hottest frames go into RESULTS.md beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from models import INPUT_NAME, OUTPUT_NAME, ModelSpec, ensure_models  # noqa: E402
from report import (  # noqa: E402
    Evaluation,
    InProcess,
    Run,
    cpu_table,
    evaluate,
    failures,
    issue12_table,
    nginx_table,
    render_section,
    summarize_profile,
    table,
    write_section,
)
from server_kserve import make_session  # noqa: E402
from server_nginx import make_nginx, nginx_version  # noqa: E402
from server_procs import CpuWindow, Server, batch_stats, check_answer, free_port, request  # noqa: E402

ROOT = BENCH.parent
CACHE = BENCH / ".cache"
KSERVE_VENV = BENCH / ".venv-kserve"
KSERVE_PKGS = ["kserve==0.21.0", "numpy", "py-spy"]  # + the onnxruntime version of our own venv
LUA = BENCH / "lua" / "infer.lua"
RESULTS = BENCH / "RESULTS.md"
BUSY_LOAD = 0.5  # 1-min load average above which a run is marked as disturbed

# The scenario (model, body, concurrency) behind each target, for profiling.
TARGET_SCENARIOS = {
    "MLP binary c=32": ("mlp", "binary", 32),
    "CNN binary c=8": ("cnn", "binary", 8),
    "CNN json c=8": ("cnn", "json", 8),
    "MLP binary p99": ("mlp", "binary", 1),
    "MLP json p99": ("mlp", "json", 1),
}


# ----------------------------------------------------------------------------------------------- set-up
def machine_facts() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    return {
        "nproc": str(os.cpu_count()),
        "CPU": cpu,
        "memory": f"{int(mem.group(1)) / 2**20:.1f} GiB" if mem else "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "onnxruntime": metadata.version("onnxruntime"),
        "kserve": KSERVE_PKGS[0].split("==")[1],
        "modelserve": metadata.version("modelserve"),
        "wrk": wrk_v,
        "nginx": nginx_version(),
    }


def background() -> str:
    """The load average and the busiest other processes: what shared the CPU with the benchmark."""
    out = subprocess.run(["ps", "-eo", "pcpu=,comm=", "--sort=-pcpu"], capture_output=True, text=True).stdout
    busy = [ln.split(None, 1) for ln in out.splitlines()[:6] if ln.strip()]
    others = ", ".join(f"{c.strip()} {p}%" for p, c in busy if float(p) >= 5 and "python" not in c)
    builds = subprocess.run(["pgrep", "-f", "go build"], capture_output=True, text=True).stdout.split()
    note = "load average " + " / ".join(f"{v:.2f}" for v in os.getloadavg())
    note += f"; busy processes: {others}" if others else ""
    return note + (f"; {len(builds)} `go build` running" if builds else "")


def ensure_kserve_venv() -> Path:
    """bench/.venv-kserve with kserve, the same onnxruntime as ours, numpy and py-spy (made once)."""
    python = KSERVE_VENV / "bin" / "python"
    wanted = [*KSERVE_PKGS, f"onnxruntime=={metadata.version('onnxruntime')}"]
    marker = KSERVE_VENV / ".installed"
    if marker.exists() and marker.read_text() == "\n".join(wanted):
        return python
    print(f"bench: installing {KSERVE_VENV.relative_to(ROOT)}: {' '.join(wanted)}", flush=True)
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(KSERVE_VENV)], check=True)
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    pip = (
        [uv, "pip", "install", "-q", "--python", str(python)] if uv else [str(python), "-m", "pip", "install"]
    )
    subprocess.run([*pip, *wanted], check=True)
    marker.write_text("\n".join(wanted))
    return python


def ort_settings(threads: int, spinning: bool) -> dict[str, Any]:
    """modelserve's ONNX Runtime settings (server/modelserve_server/runtime/session.py, ModelSession).

    intra-op threads = --intra-op-threads, inter-op 1, sequential, ORT_ENABLE_ALL, intra- and inter-op
    spinning off unless MODELSERVE_ORT_ALLOW_SPINNING=1. The KServe model and the in-process loop use these.
    """
    spin = "1" if spinning else "0"
    return {
        "intra_op_threads": threads,
        "inter_op_threads": 1,
        "graph_optimization": "all",
        "execution_mode": "sequential",
        "config": {"session.intra_op.allow_spinning": spin, "session.inter_op.allow_spinning": spin},
    }


# ----------------------------------------------------------------------------------------------- bodies
@dataclass(frozen=True)
class Body:
    path: Path
    content_type: str
    header_len: int | None  # Inference-Header-Content-Length, for the binary tensor extension

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type}
        if self.header_len is not None:
            headers["Inference-Header-Content-Length"] = str(self.header_len)
        return headers


def sample_input(spec: ModelSpec, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((batch, *spec.item_shape)).astype(np.float32)


def build_bodies(spec: ModelSpec, x: np.ndarray) -> dict[str, Body]:
    """JSON (flat `data`, as tritonclient sends it) and binary (JSON header + raw little-endian bytes)."""
    tensor = {"name": INPUT_NAME, "shape": list(x.shape), "datatype": "FP32"}
    as_json = json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode()
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": OUTPUT_NAME, "parameters": {"binary_data": True}}],
        },
        separators=(",", ":"),
    ).encode()
    made = {
        "json": (as_json, "application/json", None),
        "binary": (header + x.astype("<f4").tobytes(), "application/octet-stream", len(header)),
    }
    bodies: dict[str, Body] = {}
    for proto, (data, ctype, hlen) in made.items():
        path = CACHE / f"{spec.name}-{proto}.body"
        path.write_bytes(data)
        bodies[proto] = Body(path, ctype, hlen)
    return bodies


# ------------------------------------------------------------------------------------------- in-process
def in_process(
    spec: ModelSpec, settings: dict[str, Any], batches: list[int], seconds: float
) -> tuple[dict[int, float], dict[int, float], float]:
    """Per batch size: items/s of a sequential session.run loop and its CPU ms per item; others' CPU %."""
    session = make_session(str(spec.path), settings)
    rates: dict[int, float] = {}
    cpu_ms: dict[int, float] = {}
    with CpuWindow() as everything:
        for batch in batches:
            feeds = {INPUT_NAME: sample_input(spec, batch)}
            for _ in range(3):
                session.run(None, feeds)
            runs, start = 0, time.perf_counter()
            with CpuWindow() as cpu:
                while (now := time.perf_counter()) - start < seconds or runs < 5:
                    session.run(None, feeds)
                    runs += 1
            rates[batch] = runs * batch / (now - start)
            cpu_ms[batch] = cpu.own_pct * 10 * (now - start) / (runs * batch)
    return rates, cpu_ms, everything.other_pct


def in_process_latency_ms(spec: ModelSpec, settings: dict[str, Any], seconds: float) -> tuple[float, float]:
    """p50/p99 of one batch-1 session.run: the floor under any server's latency."""
    session = make_session(str(spec.path), settings)
    feeds = {INPUT_NAME: sample_input(spec)}
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 20:
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


# ---------------------------------------------------------------------------------------------- load
def wrk(url: str, body: Body, conc: int, seconds: float) -> dict[str, Any]:
    """One closed-loop wrk run; returns the WRK_RESULT line that bench/lua/infer.lua's done() prints."""
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{seconds:g}s", "--timeout", "60s", "-s", str(LUA), url, "--"]
    cmd += [str(body.path), body.content_type, str(body.header_len or "")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-400:]} {out.stderr[-400:]}")
    result: dict[str, Any] = json.loads(line.removeprefix("WRK_RESULT "))
    return result


def load(server: Server, spec: ModelSpec, proto: str, body: Body, conc: int, args: argparse.Namespace) -> Run:
    run = Run(server.name, spec.name, proto, conc)
    url = f"http://127.0.0.1:{server.port}/v2/models/{spec.name}/infer"
    try:
        wrk(url, body, conc, args.warmup)
        before = batch_stats(server.port, spec.name) if server.name.startswith("modelserve") else None
        with CpuWindow(server.pid) as cpu:
            result = wrk(url, body, conc, args.duration)
        if before is not None:
            after = batch_stats(server.port, spec.name)
            if after[1] > before[1]:
                run.mean_batch = (after[0] - before[0]) / (after[1] - before[1])
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        run.failure = str(exc)[:300]
        return run
    run.server_cpu, run.client_cpu, run.other_cpu = cpu.server_pct, cpu.client_pct, cpu.other_pct
    errors = {k: int(v) for k, v in result.items() if k.startswith("errors_") and v}
    run.errors = sum(errors.values())
    run.rps = result["requests"] / (result["duration_us"] / 1e6)
    run.p50_ms, run.p99_ms = result["p50_us"] / 1e3, result["p99_us"] / 1e3
    if run.errors:
        run.failure = f"{run.errors} errors: " + ", ".join(f"{k}={v}" for k, v in errors.items())
    elif not result["requests"]:
        run.failure = f"no request completed within {args.duration:g} s"
    return run


def profile(server: Server, spec: ModelSpec, proto: str, body: Body, conc: int, seconds: float) -> str:
    """py-spy (non-blocking sampling, per thread) on the server while wrk drives one scenario."""
    raw = CACHE / f"profile-{server.name}-{spec.name}-{proto}-c{conc}.txt"
    url = f"http://127.0.0.1:{server.port}/v2/models/{spec.name}/infer"
    cmd = [str(KSERVE_VENV / "bin" / "py-spy"), "record", "--pid", str(server.pid), "--rate", "200"]
    cmd += ["--duration", f"{seconds:g}", "--nonblocking", "--threads", "--format", "raw", "-o", str(raw)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wrk(url, body, conc, seconds + 1)
    finally:
        _, err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not raw.exists():
        return f"(py-spy failed: {err.strip()[-300:]})"
    return f"Raw stacks: `{raw.relative_to(ROOT)}`.\n\n" + summarize_profile(raw)


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="modelserve vs KServe vs in-process ONNX Runtime (issue 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 s per load, RESULTS.md untouched")
    p.add_argument("--duration", type=float, help="seconds of measured load per run (10; quick 3)")
    p.add_argument("--warmup", type=float, help="seconds of discarded load before each run (3; quick 1)")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--protocols", default="json,binary")
    p.add_argument("--systems", default="kserve,modelserve,nginx", help="nginx: the HTTP limit (MLP only)")
    p.add_argument("--rounds", type=int, default=1, help="repeat the load matrix, keep each scenario's best")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime intra-op threads")
    p.add_argument("--spinning", action="store_true", help="let ONNX Runtime threads spin (modelserve: off)")
    p.add_argument("--modelserve-arg", action="append", default=[], help="extra `modelserve serve` argument")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also load `modelserve serve --workers N` with the MLP, beside the 1-process server (0: off)",
    )
    p.add_argument(
        "--profile",
        choices=["auto", "always", "never"],
        default="auto",
        help="py-spy modelserve in the scenarios of missed targets (auto), of every target, or never",
    )
    p.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the Server section of bench/RESULTS.md (default: yes, except with --quick)",
    )
    args = p.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup or (1.0 if args.quick else 3.0)
    args.write = (not args.quick) if args.write is None else args.write
    for name in ("concurrency", "models", "protocols", "systems"):
        setattr(args, name, [v.strip() for v in getattr(args, name).split(",") if v.strip()])
    args.concurrency = [int(c) for c in args.concurrency]
    return args


def nginx_body(spec: ModelSpec, expected: np.ndarray) -> str:
    """modelserve's JSON answer to one MLP item, as text: nginx answers with a body of that size."""
    output = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(expected.shape)}
    doc = {
        "model_name": spec.name,
        "model_version": "1",
        "outputs": [{**output, "data": expected.ravel().tolist()}],
    }
    return json.dumps(doc, separators=(",", ":"))


def make_servers(bench: Bench) -> list[Server]:
    """The selected systems as Server objects (not started); KServe and modelserve get the same models."""
    args, settings = bench.args, bench.settings
    models = [a for name, spec in bench.specs.items() for a in ("--model", f"{name}={spec.path}")]
    servers: list[Server] = []
    if "kserve" in args.systems:
        python, port = ensure_kserve_venv(), free_port()
        argv = [str(python), str(BENCH / "server_kserve.py"), *models, "--port", str(port)]
        servers.append(
            Server("kserve", [*argv, "--settings", json.dumps(settings)], port, CACHE / "kserve.log")
        )
    if "modelserve" in args.systems:
        port = free_port()
        argv = [str(Path(sys.executable).parent / "modelserve"), "serve", *models, "--host", "127.0.0.1"]
        argv += ["--http-port", str(port), "--grpc-port", "0", "--intra-op-threads", str(args.threads)]
        env = {"MODELSERVE_ORT_ALLOW_SPINNING": "1" if args.spinning else "0"}
        servers.append(
            Server("modelserve", [*argv, *args.modelserve_arg], port, CACHE / "modelserve.log", env)
        )
    if "modelserve" in args.systems and args.workers > 1 and "mlp" in bench.specs:
        port, name = free_port(), f"modelserve-w{args.workers}"
        argv = [str(Path(sys.executable).parent / "modelserve"), "serve", *models, "--host", "127.0.0.1"]
        threads = max(1, args.threads // args.workers)  # the cores shared out, not oversubscribed
        argv += ["--http-port", str(port), "--grpc-port", "0", "--intra-op-threads", str(threads)]
        argv += ["--workers", str(args.workers)]
        env = {"MODELSERVE_ORT_ALLOW_SPINNING": "1" if args.spinning else "0"}
        servers.append(Server(name, [*argv, *args.modelserve_arg], port, CACHE / f"{name}.log", env))
    if "nginx" in args.systems and "mlp" in bench.specs:
        body = nginx_body(bench.specs["mlp"], bench.expected["mlp"])
        print(f"bench: nginx answers every POST with a static {len(body)}-byte JSON body", flush=True)
        servers.append(make_nginx(body, CACHE / "nginx.log"))
    return servers


def serves(server: Server, model: str) -> bool:
    """nginx (the HTTP limit line) and the --workers server are loaded with the MLP only."""
    return server.name == "modelserve" or server.name == "kserve" or model == "mlp"


def start_and_check(server: Server, bench: Bench) -> str | None:
    """Starts a server and checks every body's answer; returns why it failed, or None."""
    print(f"bench: starting {server.name} on 127.0.0.1:{server.port}", flush=True)
    try:
        server.start(ROOT)
        for name in bench.specs:
            for body in bench.bodies[name].values():
                if server.name == "nginx":
                    status = request(server.port, "POST", f"/v2/models/{name}/infer", body.path.read_bytes())[
                        0
                    ]
                    if status != 200:
                        raise RuntimeError(f"nginx answered HTTP {status}")
                    continue
                check_answer(server, name, body.path.read_bytes(), body.headers(), bench.expected[name])
    except (RuntimeError, OSError) as exc:
        server.stop()
        print(f"bench: {server.name} FAILED: {exc}", flush=True)
        return f"{server.name} did not start or answered wrongly, so it was not loaded: {exc}"[:1500]
    return None


def better(old: Run | None, new: Run) -> Run:
    """Of two runs of one scenario, the one that succeeded with the higher throughput (best of N rounds)."""
    if old is None or (old.failure and not new.failure):
        return new
    if new.failure:
        return old
    return new if new.rps > old.rps else old


def print_run(run: Run) -> None:
    batch = f"{run.mean_batch:.2f}" if run.mean_batch is not None else ""
    cpu = f"{run.server_cpu:.0f}/{run.client_cpu:.0f}/{run.other_cpu:.0f}"
    tail = f"  FAILED: {run.failure}" if run.failure else ""
    print(
        f"{run.system:<11}{run.model:<6}{run.proto:<8}{run.conc:>4}{run.rps:>10.1f}{run.p50_ms:>9.2f}"
        f"{run.p99_ms:>9.2f}{batch:>7}{cpu:>14}{tail}",
        flush=True,
    )


# ------------------------------------------------------------------------------------------- the run
@dataclass
class Bench:
    """What one run measures and keeps: its inputs and every in-process figure, for the report."""

    args: argparse.Namespace
    specs: dict[str, ModelSpec]
    settings: dict[str, Any]
    bodies: dict[str, dict[str, Body]]
    expected: dict[str, Any]
    inproc: InProcess = field(default_factory=dict)
    inproc_cpu: InProcess = field(default_factory=dict)  # model -> batch -> CPU ms per item
    samples: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # for the spread
    notes: list[str] = field(default_factory=list)

    def base_batches(self, name: str) -> list[int]:
        sets = {"mlp": [1, 8, 32], "cnn": [1, 8] if self.args.quick else [1, 2, 4, 8]}
        return [b for b in sets.get(name, [1]) if b <= max(self.args.concurrency)] or [1]

    def measure_in_process(self, name: str, batches: list[int]) -> None:
        """The in-process limit at these batch sizes; the best over the run is kept (the stricter limit)."""
        seconds = 1.0 if self.args.quick else 3.0
        rates, cpu_ms, other = in_process(self.specs[name], self.settings, batches, seconds)
        for batch, rate in rates.items():
            self.samples.setdefault((name, batch), []).append(rate)
            if rate > self.inproc.setdefault(name, {}).get(batch, 0.0):
                self.inproc[name][batch] = rate
                self.inproc_cpu.setdefault(name, {})[batch] = cpu_ms[batch]
        shown = ", ".join(f"batch {b}: {r:.1f}/s" for b, r in rates.items())
        print(f"bench: in-process {name}: {shown} (other processes: {other:.0f}% CPU)", flush=True)
        self.notes.append(
            f"In-process {name} {list(rates)}: other processes took {other:.0f}% of one core meanwhile."
        )


def prepare(args: argparse.Namespace) -> Bench:
    """Models, bodies and the expected answers (in-process ONNX Runtime with modelserve's settings)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    specs = {k: v for k, v in ensure_models(CACHE / "models").items() if k in args.models}
    for spec in specs.values():
        print(f"bench: model {spec.name} {list(spec.item_shape)}: {spec.flops_per_item / 1e9:.4f} GFLOP/item")
    settings = ort_settings(args.threads, args.spinning)
    bodies, expected = {}, {}
    for name, spec in specs.items():
        x = sample_input(spec)
        bodies[name] = build_bodies(spec, x)
        expected[name] = make_session(str(spec.path), settings).run(None, {INPUT_NAME: x})[0]
    return Bench(args, specs, settings, bodies, expected)


def start_all(bench: Bench, servers: list[Server]) -> tuple[list[Server], list[Run]]:
    """Starts every server (an idle one costs nothing); a failed one gets failed runs in the table."""
    live: list[Server] = []
    failed: list[Run] = []
    for server in servers:
        failure = start_and_check(server, bench)
        if failure is None:
            live.append(server)
            continue
        bench.notes.append(failure)
        failed += [
            Run(server.name, m, p, c, failure="server failed")
            for m in bench.specs
            if serves(server, m)
            for p in bench.args.protocols
            for c in bench.args.concurrency
        ]
    return live, failed


def in_process_beside(bench: Bench, name: str, conc: int) -> list[dict[int, float]]:
    """The CNN's in-process limit right beside its runs (the machine's speed drifts by minutes)."""
    beside = [b for b in (1, 4, 8, 16) if b <= conc] if name == "cnn" else []
    return [in_process(bench.specs[name], bench.settings, beside, 1.5)[0]] if beside else []


def run_scenario(bench: Bench, live: list[Server], name: str, proto: str, conc: int) -> list[Run]:
    """Every live server loaded in turn with one (model, body, concurrency); the CNN's limit beside them."""
    spec, body = bench.specs[name], bench.bodies[name][proto]
    local = in_process_beside(bench, name, conc)
    runs = [load(server, spec, proto, body, conc, bench.args) for server in live if serves(server, name)]
    rates: list[tuple[float, int]] = []
    if local:
        local += in_process_beside(bench, name, conc)
        rates = [(r, b) for measured in local for b, r in measured.items()]
        shown = ", ".join(f"batch {b}: {r:.1f}/s" for r, b in rates)
        print(f"bench: in-process {name} beside: {shown}", flush=True)
    for run in runs:
        run.local_limit = max(rates) if rates else None
        run.local_rates = {b: max(r for r, b2 in rates if b2 == b) for _, b in rates} or None
        print_run(run)
    return runs


def run_rounds(bench: Bench, live: list[Server]) -> list[Run]:
    """The load matrix, `--rounds` times; each system's best run per scenario is kept."""
    args = bench.args
    header = f"{'system':<11}{'model':<6}{'body':<8}{'c':>4}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
    print(f"{header}{'batch':>7}{'CPU% srv/wrk/other':>20}", flush=True)
    best: dict[tuple[str, str, str, int], Run] = {}
    for round_ in range(args.rounds):
        if round_:
            print(f"bench: round {round_ + 1} of {args.rounds}", flush=True)
            for name in bench.specs:
                bench.measure_in_process(name, bench.base_batches(name))
        for name in bench.specs:
            for proto in args.protocols:
                for conc in args.concurrency:
                    for run in run_scenario(bench, live, name, proto, conc):
                        key = (run.system, name, proto, conc)
                        best[key] = better(best.get(key), run)
    return list(best.values())


def in_process_after(bench: Bench, runs: list[Run]) -> None:
    """In-process again after the load, also at the batch sizes modelserve's batcher formed; drift notes."""
    for name in bench.specs:
        formed = {max(1, round(r.mean_batch)) for r in runs if r.model == name and r.mean_batch}
        again = set(bench.base_batches(name)) | {b for b in formed if b <= max(bench.args.concurrency)}
        bench.measure_in_process(name, sorted(again))
    for (name, batch), rates_seen in sorted(bench.samples.items()):
        if len(rates_seen) > 1 and max(rates_seen) > 1.03 * min(rates_seen):
            bench.notes.append(
                f"In-process {name} batch {batch} measured {len(rates_seen)} times: "
                + ", ".join(f"{r:.1f}" for r in rates_seen)
                + " items/s (the best is the limit): the machine's own speed drifted meanwhile."
            )


def profile_targets(bench: Bench, live: list[Server], evals: list[Evaluation]) -> dict[str, str]:
    """py-spy on modelserve in the scenarios of its missed targets (or of all, with --profile always)."""
    args, profiles = bench.args, {}
    modelserve = next((s for s in live if s.name == "modelserve"), None)
    if modelserve is None or args.profile == "never" or not (KSERVE_VENV / "bin" / "py-spy").exists():
        return profiles
    for ev in evals:
        scenario = next((v for k, v in TARGET_SCENARIOS.items() if ev.target.startswith(k)), None)
        if scenario is None or (args.profile == "auto" and ev.met is not False):
            continue
        model, proto, conc = scenario
        label = f"{model} {proto} c={conc}"
        if model in bench.specs and proto in args.protocols and label not in profiles:
            print(f"bench: profiling modelserve, {label}", flush=True)
            body = bench.bodies[model][proto]
            profiles[label] = profile(
                modelserve, bench.specs[model], proto, body, conc, max(args.duration, 5)
            )
    return profiles


def print_summary(bench: Bench, runs: list[Run], evals: list[Evaluation]) -> None:
    print("\n" + table(runs, bench.inproc) + "\n")
    if any(r.system != "modelserve" and r.system.startswith(("nginx", "modelserve")) for r in runs):
        print(nginx_table(runs) + "\n")
    print(issue12_table(runs, bench.inproc) + "\n")
    for ev in evals:
        verdict = {True: "MET", False: "MISSED", None: "NOT MEASURED"}[ev.met]
        print(f"{verdict:>12}  {ev.target}: {ev.measured} ({ev.detail})")
    for failed in failures(runs):
        print(f"  FAILED RUN  {failed}")


def closing_notes(bench: Bench, runs: list[Run], floor: tuple[float, float] | None, kserve: str) -> None:
    args = bench.args
    if floor:
        bench.notes.append(
            f"In-process MLP batch-1 `session.run` alone: p50 {floor[0]:.3f} ms, p99 {floor[1]:.3f} ms "
            "(the floor under any server's latency)."
        )
    rounds = (
        f", best of {args.rounds} rounds (each system's best run per scenario)" if args.rounds > 1 else ""
    )
    bench.notes += [
        "Load: `wrk -t1` (one client thread: it shares the cores with the server, equally for every system), "
        f"closed loop, keep-alive connections, one pre-built body per scenario, {args.warmup:g} s warm-up "
        f"discarded, {args.duration:g} s measured{rounds}. p50/p99 come from wrk's latency histogram through "
        "the `done` hook of bench/lua/infer.lua.",
        "Every server's answer to every body was checked against in-process ONNX Runtime before its load.",
        f"KServe {kserve}: `kserve.ModelServer` (1 uvicorn worker, gRPC off, per-request latency "
        "log and access log off: its best case), a custom `kserve.Model` with a synchronous `predict` "
        "(KServe's documented pattern) over an ONNX Runtime session (bench/server_kserve.py).",
        "nginx (bench/server_nginx.py): `worker_processes auto`, access log off, `return 200` with a static "
        "JSON body the size of modelserve's MLP JSON answer, loaded with the same MLP POST requests; its CPU "
        "column counts the master and its workers (the server's whole process session).",
    ]
    disturbed = [r for r in runs if r.other_cpu > 25]
    if disturbed:
        bench.notes.append(
            f"{len(disturbed)} run(s) shared the CPU with other processes taking more than 25% of one core "
            "(column `other` of the CPU table): their numbers are lower than on a quiet machine."
        )


def commands(argv: list[str] | None, servers: list[Server], duration: float) -> list[str]:
    shown_args = " ".join(argv if argv is not None else sys.argv[1:])
    return [
        f"make bench   # = .venv/bin/python bench/run.py {shown_args}".rstrip(),
        *[shlex.join(s.argv).replace(str(ROOT) + "/", "") for s in servers],
        f"wrk -t1 -c<C> -d{duration:g}s --timeout 60s -s bench/lua/infer.lua <URL> -- <BODY_FILE> "
        "<CONTENT_TYPE> [<INFERENCE_HEADER_CONTENT_LENGTH>]",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start, started = time.monotonic(), time.strftime("%Y-%m-%d %H:%M %Z")
    if shutil.which("wrk") is None:
        print(
            "bench: `wrk` is missing: run hack/install-system-deps.sh (Debian package wrk)", file=sys.stderr
        )
        return 2
    facts, load_before = machine_facts(), background()
    print("bench: " + ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    print(f"bench: before: {load_before}", flush=True)
    bench = prepare(args)
    # 1. The in-process limit, before any server runs (again before each further round; best kept).
    for name in bench.specs:
        bench.measure_in_process(name, bench.base_batches(name))
    floor = in_process_latency_ms(bench.specs["mlp"], bench.settings, 1.0) if "mlp" in bench.specs else None
    # 2. The servers, all up at once, loaded in turn per scenario; 3. in-process again; 4. profiles.
    servers = make_servers(bench)
    try:
        live, runs = start_all(bench, servers)
        runs += run_rounds(bench, live)
        in_process_after(bench, runs)
        evals = evaluate(runs, bench.inproc)
        profiles = profile_targets(bench, live, evals)
    finally:
        for server in servers:
            server.stop()
    # 5. Report.
    load_after = background()
    print_summary(bench, runs, evals)
    closing_notes(bench, runs, floor, facts["kserve"])
    minutes = (time.monotonic() - t_start) / 60
    if args.write:
        section = render_section(
            facts=facts,
            load_note=f"before: {load_before}; after: {load_after}",
            commands=commands(argv, servers, args.duration),
            settings=", ".join(f"{k}={v}" for k, v in bench.settings.items()),
            flops={name: spec.flops_per_item for name, spec in bench.specs.items()},
            inproc=bench.inproc,
            inproc_cpu=bench.inproc_cpu,
            runs=runs,
            evals=evals,
            profiles=profiles,
            notes=bench.notes,
            started=started,
            minutes=minutes,
            cpu=cpu_table(runs),
        )
        write_section(RESULTS, section)
        print(f"bench: wrote the Server section of {RESULTS.relative_to(ROOT)}")
    print(f"bench: done in {minutes:.1f} min")
    return 1 if failures(runs) else 0


if __name__ == "__main__":
    sys.exit(main())

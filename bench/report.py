"""Turns benchmark measurements into verdicts and Markdown: the targets of issue 2, the table, the profile.

Why apart from bench/run.py: run.py orchestrates processes; this module is pure (numbers in, text out), so the
target arithmetic can be read in one place: what "the in-process limit" is, which ratio each target compares,
and by how much a missed target is missed.

The in-process limit at concurrency c is the best items/s that a sequential `session.run` loop reaches at
any measured batch size <= c (a server answering c closed-loop clients can never form a larger batch), with
the same ONNX Runtime settings as modelserve. Taking the best over batch sizes makes the limit strict: a
server that forms smaller batches than it could is measured against what bigger batches would have given.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TARGET_MLP_VS_KSERVE = 3.0
TARGET_CNN_BINARY = 0.90
TARGET_CNN_JSON = 0.40
TARGET_MLP_P99_MS = 2.0


@dataclass(frozen=True)
class Goal:
    """One row of issue 12's target table: a ratio (or latency) measured in this run against its target."""

    scenario: str
    today: str  # the issue's figure before the work, for the reader
    target: float
    higher_is_better: bool
    unit: str = ""


# Issue 12's targets, in the issue's order and words (the `today` column is the issue's own figure).
ISSUE12 = {
    "mlp_vs_nginx": Goal(
        "MLP binary, c=32: req/s ÷ nginx static POST req/s, same machine, same run", "~0.10", 0.35, True
    ),
    "mlp_p99": Goal("MLP binary, c=1: p99", "0.8 ms", 0.5, False, " ms"),
    "cnn_binary": Goal("CNN binary, c=8: ÷ in-process ORT best at batch ≤ 8", "0.83-0.90", 0.97, True),
    "cnn_json": Goal("CNN JSON, c=8: ÷ in-process", "0.45", 0.65, True),
    "cnn_tail": Goal("CNN binary, c=32: p99 ÷ p50", "~1.9", 1.3, False),
}


@dataclass
class Run:
    """One measured wrk run (after its warm-up)."""

    system: str
    model: str
    proto: str
    conc: int
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    mean_batch: float | None = None
    failure: str | None = None
    server_cpu: float = 0.0  # percent of one core, during the measured window
    client_cpu: float = 0.0  # wrk
    other_cpu: float = 0.0  # everything else on the machine
    # (items/s, batch): in-process ONNX Runtime just before and after this scenario, best at batch <= c
    local_limit: tuple[float, int] | None = None
    local_rates: dict[int, float] | None = None  # those measurements per batch size (best of before/after)


@dataclass
class Evaluation:
    target: str
    measured: str
    met: bool | None  # None: could not be measured
    detail: str


InProcess = dict[str, dict[int, float]]  # model -> batch size -> items/s


def find(runs: list[Run], system: str, model: str, proto: str, conc: int) -> Run | None:
    for run in runs:
        if (run.system, run.model, run.proto, run.conc) == (
            system,
            model,
            proto,
            conc,
        ) and run.failure is None:
            return run
    return None


def limit(inproc: InProcess, model: str, conc: int) -> tuple[float, int] | None:
    """(items/s, batch size) of the best in-process rate at batch <= conc."""
    rates = [(rate, batch) for batch, rate in inproc.get(model, {}).items() if batch <= conc]
    return max(rates) if rates else None


def run_limit(run: Run, inproc: InProcess) -> tuple[float, int] | None:
    """The limit a run is compared with: measured beside it if it was, else the run-wide one."""
    return run.local_limit or limit(inproc, run.model, run.conc)


def _ratio_target(name: str, num: Run | None, den: float | None, den_label: str, goal: float) -> Evaluation:
    if num is None or not den:
        return Evaluation(name, "not measured", None, "a run failed or was not selected (see the table)")
    ratio = num.rps / den
    met = ratio >= goal
    gap = "" if met else f"; missed by {goal - ratio:.2f} ({(goal * den - num.rps):.1f} req/s short)"
    return Evaluation(
        name, f"{ratio:.2f} ({num.rps:.1f} / {den:.1f} req/s {den_label})", met, f"needs >= {goal:g}{gap}"
    )


def evaluate(runs: list[Run], inproc: InProcess) -> list[Evaluation]:
    out: list[Evaluation] = []
    kserve = find(runs, "kserve", "mlp", "binary", 32)
    out.append(
        _ratio_target(
            "MLP binary c=32 >= 3x KServe",
            find(runs, "modelserve", "mlp", "binary", 32),
            kserve.rps if kserve else None,
            "KServe",
            TARGET_MLP_VS_KSERVE,
        )
    )
    overall = limit(inproc, "cnn", 8)
    for proto, goal in (("binary", TARGET_CNN_BINARY), ("json", TARGET_CNN_JSON)):
        run = find(runs, "modelserve", "cnn", proto, 8)
        lim = run_limit(run, inproc) if run else overall
        where = "measured just before and after this run" if run and run.local_limit else "in-process"
        ev = _ratio_target(
            f"CNN {proto} c=8 >= {goal:.0%} of in-process",
            run,
            lim[0] if lim else None,
            f"{where}, batch {lim[1]}" if lim else "",
            goal,
        )
        formed = round(run.mean_batch) if run and run.mean_batch else None
        rates = (run.local_rates if run and run.local_rates else None) or inproc.get("cnn", {})
        at_formed = rates.get(formed) if formed else None
        if run and lim and formed and at_formed:
            ev.detail += (
                f"; the batcher formed batches of {run.mean_batch:.2f} on average, and in-process ONNX "
                f"Runtime at batch {formed} gives {at_formed:.1f}/s ({at_formed / lim[0]:.0%} of the limit): "
                f"modelserve reached {run.rps / at_formed:.0%} of that"
            )
        if run and overall and lim and overall[0] > lim[0]:
            ev.detail += (
                f"; against the best in-process figure of the whole run ({overall[0]:.1f}/s at batch "
                f"{overall[1]}): {run.rps / overall[0]:.2f}"
            )
        out.append(ev)
    for proto in ("binary", "json"):
        run = find(runs, "modelserve", "mlp", proto, 1)
        name = f"MLP {proto} p99 at c=1 < 2 ms"
        if run is None:
            out.append(Evaluation(name, "not measured", None, "the run failed or was not selected"))
            continue
        met = run.p99_ms < TARGET_MLP_P99_MS
        out.append(
            Evaluation(
                name,
                f"{run.p99_ms:.2f} ms (p50 {run.p50_ms:.2f} ms)",
                met,
                "under 2 ms" if met else f"missed by {run.p99_ms - TARGET_MLP_P99_MS:.2f} ms",
            )
        )
    return out


def issue12_values(runs: list[Run], inproc: InProcess) -> dict[str, float | None]:
    """The five measured figures of issue 12 (None where a run failed or was not selected)."""
    ms = {key: find(runs, "modelserve", *key) for key in (("mlp", "binary", 32), ("mlp", "binary", 1))}
    nginx = find(runs, "nginx", "mlp", "binary", 32)
    mlp32, mlp1 = ms[("mlp", "binary", 32)], ms[("mlp", "binary", 1)]
    values: dict[str, float | None] = {
        "mlp_vs_nginx": mlp32.rps / nginx.rps if mlp32 and nginx and nginx.rps else None,
        "mlp_p99": mlp1.p99_ms if mlp1 else None,
    }
    for proto in ("binary", "json"):
        run = find(runs, "modelserve", "cnn", proto, 8)
        lim = run_limit(run, inproc) if run else None
        values[f"cnn_{proto}"] = run.rps / lim[0] if run and lim and lim[0] else None
    tail = find(runs, "modelserve", "cnn", "binary", 32)
    values["cnn_tail"] = tail.p99_ms / tail.p50_ms if tail and tail.p50_ms else None
    return values


def issue12_table(runs: list[Run], inproc: InProcess) -> str:
    """Issue 12's table: scenario, the issue's `today`, this run's figure, target, and the margin."""
    lines = ["| scenario | issue's today | this run | target | verdict |", "|---|---|---:|---|---|"]
    for key, value in issue12_values(runs, inproc).items():
        goal = ISSUE12[key]
        sign = "≥" if goal.higher_is_better else "≤"
        if value is None:
            measured, verdict = "-", "not measured"
        else:
            measured = f"{value:.2f}{goal.unit}"
            met = value >= goal.target if goal.higher_is_better else value <= goal.target
            gap = abs(goal.target - value)
            verdict = "**met**" if met else f"**missed** by {gap:.2f}{goal.unit}"
        lines.append(
            f"| {goal.scenario} | {goal.today} | {measured} | {sign} {goal.target:g}{goal.unit} | {verdict} |"
        )
    return "\n".join(lines)


def nginx_table(runs: list[Run]) -> str:
    """The HTTP limit line (nginx's static answer to the same POST requests) and `--workers N`, beside
    modelserve's one-process MLP figures of the same run."""
    lines = [
        "| system | body | c | req/s | p50 ms | p99 ms | modelserve (1 process) req/s | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    others = [
        r for r in runs if r.model == "mlp" and not r.failure and r.system not in ("modelserve", "kserve")
    ]
    for run in sorted(others, key=lambda r: (r.system != "nginx", r.system, r.proto, r.conc)):
        ms = find(runs, "modelserve", "mlp", run.proto, run.conc)
        ratio = f"{run.rps / ms.rps:.2f}x" if ms and ms.rps else "-"
        lines.append(
            f"| {run.system} | {run.proto} | {run.conc} | {run.rps:.1f} | {run.p50_ms:.2f} "
            f"| {run.p99_ms:.2f} | {ms.rps if ms else 0:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def _fmt(run: Run | None) -> str:
    if run is None:
        return "- | - | -"
    return f"{run.rps:.1f} | {run.p50_ms:.2f} | {run.p99_ms:.2f}"


def table(runs: list[Run], inproc: InProcess) -> str:
    lines = [
        "| model | body | c | KServe req/s | p50 ms | p99 ms | modelserve req/s | p50 ms | p99 ms "
        "| ms / KServe | ms / in-process | mean batch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = sorted(
        {(r.model, r.proto, r.conc) for r in runs if r.system != "nginx"},
        key=lambda k: (["mlp", "cnn"].index(k[0]) if k[0] in ("mlp", "cnn") else 9, k[1], k[2]),
    )
    for model, proto, conc in keys:
        ks, ms = find(runs, "kserve", model, proto, conc), find(runs, "modelserve", model, proto, conc)
        lim = run_limit(ms, inproc) if ms else None
        vs_ks = f"{ms.rps / ks.rps:.2f}x" if ms and ks and ks.rps else "-"
        vs_lim = f"{ms.rps / lim[0]:.0%}" if ms and lim and lim[0] else "-"
        batch = f"{ms.mean_batch:.2f}" if ms and ms.mean_batch is not None else "-"
        lines.append(
            f"| {model} | {proto} | {conc} | {_fmt(ks)} | {_fmt(ms)} | {vs_ks} | {vs_lim} | {batch} |"
        )
    return "\n".join(lines)


def failures(runs: list[Run]) -> list[str]:
    return [f"{r.system} {r.model} {r.proto} c={r.conc}: {r.failure}" for r in runs if r.failure]


def cpu_table(runs: list[Run]) -> str:
    """CPU use during each measured run, in percent of one core (the machine has nproc x 100)."""
    lines = [
        "| system | model | body | c | server | wrk | others | server CPU ms / request |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        if r.failure is None:
            per_request = f"{r.server_cpu * 10 / r.rps:.2f}" if r.rps else "-"
            lines.append(
                f"| {r.system} | {r.model} | {r.proto} | {r.conc} | {r.server_cpu:.0f} | {r.client_cpu:.0f} "
                f"| {r.other_cpu:.0f} | {per_request} |"
            )
    return "\n".join(lines)


def inproc_table(inproc: InProcess, cpu_ms: InProcess, flops: dict[str, int]) -> str:
    lines = ["| model | batch | items/s | GFLOP/s | CPU ms / item |", "|---|---:|---:|---:|---:|"]
    for model, rates in inproc.items():
        for batch, rate in sorted(rates.items()):
            gflops = rate * flops.get(model, 0) / 1e9
            cpu = cpu_ms.get(model, {}).get(batch)
            cpu_text = f"{cpu:.3f}" if cpu is not None else "-"
            lines.append(f"| {model} | {batch} | {rate:.1f} | {gflops:.1f} | {cpu_text} |")
    return "\n".join(lines)


def verdicts(evals: list[Evaluation]) -> str:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for e in evals:
        mark = {True: "**met**", False: "**missed**", None: "not measured"}[e.met]
        lines.append(f"| {e.target} | {e.measured} | {mark}: {e.detail} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- profile
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^():]+?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    """'encode (modelserve_server/protocol/http/codec.py:123)' -> 'modelserve_server/.../codec.py:encode'."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    path = re.sub(r"^/work/main/(server/)?", "", path)
    return f"{path}:{m.group('func')}"


_ENTRY = ("modelserve_server/cli.py", "modelserve_cli/")  # frames that are on every stack of the server


_PACKAGES = {
    "asyncio": "event loop itself (uvloop/asyncio C code: socket I/O, callbacks, wake-ups)",
    "concurrent": "thread-pool hand-off (concurrent.futures, outside Session.run)",
    "uvicorn": "uvicorn HTTP protocol (httptools parsing, sending)",
    "starlette": "starlette (routing, request/response objects)",
    "fastapi": "fastapi (routing, dependency resolution)",
    "threading": "threads waking up / handing over (threading)",
}


def _nearest(frames: list[str]) -> str:
    """The innermost modelserve frame below the entry point, else the leaf frame's package."""
    for frame in reversed(frames):
        if "modelserve_server" in frame and not any(e in frame for e in _ENTRY):
            return _short(frame)
    if not frames:
        return "(none)"
    package = _short(frames[-1]).split(":", 1)[0].split("/", 1)[0]
    return _PACKAGES.get(package, f"{package} (outside modelserve code)")


def summarize_profile(raw: Path, top: int = 12) -> str:
    """py-spy `--format raw --threads` stacks -> share per thread, hottest own-time and modelserve frames."""
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    nearest: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        if len(frames) > 1:
            self_time[_short(frames[-1])] += count
        for name in {_short(f) for f in frames[1:] if "modelserve_server" in f}:
            inclusive[name] += count
        nearest[_nearest(frames[1:])] += count
    if total == 0:
        return "(no samples)"

    def rows(counter: Counter[str]) -> list[str]:
        return [f"| {n / total:.1%} | `{name}` |" for name, n in counter.most_common(top)]

    parts = [
        f"{total} samples of busy threads (py-spy leaves out idle ones; a thread in `Session.run` is busy in "
        "ONNX Runtime's native code).",
        "",
        "| share | thread |",
        "|---:|---|",
        *[f"| {n / total:.1%} | {name} |" for name, n in threads.most_common(6)],
        "",
        "Hottest frames by own time:",
        "",
        "| share | frame |",
        "|---:|---|",
        *rows(self_time),
        "",
        "modelserve frames by inclusive time:",
        "",
        "| share | frame |",
        "|---:|---|",
        *rows(inclusive),
        "",
        "Time by the innermost modelserve function on the stack (it and the library code it calls); "
        "samples with no modelserve frame below the server's entry point go to the package they are in:",
        "",
        "| share | where |",
        "|---:|---|",
        *rows(nearest),
    ]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------- RESULTS
def write_section(path: Path, section: str, heading: str = "## Server") -> None:
    """Replaces the `heading` section of `path` (up to the next '## ' heading), keeping all other sections."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == heading), None)
    new = section.rstrip("\n").splitlines()
    if start is None:
        lines = [*lines, "", *new] if lines else new
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = lines[end:]
        lines = [*lines[:start], *new, *([""] if tail else []), *tail]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def render_section(
    *,
    facts: dict[str, str],
    load_note: str,
    commands: list[str],
    settings: str,
    flops: dict[str, int],
    inproc: InProcess,
    inproc_cpu: InProcess,
    runs: list[Run],
    evals: list[Evaluation],
    profiles: dict[str, str],
    notes: list[str],
    started: str,
    minutes: float,
    cpu: str,
) -> str:
    out = [
        "## Server",
        "",
        f"Measured {started} in {minutes:.1f} min by `make bench` on this machine: "
        + ", ".join(f"{k} {v}" for k, v in facts.items())
        + ".",
        "",
        f"Background during the run: {load_note}.",
        "",
        "### Commands",
        "",
        "```",
        *commands,
        "```",
        "",
        f"ONNX Runtime settings, identical for all three: {settings}.",
        "",
        "### Targets of issue 2",
        "",
        verdicts(evals),
        "",
        "### Targets of issue 12 (ratios from this run)",
        "",
        issue12_table(runs, inproc),
        "",
        "### HTTP limit (nginx: static `return 200`, body the size of the MLP's answer) and `--workers`, MLP",
        "",
        nginx_table(runs),
        "",
        "### Throughput and latency (wrk, closed loop, batch-1 requests)",
        "",
        table(runs, inproc),
        "",
        "ms / in-process: modelserve's req/s over the in-process limit at the same concurrency (best "
        "items/s at batch <= c; for the CNN measured just before and after that scenario's runs, because the "
        "machine's speed drifts by minutes). mean batch: batches modelserve's batcher formed during the run.",
        "",
        "### CPU during each measured run (percent of one core)",
        "",
        cpu,
        "",
        "### In-process ONNX Runtime (the limit)",
        "",
        "Model cost: " + ", ".join(f"{m} {f / 1e6:.3f} MFLOP/item" for m, f in flops.items()) + ".",
        "",
        inproc_table(inproc, inproc_cpu, flops),
        "",
    ]
    failed = failures(runs)
    if failed:
        out += ["### Failed runs", "", *[f"- {f}" for f in failed], ""]
    for name, summary in profiles.items():
        out += [f"### Profile: modelserve, {name}", "", summary, ""]
    if notes:
        out += ["### Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(out)

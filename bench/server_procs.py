"""The servers under test as processes: start, wait for readiness, check answers, account CPU, stop.

Why here and not in bench/run.py: KServe and modelserve are driven the same way (a subprocess on 127.0.0.1
answering the V2 REST protocol), and the fairness of the comparison rests on that sameness; this module is
that one code path. It also measures CPU from /proc, because on a small shared machine a throughput figure
means little without knowing how much of the CPU the server, the load generator and everything else took
during the run.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HZ = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 exchange with 127.0.0.1:port; returns (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# -------------------------------------------------------------------------------------------------- CPU
def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle since boot (all cores)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal_guest = sum(fields[7:]) if len(fields) > 7 else 0  # steal, guest(_nice) are not our work
    return (sum(fields) - idle - steal_guest) / HZ


def session_cpu_seconds(sid: int) -> float:
    """CPU seconds of every live process in session `sid`: a server and its worker processes.

    Servers are started with start_new_session=True, so nginx's workers and modelserve's `--workers N`
    children share the session of the process that was started; the parent alone would miss their CPU.
    """
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            rest = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(rest[3]) == sid:
            total += (int(rest[11]) + int(rest[12])) / HZ
    return total


def children_cpu_seconds() -> float:
    """CPU seconds of this process's waited-for children (wrk runs are the only ones waited mid-run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuWindow:
    """CPU use over a time window: of the server, of wrk, of everything else (percent of one core)."""

    server_pid: int | None = None
    _t: float = 0.0
    _busy: float = 0.0
    _server: float = 0.0
    _children: float = 0.0
    _self: float = 0.0

    def __enter__(self) -> CpuWindow:
        self._t, self._busy = time.monotonic(), machine_busy_seconds()
        self._server = session_cpu_seconds(self.server_pid) if self.server_pid else 0.0
        self._children, self._self = children_cpu_seconds(), self_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = max(time.monotonic() - self._t, 1e-9)
        busy = machine_busy_seconds() - self._busy
        server = (session_cpu_seconds(self.server_pid) - self._server) if self.server_pid else 0.0
        client = children_cpu_seconds() - self._children
        own = self_cpu_seconds() - self._self
        self.server_pct = 100 * server / elapsed
        self.client_pct = 100 * client / elapsed
        self.own_pct = 100 * own / elapsed
        self.other_pct = 100 * max(0.0, busy - server - client - own) / elapsed


# ---------------------------------------------------------------------------------------------- servers
@dataclass
class Server:
    """A server under test: its command line, its port, its process."""

    name: str
    argv: list[str]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    ready_path: str = "/v2/health/ready"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, cwd: Path, timeout: float = 300) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log}:\n"
                    + self.log.read_text(errors="replace")[-2000:]
                )
            with contextlib.suppress(OSError):
                if request(self.port, "GET", self.ready_path, timeout=5)[0] == 200:
                    return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s; see {self.log}")

    def stop(self) -> None:
        """SIGTERM (the servers drain and exit on it; nginx shuts down fast), SIGKILL after 40 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def decode_output(headers: dict[str, str], payload: bytes) -> np.ndarray:
    """The first output of a V2 response, JSON or binary tensor extension."""
    hlen = headers.get("inference-header-content-length")
    doc = json.loads(payload[: int(hlen)] if hlen else payload)
    out = doc["outputs"][0]
    if hlen:
        return np.frombuffer(payload[int(hlen) :], dtype="<f4").reshape(out["shape"])
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def check_answer(
    server: Server, model: str, body: bytes, headers: dict[str, str], expected: np.ndarray
) -> None:
    """One body gets 200 and the in-process result; raises RuntimeError saying what differs."""
    status, resp_headers, payload = request(server.port, "POST", f"/v2/models/{model}/infer", body, headers)
    if status != 200:
        raise RuntimeError(f"{server.name} {model}: HTTP {status}: {payload[:300]!r}")
    got = decode_output(resp_headers, payload)
    if got.shape != expected.shape:
        raise RuntimeError(f"{server.name} {model}: output shape {got.shape}, expected {expected.shape}")
    tol = 1e-4 * max(1.0, float(np.abs(expected).max()))
    if not np.allclose(got, expected, rtol=1e-4, atol=tol):
        raise RuntimeError(
            f"{server.name} {model}: wrong answer (max abs diff {float(np.abs(got - expected).max())})"
        )


def batch_stats(port: int, model: str) -> tuple[float, float]:
    """(sum, count) of modelserve's `modelserve_batch_size` histogram for a model, over all versions."""
    _, _, text = request(port, "GET", "/metrics")
    total = count = 0.0
    for line in text.decode().splitlines():
        m = re.match(r"modelserve_batch_size_(sum|count)\{([^}]*)\}\s+(\S+)", line)
        if m and f'model="{model}"' in m.group(2):
            if m.group(1) == "sum":
                total += float(m.group(3))
            else:
                count += float(m.group(3))
    return total, count

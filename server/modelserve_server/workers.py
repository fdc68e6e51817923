"""``modelserve serve --workers N``: N server processes on one port, each with its own sessions and batcher.

Why processes: one Python process serves HTTP on one core (the GIL), so a small model at high request
rates leaves the other cores idle. Why ``SO_REUSEPORT``: the kernel spreads new connections over the
workers' own listening sockets (no accept lock, no proxy hop); gRPC's server sets it by default.
Why fresh interpreters rather than ``fork``: ONNX Runtime's thread pools and the event loop do not
survive a fork, and a fresh ``modelserve serve`` child is exactly the tested single-process server.

Every worker listens only once its models are loaded (until then the port refuses connections, which the
pod's startup probe tolerates), so no connection reaches a worker that would answer 503 while another
one already answers ready. The supervisor (this module) only starts the workers, forwards SIGTERM/SIGINT
to each (each drains as a single server does: readiness 503 at once, accepted work finishes) and exits
with the worst worker's code. If a worker exits on its own (a start-up error), the others are stopped
and its code is the supervisor's. Metrics add up across workers through prometheus_client's multiprocess
mode (:mod:`modelserve_server.metrics`), in a private directory removed at exit.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from types import FrameType

from modelserve_server.cli import WORKER_ENV
from modelserve_server.metrics import MULTIPROC_ENV

log = logging.getLogger("modelserve_server")


def worker_argv(argv: list[str]) -> list[str]:
    """The ``serve`` arguments for one worker: the same, with ``--workers 1``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return [*out, "--workers", "1"]


def _exit_code(returncode: int, stopping: bool) -> int:
    if stopping and returncode in (-signal.SIGTERM, -signal.SIGINT):
        return 0  # our forwarded signal reached it before its handlers: it had not listened yet
    return returncode if returncode >= 0 else 1  # killed by another signal: a failure


def run_workers(argv: list[str], count: int) -> int:
    """Start ``count`` workers and supervise them until all have exited; returns the exit code."""
    metrics_dir = tempfile.mkdtemp(prefix="modelserve-metrics-")
    env = {**os.environ, MULTIPROC_ENV: metrics_dir}
    cmd = [sys.executable, "-m", "modelserve_cli.main", "serve", *worker_argv(argv)]
    stopping = False
    procs: dict[int, subprocess.Popen[bytes]] = {}

    def stop_all(signum: int) -> None:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signum)

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop_all(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(count):
            proc = subprocess.Popen(cmd, env={**env, WORKER_ENV: f"{index}/{count}"})
            procs[proc.pid] = proc
        log.info("started %d workers on one port (pids %s)", count, ", ".join(map(str, procs)))
        failure: int | None = None
        while any(p.returncode is None for p in procs.values()):
            pid, status = os.waitpid(-1, 0)
            done = procs.get(pid)
            if done is None:
                continue
            done.returncode = code = os.waitstatus_to_exitcode(status)
            if not stopping and failure is None:
                failure = _exit_code(code, False) or 1
                log.error("worker %d exited with %d before SIGTERM: stopping the others", pid, code)
                stopping = True
                stop_all(signal.SIGTERM)
        if failure is not None:
            return failure
        return max(_exit_code(p.returncode or 0, True) for p in procs.values())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)

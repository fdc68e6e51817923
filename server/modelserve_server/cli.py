"""``modelserve serve`` and ``modelserve fetch``: argument parsing and logging set-up.

The command line is a contract with the operator, the Helm chart and outside checks (issue 2):
flags keep their names and defaults. ``fetch`` is implemented in :mod:`modelserve_server.fetch`
(imported lazily, like everything heavy, so ``modelserve --help`` stays fast).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

from modelserve_contract import GRPC_PORT, HTTP_PORT
from modelserve_server.batching.scheduler import DEFAULT_INSTANCES
from modelserve_server.errors import StartupError
from modelserve_server.parsing import ascii_uint

#: Set by modelserve_server.workers for its worker processes (kept here: workers.py imports metrics).
WORKER_ENV = "MODELSERVE_WORKER"

_DECIMAL = re.compile(r"[0-9]{1,12}(\.[0-9]{1,17})?([eE][-+]?[0-9]{1,3})?", re.ASCII)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log collectors in a cluster parse without configuration."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(fmt: str, level: int = logging.INFO) -> None:
    """Route every logger (ours, uvicorn's, grpc's) to stderr in ``json`` or ``text`` format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _ascii_int(text: str) -> int:
    # int() would take " 8", "1_000", "+4" and non-ASCII digits: the flags take ASCII digits only.
    value = ascii_uint(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"not a non-negative integer in ASCII digits: {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _ascii_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    return _ascii_int(text)


def _port(text: str) -> int:
    value = _ascii_int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {value}")
    return value


def _non_negative_float(text: str) -> float:
    if not _DECIMAL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a non-negative number in ASCII digits: {text!r}")
    return float(text)


def _dim(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    size = ascii_uint(value.strip()) if sep else None
    if not name.strip() or size is None or size < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=N with N >= 1 in ASCII digits, got {text!r}")
    return name.strip(), size


def build_parser() -> argparse.ArgumentParser:
    """The ``modelserve serve`` parser (exactly the flags of the contract)."""
    p = argparse.ArgumentParser(
        prog="modelserve serve",
        description="Serve ONNX models over the Open Inference Protocol (V2): HTTP/REST and gRPC.",
    )
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]URI",
                   help="a model to serve (repeatable); NAME defaults to the file's stem; URI is a path, "
                   "file://, http(s):// (optional #sha256=<hex>) or s3://bucket/key")
    p.add_argument("--model-repository", type=Path, default=None, metavar="DIR",
                   help="a Triton-style tree DIR/<name>/<version>/model.onnx (all versions; highest default)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--http-port", type=_port, default=HTTP_PORT, help=f"HTTP port (default {HTTP_PORT})")
    p.add_argument("--grpc-port", type=_port, default=GRPC_PORT,
                   help=f"gRPC port; 0 disables gRPC (default {GRPC_PORT})")
    p.add_argument("--max-batch-size", type=_positive_int, default=32,
                   help="rows per dynamic batch; 1 disables batching (default 32)")
    p.add_argument("--max-batch-delay-ms", type=_non_negative_float, default=2.0,
                   help="longest a queued request waits for a batch to fill (default 2)")
    p.add_argument("--providers", default="auto",
                   help="auto | cuda,cpu | tensorrt,cuda,cpu | cpu: ONNX Runtime execution providers in "
                   "preference order; a provider named explicitly must load (default auto)")
    p.add_argument("--intra-op-threads", type=_non_negative_int, default=0, metavar="N",
                   help="ONNX Runtime intra-op threads per session; 0: the container's cgroup CPU limit, "
                   "or ONNX Runtime's choice when there is none (default 0)")
    p.add_argument("--instances", type=_positive_int, default=DEFAULT_INSTANCES, metavar="N",
                   help="batches of one model that may run at once (Triton's instance count) "
                   f"(default {DEFAULT_INSTANCES})")
    gpu = p.add_argument_group("GPU providers (CUDA, TensorRT)")
    gpu.add_argument("--trt-cache-dir", type=Path, default=None, metavar="DIR",
                     help="TensorRT engine and timing caches, in DIR/<model sha256>/<GPU>/<versions, "
                     "precision, profile>/ (default: no cache, engines are rebuilt at every start)")
    gpu.add_argument("--trt-fp16", action="store_true", help="let TensorRT build FP16 kernels (opt-in)")
    gpu.add_argument("--trt-int8", action="store_true",
                     help="let TensorRT build INT8 kernels (opt-in; for QDQ-quantised models)")
    gpu.add_argument("--trt-dim", action="append", default=[], type=_dim, metavar="NAME=N",
                     help="size of a symbolic non-batch input dimension, for TensorRT's optimisation "
                     "profile and the warm-up (repeatable)")
    gpu.add_argument("--cuda-mem-limit", type=_non_negative_int, default=0, metavar="BYTES",
                     help="most memory the CUDA provider's arena may hold; 0 = no limit (default 0)")
    gpu.add_argument("--cuda-arena-strategy", choices=("next-power-of-two", "same-as-requested"),
                     default="next-power-of-two",
                     help="how the CUDA arena grows; same-as-requested wastes less when sharing a GPU "
                     "(default next-power-of-two)")
    p.add_argument("--max-request-bytes", type=_positive_int, default=64 << 20,
                   help="larger request bodies are refused with 413 before being read (default 67108864)")
    p.add_argument("--drain-seconds", type=_non_negative_float, default=30.0,
                   help="on SIGTERM, how long in-flight and queued requests may take to finish (default 30)")
    p.add_argument("--log-format", choices=("json", "text"), default="json", help="log format (default json)")
    p.add_argument("--workers", type=_workers, default=1, metavar="N|auto",
                   help="server processes sharing the ports (SO_REUSEPORT), each with its own sessions and "
                   "batcher; auto: the container's CPU limit (cgroup quota); GPU providers: 1 (default 1)")
    return p


def _workers(text: str) -> int:
    """``auto`` is 0 here: resolved by :func:`worker_count` once the providers are known."""
    return 0 if text == "auto" else _positive_int(text)


def worker_count(requested: int, plan_names: tuple[str, ...]) -> int:
    """How many workers to run: ``auto`` (0) from the CPU quota; always 1 with a GPU provider.

    Why 1 on GPU: every worker would load its own copy of each model into the GPU's memory and
    compete for one device; one process already keeps a GPU busy.
    """
    from modelserve_server.cpulimit import usable_cpus
    from modelserve_server.runtime.providers import CPU

    if any(name != CPU for name in plan_names):
        return 1
    return requested or usable_cpus()


def serve_main(argv: list[str]) -> int:
    """``modelserve serve ...``: 0 after a clean SIGTERM drain, 1 on a start-up error, 3 when the drain
    deadline cut off unfinished requests."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_format)
    log = logging.getLogger("modelserve_server")
    if not args.model and args.model_repository is None:
        log.error("start-up failed: no models: give --model [NAME=]URI or --model-repository DIR")
        return 1
    # Heavy imports only now: ONNX Runtime, numpy, FastAPI, uvicorn.
    from modelserve_server.app import EXIT_CUT_OFF, ServeOptions, serve
    from modelserve_server.runtime.cgroup import default_intra_op_threads
    from modelserve_server.runtime.options import GpuOptions
    from modelserve_server.runtime.providers import resolve_providers

    gpu = GpuOptions(
        trt_cache_dir=args.trt_cache_dir,
        trt_fp16=args.trt_fp16,
        trt_int8=args.trt_int8,
        trt_dims=tuple(args.trt_dim),
        cuda_mem_limit=args.cuda_mem_limit,
        cuda_arena_strategy=args.cuda_arena_strategy,
        max_batch_size=args.max_batch_size,
    )
    try:
        plan = resolve_providers(args.providers, gpu=gpu)
    except StartupError as exc:
        log.error("start-up failed: %s", exc)
        return 1
    workers = worker_count(args.workers, plan.names)
    if workers > 1 and not os.environ.get(WORKER_ENV):
        from modelserve_server.workers import run_workers

        return run_workers(argv, workers)
    threads = args.intra_op_threads
    if threads == 0:
        threads = default_intra_op_threads()
        if threads:
            log.info("intra-op threads: %d, from the cgroup CPU limit", threads)
    options = ServeOptions(
        models=list(args.model),
        model_repository=args.model_repository,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        intra_op_threads=threads,
        max_request_bytes=args.max_request_bytes,
        drain_seconds=args.drain_seconds,
        instances=args.instances,
        reuse_port=bool(os.environ.get(WORKER_ENV)),
        listen_when_ready=bool(os.environ.get(WORKER_ENV)),
    )
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; plain asyncio still works
        code = asyncio.run(serve(options, plan))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(serve(options, plan))
    if code == EXIT_CUT_OFF:
        # A batch may still be running in an ONNX Runtime thread, which cannot be interrupted and
        # which the interpreter would wait for at exit: every request was answered, so leave now.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code


def fetch_main(argv: list[str]) -> int:
    """``modelserve fetch URI DEST_DIR``: delegated to :mod:`modelserve_server.fetch`."""
    from modelserve_server.fetch import fetch_main as _fetch_main

    return _fetch_main(argv)

"""``modelserve operator``: run the kopf operator in this process.

Why kopf runs in-process (``kopf.operator``) rather than through ``kopf run file.py``: the
operator is configured like every other ``modelserve`` command (flags over ``MODELSERVE_*``
environment variables, see :mod:`modelserve_operator.config`), its handlers come from a
registry built here, and tests start exactly this code path in a thread.

Flags::

    modelserve operator [--namespace NS ...] [--all-namespaces]
                        [--kubeconfig PATH] [--context NAME]
                        [--liveness-port 8080] [--metrics-port 9090] [--bind-address 0.0.0.0]
                        [--log-format json|text] [--verbose]
                        [--server-image IMAGE] [--server-gpu-image IMAGE] [--gpu-resource NAME]
                        [--resync-seconds 300]

Without ``--kubeconfig`` the client uses ``$KUBECONFIG`` or ``~/.kube/config`` outside a
cluster, and the pod's ServiceAccount inside one. kopf's watches use the same credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any

import kopf

from modelserve_operator import metrics
from modelserve_operator.config import OperatorConfig
from modelserve_operator.handlers import build_registry, make_memo
from modelserve_operator.kube import Kube, load_configuration
from modelserve_operator.reconcile import DEFAULT_RESYNC_SECONDS, Reconciler
from modelserve_operator.settings import configure

logger = logging.getLogger("modelserve_operator")


@dataclasses.dataclass(frozen=True)
class Options:
    """Process-level options (the rendering configuration is :class:`OperatorConfig`)."""

    config: OperatorConfig
    kubeconfig: str | None = None
    context: str | None = None
    liveness_port: int = 8080
    metrics_port: int = 9090
    bind_address: str = "0.0.0.0"
    resync_seconds: float = DEFAULT_RESYNC_SECONDS
    verbose: bool = False


def parse_args(argv: Sequence[str], environ: dict[str, str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="modelserve operator",
        description="Run the ModelDeployment operator (kopf). Flags override MODELSERVE_* variables.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable); default: MODELSERVE_WATCH_NAMESPACES or all")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--kubeconfig", help="kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    parser.add_argument("--context", help="kubeconfig context to use")
    parser.add_argument("--liveness-port", type=int, default=8080,
                        help="port of the /healthz liveness endpoint (0 disables it)")
    parser.add_argument("--metrics-port", type=int, default=9090,
                        help="port of the Prometheus /metrics endpoint (0 disables it)")
    parser.add_argument("--bind-address", default="0.0.0.0", help="address of the liveness and metrics ports")
    parser.add_argument("--log-format", choices=("json", "text"),
                        help="default: MODELSERVE_LOG_FORMAT or json")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--server-image", help="default server image (MODELSERVE_SERVER_IMAGE)")
    parser.add_argument("--server-gpu-image", help="default GPU server image (MODELSERVE_SERVER_GPU_IMAGE)")
    parser.add_argument("--gpu-resource", help="default GPU resource name (MODELSERVE_GPU_RESOURCE)")
    parser.add_argument("--resync-seconds", type=float, default=DEFAULT_RESYNC_SECONDS,
                        help="safety-net reconcile interval per ModelDeployment")
    args = parser.parse_args(list(argv))

    config = OperatorConfig.from_env(environ)
    changes: dict[str, Any] = {}
    if args.all_namespaces:
        changes["watch_namespaces"] = ()
    elif args.namespace:
        changes["watch_namespaces"] = tuple(args.namespace)
    for flag, field in (("log_format", "log_format"), ("server_image", "server_image"),
                        ("server_gpu_image", "server_gpu_image"), ("gpu_resource", "gpu_resource")):
        if getattr(args, flag):
            changes[field] = getattr(args, flag)
    if changes:
        config = config.with_overrides(**changes)
    return Options(
        config=config, kubeconfig=args.kubeconfig, context=args.context,
        liveness_port=args.liveness_port, metrics_port=args.metrics_port, bind_address=args.bind_address,
        resync_seconds=args.resync_seconds, verbose=args.verbose,
    )


def configure_logging(options: Options) -> None:
    log_format = kopf.LogFormat.JSON if options.config.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=options.verbose, log_format=log_format)


async def operate(
    options: Options,
    *,
    configuration: Any | None = None,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    debounce: float = 0.5,
) -> None:
    """Run the operator until ``stop_flag`` is set (or a signal arrives)."""
    if configuration is None:
        configuration = load_configuration(options.kubeconfig, options.context)
    kube = Kube(configuration)
    reconciler = Reconciler(kube, options.config, debounce=debounce)
    registry = build_registry()
    settings = configure(kopf.OperatorSettings())
    liveness = (
        f"http://{options.bind_address}:{options.liveness_port}/healthz" if options.liveness_port else None
    )
    namespaces = options.config.watch_namespaces
    logger.info("watching %s", ", ".join(namespaces) if namespaces else "all namespaces")
    resync = asyncio.create_task(reconciler.resync_forever(namespaces, options.resync_seconds))
    try:
        await kopf.operator(
            registry=registry,
            settings=settings,
            memo=make_memo(reconciler, configuration),
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        resync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await resync
        await reconciler.close()
        kube.close()


def run(argv: Sequence[str]) -> int:
    """The ``modelserve operator`` command; returns the process exit code."""
    try:
        options = parse_args(argv)
    except ValueError as exc:  # a bad MODELSERVE_* value
        print(f"modelserve operator: {exc}", file=sys.stderr)
        return 2
    configure_logging(options)
    try:
        configuration = load_configuration(options.kubeconfig, options.context)
    except Exception as exc:  # kubernetes.config.ConfigException and file errors
        print(f"modelserve operator: cannot load Kubernetes credentials: {exc}", file=sys.stderr)
        return 2
    if options.metrics_port:
        try:
            metrics.serve(options.metrics_port, options.bind_address)
        except OSError as exc:  # the port is taken (or the address is not ours): say which, in one line
            where = f"{options.bind_address}:{options.metrics_port}"
            print(f"modelserve operator: cannot serve metrics on {where}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(operate(options, configuration=configuration))
    return 0

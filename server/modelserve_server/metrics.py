"""Every Prometheus metric the server exports, defined in this one module.

Why one module: metric names are an interface (dashboards, the HPA's custom-metrics adapter, the
README's table), so they are declared once, here, with their help text. Conventions: prefix
``modelserve_``, base units (seconds, bytes, ratios), counters end in ``_total``, and every label has
a bounded set of values: ``model``/``version`` only ever take configured values (requests for
unknown models are counted without a model label), ``code`` is an HTTP status number for both
protocols (499: the client cancelled), ``protocol`` is ``http`` or ``grpc``.

GPU series come from NVML (``nvidia-ml-py``) and exist only when an NVIDIA GPU is visible; on a
CPU-only machine they are absent rather than zero.

Each :class:`Metrics` owns its own ``CollectorRegistry`` so that several servers can live in one test
process without clashing in the global registry.

With ``--workers N`` (:mod:`modelserve_server.workers`) every worker process writes its values to
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode) and ``/metrics``, whichever
worker answers it, renders the sum over all workers: counters and histograms add up, the in-flight
and open-connection gauges are the sum over live workers, readiness and provider info their maximum.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from modelserve_server.parsing import ascii_uint

#: prometheus_client's multiprocess directory; set for its workers by modelserve_server.workers.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger(__name__)

# Latency buckets from 100 µs (an MLP at batch 1) to 10 s (a large CNN batch on CPU).
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

#: name -> help text; ``make generate`` (hack/reference.py) writes the README's metrics table from it.
METRIC_HELP: dict[str, str] = {
    "modelserve_requests_total": "Inference requests finished, by model, version, protocol and status code.",
    "modelserve_unknown_model_requests_total": "Requests naming a model or version not served here.",
    "modelserve_request_duration_seconds": "Time from a decoded request to its result (queue + compute).",
    "modelserve_queue_duration_seconds": "Time a request waited in the batching queue.",
    "modelserve_compute_duration_seconds": "ONNX Runtime execution time of the batch a request ran in.",
    "modelserve_batch_size": "Rows (first-dimension size) per executed batch.",
    "modelserve_inflight_requests": "Inference requests accepted and not yet answered (autoscaling signal).",
    "modelserve_model_ready": "1 when the model version is loaded and warmed, else 0.",
    "modelserve_model_provider_info": "1 for each ONNX Runtime execution provider a model version runs on.",
    "modelserve_http_open_connections": "HTTP connections open in this process (bounded, see Limits).",
    "modelserve_http_rejected_total": "HTTP connections refused before a request reached the server, "
    "by reason (header_too_large, header_timeout, body_timeout, connection_limit, malformed).",
    "modelserve_gpu_utilization_ratio": "GPU utilisation over the last sample period (0-1), per visible GPU.",
    "modelserve_gpu_memory_used_bytes": "GPU memory in use, per visible GPU.",
    "modelserve_gpu_memory_total_bytes": "GPU memory in total, per visible GPU.",
}

class Metrics:
    """The server's metrics on a private registry; ``render()`` produces the ``/metrics`` body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None, *, enable_gpu: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        h = METRIC_HELP
        self.requests = Counter(
            "modelserve_requests", h["modelserve_requests_total"],
            ["model", "version", "protocol", "code"], registry=r,
        )
        self.unknown_model_requests = Counter(
            "modelserve_unknown_model_requests", h["modelserve_unknown_model_requests_total"],
            ["protocol"], registry=r,
        )
        self.request_duration = Histogram(
            "modelserve_request_duration_seconds", h["modelserve_request_duration_seconds"],
            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_duration = Histogram(
            "modelserve_queue_duration_seconds", h["modelserve_queue_duration_seconds"],
            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.compute_duration = Histogram(
            "modelserve_compute_duration_seconds", h["modelserve_compute_duration_seconds"],
            ["model", "version"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "modelserve_batch_size", h["modelserve_batch_size"],
            ["model", "version"], buckets=_BATCH_BUCKETS, registry=r,
        )
        self.inflight = Gauge(
            "modelserve_inflight_requests", h["modelserve_inflight_requests"], ["model"], registry=r,
            multiprocess_mode="livesum",
        )
        self.model_ready = Gauge(
            "modelserve_model_ready", h["modelserve_model_ready"], ["model", "version"], registry=r,
            multiprocess_mode="livemax",
        )
        self.provider_info = Gauge(
            "modelserve_model_provider_info", h["modelserve_model_provider_info"],
            ["model", "version", "provider"], registry=r, multiprocess_mode="livemax",
        )
        self.http_open_connections = Gauge(
            "modelserve_http_open_connections", h["modelserve_http_open_connections"], registry=r,
            multiprocess_mode="livesum",
        )
        self.http_rejected = Counter(
            "modelserve_http_rejected", h["modelserve_http_rejected_total"], ["reason"], registry=r,
        )
        self.gpu: GpuCollector | None = GpuCollector.create() if enable_gpu else None
        if self.gpu is not None:
            r.register(self.gpu)
        self._exposed = r
        if os.environ.get(MULTIPROC_ENV):  # workers: expose the sum over every worker's files
            self._exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._exposed)  # type: ignore[no-untyped-call]
            if self.gpu is not None:
                self._exposed.register(self.gpu)

    def declare_model(self, model: str, version: str, providers: Iterable[str]) -> None:
        """Create a configured model's series up front (at 0), so dashboards see them before traffic."""
        self.model_ready.labels(model, version).set(0)
        self.inflight.labels(model)
        for child in (self.request_duration, self.queue_duration, self.compute_duration, self.batch_size):
            child.labels(model, version)
        for provider in providers:
            self.provider_info.labels(model, version, provider).set(1)

    def render(self) -> bytes:
        """The text exposition of every series."""
        return generate_latest(self._exposed)


class GpuCollector(Collector):
    """NVML GPU utilisation and memory for the GPUs this process may use.

    ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-<uuid>`` values) selects which NVML devices are
    reported; NVML itself ignores that variable and sees every GPU of the node.
    """

    def __init__(self, nvml: Any, handles: list[tuple[str, Any]]) -> None:
        self._nvml = nvml
        self._handles = handles

    @classmethod
    def create(cls) -> GpuCollector | None:
        """A collector when NVML loads and shows at least one visible GPU; else None (series absent)."""
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            handles = [(str(i), pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        except Exception as exc:  # no driver, no device: not an error on a CPU node
            log.debug("NVML unavailable: %s", exc)
            return None
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            wanted = [v.strip() for v in visible.split(",") if v.strip()]
            chosen: list[tuple[str, Any]] = []
            for w in wanted:
                index = ascii_uint(w)  # str.isdigit() is true for "²", which int() refuses
                if index is not None and index < len(handles):
                    chosen.append(handles[index])
                elif w.startswith("GPU-") or w.startswith("MIG-"):
                    try:
                        chosen.append((w, pynvml.nvmlDeviceGetHandleByUUID(w)))
                    except Exception:
                        continue
            handles = chosen
        if not handles:
            return None
        log.info("NVML: exporting metrics for GPU(s) %s", ", ".join(g for g, _ in handles))
        return cls(pynvml, handles)

    def collect(self) -> Iterator[Metric]:
        util = GaugeMetricFamily(
            "modelserve_gpu_utilization_ratio", METRIC_HELP["modelserve_gpu_utilization_ratio"],
            labels=["gpu"],
        )
        used = GaugeMetricFamily(
            "modelserve_gpu_memory_used_bytes", METRIC_HELP["modelserve_gpu_memory_used_bytes"],
            labels=["gpu"],
        )
        total = GaugeMetricFamily(
            "modelserve_gpu_memory_total_bytes", METRIC_HELP["modelserve_gpu_memory_total_bytes"],
            labels=["gpu"],
        )
        for gpu, handle in self._handles:
            try:
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # a GPU fell off the bus: report what we can
                log.warning("NVML query for GPU %s failed: %s", gpu, exc)
                continue
            util.add_metric([gpu], float(rates.gpu) / 100.0)
            used.add_metric([gpu], float(memory.used))
            total.add_metric([gpu], float(memory.total))
        yield util
        yield used
        yield total

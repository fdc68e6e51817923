"""InferenceService: the one transport-independent facade that REST and gRPC both call.

Why a facade: validation against the model, batching, running off the event loop, readiness and
metrics must behave identically whichever protocol a request came in on. The transports only decode
their wire format into :class:`~modelserve_server.types.InferRequest`, call :meth:`InferenceService.infer`,
and encode the :class:`~modelserve_server.types.InferResponse` (or the
:class:`~modelserve_server.errors.ModelserveError` it raised) back.

Life cycle: ``live()`` is true from construction; :meth:`load` resolves, loads and warms every model
(in worker threads, so health endpoints answer meanwhile) and only then does ``ready()`` turn true;
:meth:`begin_drain` (SIGTERM) turns readiness off at once while accepted requests still complete;
:meth:`drain` waits for them; :meth:`close` releases the worker threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from modelserve_server import __version__
from modelserve_server.batching.merge import merge, split
from modelserve_server.batching.scheduler import BatchScheduler, Pending
from modelserve_server.errors import InternalError, ModelNotFound, ModelserveError, NotReady
from modelserve_server.metrics import Metrics
from modelserve_server.model_info import ModelStats, model_config, model_metadata
from modelserve_server.repository import ModelIndex, version_sort_key
from modelserve_server.runtime.providers import ProviderPlan
from modelserve_server.runtime.session import ModelSession
from modelserve_server.types import InferOutput, InferRequest, InferResponse
from modelserve_server.validation import Work, prepare

log = logging.getLogger(__name__)

#: V2 extensions this server implements (``GET /v2``).
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics")

Result = dict[str, np.ndarray]


class _Version:
    """A loaded model version: its session, batching queue, statistics and metric children.

    The labelled metric children are resolved once here: ``labels()`` is a locked dict lookup, and
    the hot path would otherwise do seven of them per request.
    """

    def __init__(
        self, session: ModelSession, scheduler: BatchScheduler[Work, Result], metrics: Metrics
    ) -> None:
        self.session = session
        self.scheduler = scheduler
        self.stats = ModelStats()
        labels = (session.name, session.version)
        self.inflight = metrics.inflight.labels(session.name)
        self.request_duration = metrics.request_duration.labels(*labels)
        self.queue_duration = metrics.queue_duration.labels(*labels)
        self.compute_duration = metrics.compute_duration.labels(*labels)
        self.batch_size = metrics.batch_size.labels(*labels)
        self._requests = metrics.requests
        self._request_counters: dict[tuple[str, str], Any] = {}

    def count_request(self, protocol: str, code: str) -> None:
        counter = self._request_counters.get((protocol, code))
        if counter is None:
            counter = self._requests.labels(self.session.name, self.session.version, protocol, code)
            self._request_counters[(protocol, code)] = counter
        counter.inc()


class InferenceService:
    """Health, metadata and inference over the configured models (see the module docstring)."""

    def __init__(
        self,
        *,
        max_batch_size: int = 32,
        max_batch_delay_ms: float = 2.0,
        metrics: Metrics | None = None,
        max_workers: int | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max(0.0, max_batch_delay_ms) / 1000.0
        self.metrics = metrics if metrics is not None else Metrics()
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        self._models: dict[str, dict[str, _Version]] = {}
        self._defaults: dict[str, str] = {}
        self._expected: dict[str, set[str]] = {}  # configured but maybe not loaded yet
        self._ready = False
        self._draining = False
        self._inflight = 0

    # -- life cycle ------------------------------------------------------------------------------

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The worker threads that run ONNX Runtime (and blocking start-up work)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self._max_workers or 4, thread_name_prefix="ort")
        return self._executor

    async def load(self, index: ModelIndex, plan: ProviderPlan, *, intra_op_threads: int = 0) -> None:
        """Load and warm every model version of ``index``; readiness turns true when all are done.

        Raises :class:`~modelserve_server.errors.StartupError` (a session that cannot load, a provider
        that did not activate); the caller exits non-zero and the pod never turns ready.
        """
        loop = asyncio.get_running_loop()
        for entry in index.all():
            self._expected.setdefault(entry.name, set()).add(entry.version)
        for entry in index.all():
            session = await loop.run_in_executor(
                self.executor,
                functools.partial(
                    ModelSession, entry.name, entry.version, entry.path, plan,
                    intra_op_threads=intra_op_threads,
                ),
            )
            await loop.run_in_executor(self.executor, session.warmup)
            self.add_session(session)
        for name in index.files:
            self._defaults[name] = index.default_version(name)
        self._ready = True
        log.info("ready: %d model version(s) loaded", sum(len(v) for v in self._models.values()))

    def add_session(self, session: ModelSession) -> None:
        """Register a loaded, warmed session (``load`` calls this; tests may too). Needs a running loop."""
        scheduler: BatchScheduler[Work, Result] = BatchScheduler(
            functools.partial(self._run_batch, session),
            max_batch_size=self.max_batch_size,
            max_delay_s=self.max_batch_delay_s,
            batchable=session.batchable,
        )
        loaded = _Version(session, scheduler, self.metrics)
        self._models.setdefault(session.name, {})[session.version] = loaded
        self._expected.setdefault(session.name, set()).add(session.version)
        current = self._defaults.get(session.name)
        if current is None or version_sort_key(session.version) > version_sort_key(current):
            self._defaults[session.name] = session.version
        self.metrics.declare_model(session.name, session.version, session.providers)
        self.metrics.model_ready.labels(session.name, session.version).set(1)

    def mark_ready(self) -> None:
        """Declare start-up complete (``load`` does this itself)."""
        self._ready = True

    def begin_drain(self) -> None:
        """SIGTERM: readiness turns false at once; requests already accepted still complete."""
        if not self._draining:
            log.info("draining: readiness is now false; %d request(s) in flight", self._inflight)
        self._draining = True

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every accepted request to finish; True if all did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._inflight == 0 and all(
                v.scheduler.queued == 0 and v.scheduler.running == 0
                for versions in self._models.values()
                for v in versions.values()
            ):
                return True
            await asyncio.sleep(0.02)
        return self._inflight == 0

    def close(self) -> None:
        """Release the worker threads (after :meth:`drain`)."""
        for name, versions in self._models.items():
            for version in versions:
                self.metrics.model_ready.labels(name, version).set(0)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- health and metadata ---------------------------------------------------------------------

    def live(self) -> bool:
        """The process is up and its event loop answers (``/v2/health/live``)."""
        return True

    def ready(self) -> bool:
        """Every model is loaded and warmed and we are not draining (``/v2/health/ready``)."""
        return self._ready and not self._draining

    @property
    def inflight(self) -> int:
        """Inference requests accepted and not yet answered."""
        return self._inflight

    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``: name, version and the V2 extensions implemented."""
        return {"name": "modelserve", "version": __version__, "extensions": list(EXTENSIONS)}

    def model_names(self) -> list[str]:
        """Configured model names, sorted."""
        return sorted(self._expected)

    def versions(self, name: str) -> list[str]:
        """Configured versions of ``name``, ascending. Raises ModelNotFound."""
        if name not in self._expected:
            raise ModelNotFound(f"unknown model {name!r}")
        return sorted(self._expected[name], key=version_sort_key)

    def check_model(self, name: str, version: str | None = None) -> str:
        """Resolve ``version`` (None: the default) and return it; raises ModelNotFound / NotReady.

        Transports call this before decoding a body, so an unknown model is a 404 even when the body
        is also malformed.
        """
        return self._resolve(name, version).session.version

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Loaded and warmed (and not draining). Raises ModelNotFound for an unknown name or version."""
        try:
            self._resolve(name, version)
        except NotReady:
            return False
        return not self._draining

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """V2 model metadata: name, versions, platform, inputs/outputs (``-1`` dynamic), providers."""
        loaded = self._resolve(name, version)
        versions = self.versions(name) if version is None else [loaded.session.version]
        return model_metadata(loaded.session, versions)

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Triton's model configuration (``/v2/models/{m}/config``), as perf_analyzer reads it."""
        loaded = self._resolve(name, version)
        return model_config(
            loaded.session,
            max_batch_size=self.max_batch_size if loaded.session.batchable else 0,
            max_queue_delay_us=int(self.max_batch_delay_s * 1e6),
        )

    def model_stats(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        """Triton's statistics extension: every model (name None), one model, or one version."""
        selected: list[_Version] = []
        if name is None:
            selected = [v for n in sorted(self._models) for _, v in sorted(self._models[n].items())]
        elif version is None:
            self.versions(name)  # 404 for unknown names
            selected = [v for _, v in sorted(self._models.get(name, {}).items())]
        else:
            selected = [self._resolve(name, version)]
        return {
            "model_stats": [
                v.stats.as_triton(v.session.name, v.session.version) for v in selected
            ]
        }

    # -- inference -------------------------------------------------------------------------------

    def record_error(self, name: str, version: str | None, protocol: str, error: Exception) -> None:
        """Count a request that failed in the transport (e.g. undecodable body) before ``infer``."""
        status = error.http_status if isinstance(error, ModelserveError) else 500
        try:
            resolved = self._resolve(name, version).session.version
        except ModelserveError:
            self.metrics.unknown_model_requests.labels(protocol).inc()
            return
        loaded = self._models[name][resolved]
        loaded.count_request(protocol, str(status))
        loaded.stats.record_failure(0)

    async def infer(self, req: InferRequest, protocol: str) -> InferResponse:
        """Validate, batch, run (in a worker thread) and answer one request.

        Raises :class:`~modelserve_server.errors.ModelserveError` subclasses only: InvalidInput for
        anything wrong with the request, ModelNotFound, NotReady, InternalError.
        """
        started = time.perf_counter()
        try:
            loaded = self._resolve(req.model, req.version)
        except ModelserveError:
            self.metrics.unknown_model_requests.labels(protocol).inc()
            raise
        session = loaded.session
        name, version = session.name, session.version
        inflight = loaded.inflight
        inflight.inc()
        self._inflight += 1
        code = "200"
        try:
            work, rows, key = prepare(session, req, loaded.scheduler.batchable, self.max_batch_size)
            result = await loaded.scheduler.submit(work, rows, key)
            outputs = [
                InferOutput(n, session.output_by_name[n].datatype, tuple(result[n].shape), result[n])
                for n in work.requested
            ]
            elapsed = time.perf_counter() - started
            loaded.request_duration.observe(elapsed)
            loaded.stats.record_success(elapsed)
            return InferResponse(name, version, req.id, outputs)
        except ModelserveError as exc:
            code = str(exc.http_status)
            loaded.stats.record_failure(time.perf_counter() - started)
            raise
        except asyncio.CancelledError:  # the client went away (gRPC cancel, drain timeout)
            code = "499"
            raise
        except Exception as exc:  # a bug: report it as a 500 with a message, and log the trace
            log.exception("internal error in model %s version %s", name, version)
            code = "500"
            loaded.stats.record_failure(time.perf_counter() - started)
            raise InternalError(f"model {name} version {version}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._inflight -= 1
            inflight.dec()
            loaded.count_request(protocol, code)

    # -- internals -------------------------------------------------------------------------------

    def _resolve(self, name: str, version: str | None) -> _Version:
        versions = self._models.get(name)
        if versions is None:
            if name in self._expected:
                raise NotReady(f"model {name!r} is not loaded yet")
            raise ModelNotFound(f"unknown model {name!r}")
        if version is None or version == "":
            version = self._defaults.get(name)
            if version is None or version not in versions:
                raise NotReady(f"model {name!r} is not loaded yet")
        loaded = versions.get(version)
        if loaded is None:
            if version in self._expected.get(name, ()):
                raise NotReady(f"model {name!r} version {version!r} is not loaded yet")
            raise ModelNotFound(f"unknown version {version!r} of model {name!r}")
        return loaded

    async def _run_batch(self, session: ModelSession, batch: Sequence[Pending[Work, Result]]) -> list[Result]:
        """Merge a batch, run it in a worker thread, split the results (the scheduler's runner)."""
        loop = asyncio.get_running_loop()
        if len(batch) == 1:
            only = batch[0].payload
            feeds, names = only.feeds, only.run_outputs
        else:
            feeds = merge([p.payload.feeds for p in batch])
            wanted = {n for p in batch for n in p.payload.run_outputs}
            names = tuple(n for n in session.output_names if n in wanted)
        started = time.perf_counter()
        result = await loop.run_in_executor(self.executor, session.run, feeds, names)
        compute = time.perf_counter() - started
        parts = split(result, [p.rows for p in batch])
        loaded = self._models[session.name][session.version]
        rows = sum(p.payload.metric_rows for p in batch)
        loaded.batch_size.observe(rows)
        waits = [p.dispatched - p.enqueued for p in batch]
        loaded.stats.record_execution(rows, compute, waits)
        for wait in waits:
            loaded.queue_duration.observe(wait)
            loaded.compute_duration.observe(compute)
        return parts

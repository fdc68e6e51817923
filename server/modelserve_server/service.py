"""The data plane: the one transport-independent path that REST and gRPC both call.

Why a thin layer over a registry and loaded models: validation against the model, batching, running
off the event loop, readiness and metrics must behave identically whichever protocol a request came
in on. Naming facts live in :mod:`.registry`, per-version state in :mod:`.loaded`; this module only
sequences a request and the server's life cycle.

A request goes through :meth:`InferenceService.serve` once: its model is resolved once (an unknown
one is counted without a model label and answered before the body is decoded), the transport's
``decode`` runs with that model in hand (so it can check the signature before decoding tensor data,
and decode off the event loop), then validation, the batch queue and the transport's ``encode``.
Every outcome is counted in exactly one place, the ``finally`` of :meth:`serve`.

Life cycle: ``live()`` is true from construction; :meth:`load` resolves, loads and warms every model
(in worker threads, so health endpoints answer meanwhile) and only then does ``ready()`` turn true;
:meth:`begin_drain` (SIGTERM) turns readiness off at once while accepted requests still complete;
:meth:`drain` awaits every request and batch queue going idle; :meth:`cut_off` answers whatever is
left when the drain deadline passes; :meth:`close` releases the worker threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from modelserve_server import __version__
from modelserve_server.batching.scheduler import DEFAULT_INSTANCES, Clock
from modelserve_server.errors import InternalError, ModelserveError, NotReady
from modelserve_server.loaded import LoadedModel
from modelserve_server.metrics import Metrics
from modelserve_server.model_info import model_config, model_metadata
from modelserve_server.modelcheck import check_model
from modelserve_server.registry import ModelRegistry
from modelserve_server.repository import ModelIndex
from modelserve_server.runtime.providers import ProviderPlan
from modelserve_server.runtime.session import ModelSession
from modelserve_server.types import InferOutput, InferRequest, InferResponse
from modelserve_server.validation import prepare

log = logging.getLogger(__name__)

#: V2 extensions this server implements (``GET /v2``).
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics")

T = TypeVar("T")
#: A transport's decoder: the resolved model in, the decoded request out (may read the body).
Decode = Callable[[LoadedModel], Awaitable[InferRequest]]
#: A transport's encoder: the request and its response in, the wire form out.
Encode = Callable[[InferRequest, InferResponse], T]


class InferenceService:
    """Health, metadata and inference over the configured models (see the module docstring)."""

    def __init__(
        self,
        *,
        max_batch_size: int = 32,
        max_batch_delay_ms: float = 2.0,
        metrics: Metrics | None = None,
        max_workers: int | None = None,
        instances: int = DEFAULT_INSTANCES,
        clock: Clock | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max(0.0, max_batch_delay_ms) / 1000.0
        self.metrics = metrics if metrics is not None else Metrics()
        self.registry: ModelRegistry[LoadedModel] = ModelRegistry()
        self._clock = clock
        self.instances = instances
        self._max_workers = max_workers
        self._executor: ThreadPoolExecutor | None = None
        self._decoder: ThreadPoolExecutor | None = None
        self._draining = False
        self._stopped: NotReady | None = None  # set by cut_off: later requests fail with it
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- life cycle ------------------------------------------------------------------------------

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The worker threads that run ONNX Runtime (and blocking start-up work)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._max_workers or max(4, 2 * self.instances), thread_name_prefix="ort"
            )
        return self._executor

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the decode threads (large request bodies), keeping the loop free."""
        if self._decoder is None:
            self._decoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")
        return await asyncio.get_running_loop().run_in_executor(self._decoder, functools.partial(fn, *args))

    async def load(self, index: ModelIndex, plan: ProviderPlan, *, intra_op_threads: int = 0) -> None:
        """Load and warm every model version of ``index``; readiness turns true when all are done.

        Raises :class:`~modelserve_server.errors.StartupError` (a session that cannot load, a provider
        that did not activate); the caller exits non-zero and the pod never turns ready.
        """
        loop = asyncio.get_running_loop()
        for entry in index.all():
            self.registry.expect(entry.name, entry.version)
        for entry in index.all():
            # One-line reasons (not ONNX, opset too new, external data missing) before ONNX Runtime.
            await loop.run_in_executor(self.executor, check_model, entry.path)
            session = await loop.run_in_executor(
                self.executor,
                functools.partial(
                    ModelSession, entry.name, entry.version, entry.path, plan,
                    intra_op_threads=intra_op_threads,
                ),
            )
            await loop.run_in_executor(self.executor, session.warmup)
            if self.max_batch_size > 1 and not session.batchable:
                log.warning(
                    "model %s version %s has no dynamic first dimension (or its outputs do not follow "
                    "it): it is served without batching although --max-batch-size is %d",
                    session.name, session.version, self.max_batch_size,
                )
            self.add_session(session)
        for name in index.files:
            self.registry.set_default(name, index.default_version(name))
        self.registry.mark_complete()
        log.info("ready: %d model version(s) loaded", self.registry.count())

    def add_session(self, session: ModelSession) -> LoadedModel:
        """Register a loaded, warmed session (``load`` calls this; tests may too). Needs a running loop."""
        model = LoadedModel(
            session, self.metrics, self.executor,
            max_batch_size=self.max_batch_size, max_delay_s=self.max_batch_delay_s,
            instances=self.instances, clock=self._clock,
        )
        self.registry.add(session.name, session.version, model)
        model.ready_gauge.set(1)
        return model

    def begin_drain(self) -> None:
        """SIGTERM: readiness turns false at once; requests already accepted still complete."""
        if not self._draining:
            log.info("draining: readiness is now false; %d request(s) in flight", self._inflight)
        self._draining = True

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every request and batch queue to go idle; True if they did."""

        async def idle() -> None:
            while True:
                await self._idle.wait()
                await asyncio.gather(*(m.scheduler.wait_idle() for m in self.registry.loaded()))
                if self._inflight == 0:
                    return

        try:
            await asyncio.wait_for(idle(), timeout=max(0.0, timeout))
        except TimeoutError:
            return False
        return True

    def cut_off(self) -> int:
        """The drain deadline passed: answer every unfinished request with 503; returns how many.

        Requests still queued or in a running batch fail at once with :class:`NotReady` (the batch
        itself cannot be interrupted; its result is discarded), and so does any request that reaches
        the queue afterwards.
        """
        error = NotReady("the server shut down before this request finished (drain deadline passed)")
        self._stopped = error
        unfinished = self._inflight
        for model in self.registry.loaded():
            model.scheduler.abort(error)
        return unfinished

    def close(self) -> None:
        """Release the worker threads (after :meth:`drain`)."""
        for model in self.registry.loaded():
            model.ready_gauge.set(0)
        for pool in (self._executor, self._decoder):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._executor = self._decoder = None

    # -- health and metadata ---------------------------------------------------------------------

    def live(self) -> bool:
        """The process is up and its event loop answers (``/v2/health/live``)."""
        return True

    def ready(self) -> bool:
        """Every model is loaded and warmed and we are not draining (``/v2/health/ready``)."""
        return self.registry.complete and not self._draining

    @property
    def inflight(self) -> int:
        """Inference requests accepted and not yet answered."""
        return self._inflight

    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``: name, version and the V2 extensions implemented."""
        return {"name": "modelserve", "version": __version__, "extensions": list(EXTENSIONS)}

    def model_names(self) -> list[str]:
        """Configured model names, sorted."""
        return self.registry.names()

    def versions(self, name: str) -> list[str]:
        """Configured versions of ``name``, ascending. Raises ModelNotFound."""
        return self.registry.versions(name)

    def resolve(self, name: str, version: str | None = None) -> LoadedModel:
        """The loaded model (None: the default version); raises ModelNotFound / NotReady."""
        return self.registry.resolve(name, version)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Loaded and warmed (and not draining). Raises ModelNotFound for an unknown name or version."""
        try:
            self.registry.resolve(name, version)
        except NotReady:
            return False
        return not self._draining

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """V2 model metadata: name, versions, platform, inputs/outputs (``-1`` dynamic), providers."""
        model = self.registry.resolve(name, version)
        versions = self.registry.versions(name) if version is None else [model.version]
        return model_metadata(model.session, versions)

    def model_config(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Triton's model configuration (``/v2/models/{m}/config``), as perf_analyzer reads it."""
        model = self.registry.resolve(name, version)
        return model_config(
            model.session,
            max_batch_size=self.max_batch_size if model.session.batchable else 0,
            max_queue_delay_us=int(self.max_batch_delay_s * 1e6),
        )

    def model_stats(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        """Triton's statistics extension: every model (name None), one model, or one version."""
        if name is None:
            selected = list(self.registry.loaded())
        elif version is None:
            self.registry.versions(name)  # 404 for unknown names
            selected = list(self.registry.loaded(name))
        else:
            selected = [self.registry.resolve(name, version)]
        return {"model_stats": [m.stats.as_triton(m.name, m.version) for m in selected]}

    # -- inference -------------------------------------------------------------------------------

    async def serve(
        self, protocol: str, name: str, version: str | None, decode: Decode, encode: Encode[T]
    ) -> T:
        """Resolve, decode, validate, batch, run and encode one request (see the module docstring).

        Raises :class:`~modelserve_server.errors.ModelserveError` subclasses only: InvalidInput for
        anything wrong with the request, PayloadTooLarge, ModelNotFound, NotReady, InternalError.
        """
        try:
            model = self.registry.resolve(name, version)
        except ModelserveError:
            self.metrics.unknown_model_requests.labels(protocol).inc()
            raise
        started = time.perf_counter()
        model.inflight.inc()
        self._inflight += 1
        self._idle.clear()
        code = "200"
        try:
            req = await decode(model)
            if self._stopped is not None:
                raise self._stopped
            session = model.session
            work, rows, key = prepare(session, req, model.scheduler.batchable, self.max_batch_size)
            result = await model.scheduler.submit(work, rows, key)
            outputs = [
                InferOutput(n, session.output_by_name[n].datatype, tuple(result[n].shape), result[n])
                for n in work.requested
            ]
            out = encode(req, InferResponse(model.name, model.version, req.id, outputs))
            elapsed = time.perf_counter() - started
            model.request_duration.observe(elapsed)
            model.stats.record_success(elapsed)
            return out
        except ModelserveError as exc:
            code = str(exc.http_status)
            model.stats.record_failure(time.perf_counter() - started)
            raise
        except asyncio.CancelledError:  # the client went away (gRPC cancel, drain timeout)
            code = "499"
            raise
        except Exception as exc:  # a bug: report it as a 500 with a message, and log the trace
            log.exception("internal error in model %s version %s", model.name, model.version)
            code = "500"
            model.stats.record_failure(time.perf_counter() - started)
            raise InternalError(
                f"model {model.name} version {model.version}: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()
            model.inflight.dec()
            model.count_request(protocol, code)

    async def infer(self, req: InferRequest, protocol: str) -> InferResponse:
        """:meth:`serve` for an already decoded request (in-process callers and tests)."""

        async def decoded(_: LoadedModel) -> InferRequest:
            return req

        return await self.serve(protocol, req.model, req.version, decoded, lambda _, resp: resp)


"""A loaded model version: its session, its batching queue with the runner bound to it, its metric
children and its statistics.

Why one object: everything that happens to a request after it resolved its model (validation
against the signature, queueing, the batch run in a worker thread, the latency histograms, Triton's
statistics, the request counter) reads the same few facts. Keeping them on one object means the hot
path does no second lookup, and the metric children are resolved once here (``labels()`` is a locked
dict lookup; the hot path would otherwise do seven of them per request).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from modelserve_server.batching.merge import merge, split
from modelserve_server.batching.scheduler import DEFAULT_INSTANCES, BatchScheduler, Clock, Pending
from modelserve_server.metrics import Metrics
from modelserve_server.model_info import ModelStats
from modelserve_server.runtime.session import ModelSession
from modelserve_server.validation import Work

Result = dict[str, np.ndarray]


class LoadedModel:
    """One served model version (see the module docstring). Needs a running event loop to build."""

    def __init__(
        self,
        session: ModelSession,
        metrics: Metrics,
        executor: Executor,
        *,
        max_batch_size: int,
        max_delay_s: float,
        instances: int = DEFAULT_INSTANCES,
        clock: Clock | None = None,
    ) -> None:
        self.session = session
        self.name = session.name
        self.version = session.version
        self.max_batch_size = max_batch_size
        self._executor = executor
        self.scheduler: BatchScheduler[Work, Result] = BatchScheduler(
            self._run_batch,
            max_batch_size=max_batch_size,
            max_delay_s=max_delay_s,
            batchable=session.batchable,
            instances=instances,
            clock=clock,
        )
        self.stats = ModelStats()
        labels = (session.name, session.version)
        metrics.declare_model(session.name, session.version, session.providers)
        self.ready_gauge = metrics.model_ready.labels(*labels)
        self.inflight = metrics.inflight.labels(session.name)
        self.request_duration = metrics.request_duration.labels(*labels)
        self.queue_duration = metrics.queue_duration.labels(*labels)
        self.compute_duration = metrics.compute_duration.labels(*labels)
        self.batch_size = metrics.batch_size.labels(*labels)
        self._requests = metrics.requests
        self._request_counters: dict[tuple[str, str], Any] = {}

    def count_request(self, protocol: str, code: str) -> None:
        """``modelserve_requests_total`` for this version (the data plane's one counting place calls it)."""
        counter = self._request_counters.get((protocol, code))
        if counter is None:
            counter = self._requests.labels(self.name, self.version, protocol, code)
            self._request_counters[(protocol, code)] = counter
        counter.inc()

    async def _run_batch(self, batch: Sequence[Pending[Work, Result]]) -> list[Result]:
        """Merge a batch, run it in a worker thread, split the results (the scheduler's runner)."""
        session = self.session
        if len(batch) == 1:
            only = batch[0].payload
            feeds, names = only.feeds, only.run_outputs
        else:
            feeds = merge([p.payload.feeds for p in batch])
            wanted = {n for p in batch for n in p.payload.run_outputs}
            names = tuple(n for n in session.output_names if n in wanted)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, session.run, feeds, names)
        compute = time.perf_counter() - started
        parts = split(result, [p.rows for p in batch])
        rows = sum(p.payload.metric_rows for p in batch)
        self.batch_size.observe(rows)
        waits = [p.dispatched - p.enqueued for p in batch]
        self.stats.record_execution(rows, compute, waits)
        for wait in waits:
            self.queue_duration.observe(wait)
            self.compute_duration.observe(compute)
        return parts

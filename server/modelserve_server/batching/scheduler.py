"""Dynamic batching: decide which queued requests run together, and when.

One :class:`BatchScheduler` per model version. Requests are queued by a *key* (their shape signature
without the first dimension: requests whose other dims differ are batched separately) and dispatched
to an async ``runner`` that executes a whole batch. At most ``instances`` batches of a model run at
once (Triton's instance count; ``--instances``, default 1). Why more than one: one batch runs while
the next is merged and its predecessor's answers are split and sent, each run on fewer intra-op
threads. Measured for the CNN on 2 cores under load (README, "Instances"), not yet in ``make bench``,
so the default stays 1.

When a batch leaves the queue (``max_delay`` measured on the monotonic clock):

* A queue holding at least ``max_batch_size`` rows leaves at once: a full batch never waits.
* A request that arrives while an instance is free and nothing is queued leaves on the next
  event-loop turn, together with whatever else arrived in that turn. Waiting for company while the
  hardware idles would only add latency: at concurrency 1 every request would pay ``max_delay``.
* Requests that queued up while every instance was busy wait until the oldest of them has waited
  ``max_delay`` (or the queue is full) and an instance is free, so that the clients answered by a
  running batch can join.
* A model that cannot be batched (static first dimension) runs one request per batch, FIFO.

A single request larger than ``max_batch_size`` rows still runs (alone): requests are never split.
The scheduler never touches tensors; merging and splitting is :mod:`.merge`'s job. Time comes from an
injectable :class:`Clock` (the event loop's monotonic clock by default), so tests drive the delays
without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from modelserve_server.errors import InternalError, ModelserveError

P = TypeVar("P")
R = TypeVar("R")

DEFAULT_INSTANCES = 1
"""Batches of one model that may run at once unless ``--instances`` says otherwise: one, because
two have not yet been measured by a quiet ``make bench`` (see the module docstring)."""


@dataclass(slots=True, eq=False)
class Pending(Generic[P, R]):
    """A queued request: the runner reads ``payload`` and the timing fields."""

    payload: P
    rows: int
    key: Hashable
    future: asyncio.Future[R]
    enqueued: float
    eager: bool
    dispatched: float = 0.0


@dataclass(slots=True)
class _Queue(Generic[P, R]):
    items: deque[Pending[P, R]] = field(default_factory=deque)
    rows: int = 0


Runner = Callable[[Sequence[Pending[P, R]]], Awaitable[Sequence[R]]]


class Timer(Protocol):
    """A scheduled callback that can be cancelled (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Where the scheduler reads the time and sets its timers."""

    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...


class LoopClock:
    """The monotonic clock and the running event loop's timers (what production uses)."""

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


class BatchScheduler(Generic[P, R]):
    """Queues requests per shape key and hands batches to ``runner`` (see the module docstring)."""

    def __init__(
        self,
        runner: Runner[P, R],
        *,
        max_batch_size: int,
        max_delay_s: float,
        batchable: bool,
        instances: int = DEFAULT_INSTANCES,
        clock: Clock | None = None,
    ) -> None:
        if max_batch_size < 1 or max_delay_s < 0 or instances < 1:
            raise ValueError("max_batch_size and instances must be >= 1, max_delay_s >= 0")
        self._runner = runner
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.batchable = batchable and max_batch_size > 1
        self.instances = instances
        self._clock: Clock = clock if clock is not None else LoopClock()
        self._queues: dict[Hashable, _Queue[P, R]] = {}
        self._running = 0
        self._running_items: set[Pending[P, R]] = set()
        self._queued = 0
        self._poke_scheduled = False
        self._timer: Timer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queued(self) -> int:
        """Requests waiting (not yet dispatched)."""
        return self._queued

    @property
    def running(self) -> int:
        """Batches currently executing."""
        return self._running

    def submit(self, payload: P, rows: int, key: Hashable) -> asyncio.Future[R]:
        """Queue one request of ``rows`` rows; the returned future resolves to the runner's result."""
        loop = asyncio.get_running_loop()
        if not self.batchable:
            key = None  # one FIFO queue, one request per batch
        eager = self._running < self.instances and self._queued == 0
        item: Pending[P, R] = Pending(payload, rows, key, loop.create_future(), self._clock.now(), eager)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        queue.items.append(item)
        queue.rows += rows
        self._queued += 1
        self._idle.clear()
        if not self._poke_scheduled:
            # Dispatch on the next loop turn, so requests arriving in this turn join the batch.
            self._poke_scheduled = True
            loop.call_soon(self._schedule)
        return item.future

    async def wait_idle(self) -> None:
        """Return once nothing is queued or running (used when draining on SIGTERM)."""
        await self._idle.wait()

    def abort(self, error: BaseException) -> int:
        """Fail every queued and running request with ``error``; returns how many were cut off.

        Used when the drain deadline passes: the callers answer at once (a running batch cannot be
        interrupted, so its result is discarded when it ends).
        """
        cut = 0
        for queue in self._queues.values():
            for item in queue.items:
                if not item.future.done():
                    item.future.set_exception(error)
                    cut += 1
        for item in self._running_items:
            if not item.future.done():
                item.future.set_exception(error)
                cut += 1
        return cut

    # -- internals -------------------------------------------------------------------------------

    def _ready_at(self, queue: _Queue[P, R]) -> float:
        head = queue.items[0]
        if not self.batchable or head.eager or queue.rows >= self.max_batch_size:
            return head.enqueued
        return head.enqueued + self.max_delay_s

    def _schedule(self) -> None:
        self._poke_scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._running < self.instances and self._queues:
            key, queue = min(self._queues.items(), key=lambda kv: self._ready_at(kv[1]))
            ready_at = self._ready_at(queue)
            now = self._clock.now()
            if ready_at > now:
                self._timer = self._clock.call_later(ready_at - now, self._schedule)
                return
            self._dispatch(key, queue)
        self._update_idle()

    def _take(self, key: Hashable, queue: _Queue[P, R]) -> list[Pending[P, R]]:
        limit = self.max_batch_size if self.batchable else 1
        batch: list[Pending[P, R]] = []
        rows = 0
        while queue.items:
            head = queue.items[0]
            if batch and rows + head.rows > limit:
                break
            queue.items.popleft()
            queue.rows -= head.rows
            self._queued -= 1
            if head.future.done():  # the caller gave up (cancelled) while queued
                continue
            batch.append(head)
            rows += head.rows
            if not self.batchable:
                break
        if not queue.items:
            del self._queues[key]
        return batch

    def _dispatch(self, key: Hashable, queue: _Queue[P, R]) -> None:
        batch = self._take(key, queue)
        if not batch:
            return
        now = self._clock.now()
        for item in batch:
            item.dispatched = now
        self._running += 1
        self._running_items.update(batch)
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[Pending[P, R]]) -> None:
        try:
            results = await self._runner(batch)
            if len(results) != len(batch):
                raise InternalError(f"batch runner returned {len(results)} results for {len(batch)} requests")
        except ModelserveError as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
        except Exception as exc:  # a bug in the runner: fail the batch, keep the scheduler alive
            error = InternalError(f"batch failed: {type(exc).__name__}: {exc}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
        else:
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
        finally:
            self._running -= 1
            self._running_items.difference_update(batch)
            self._schedule()

    def _update_idle(self) -> None:
        if self._running == 0 and self._queued == 0:
            self._idle.set()

"""When reconciles run: per-object locks, debounced pokes, the resync, and the one retry policy.

Why apart from the pass itself (:mod:`modelserve_operator.reconcile`): a reconcile is started
from three places (kopf's create/update/resume handlers, a child's watch event, the slow
safety-net resync), and all three must agree on

* **one lock per ModelDeployment**: passes of the same object never overlap;
* **debounce**: a burst of child events (a rollout produces dozens of pod updates) within the
  window coalesces into one pass;
* **one retry/backoff policy** (:data:`RETRY`): kopf's handlers hand kopf the delay it
  computes for their retry count, and pokes sleep the same delays themselves. A spec that can
  never work (:class:`SpecProblem`) is not retried until it changes; a transient failure
  (:class:`RetryLater`) doubles its first delay per attempt up to a cap.

No kopf here (an import-linter contract keeps it so): this module and the pass raise and
catch plain exceptions, and ``handlers`` translates them into kopf's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from modelserve_operator import metrics
from modelserve_operator.status import Problem

logger = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, name) of a ModelDeployment."""
DEFAULT_RESYNC_SECONDS = 300.0


class SpecProblem(Exception):
    """The spec cannot work as written; retrying without a spec change is pointless."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.reason}: {problem.message}")
        self.problem = problem


class RetryLater(Exception):
    """A transient failure (API 5xx, throttling, conflicts): retry after ``delay`` seconds at first."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``first * 2**attempt``, capped; pokes give up after ``attempts``."""

    cap: float = 60.0
    attempts: int = 6
    conflict_delay: float = 2.0
    """First delay after a conflict (409) or throttling (429): these clear fast."""
    error_delay: float = 5.0
    """First delay after any other API failure."""
    unexpected_delay: float = 2.0
    """First delay after an exception that is not an API failure (a bug, logged with its traceback)."""

    def first_delay(self, status: int) -> float:
        """The first delay after an API answer with HTTP ``status`` (0: no answer)."""
        return self.conflict_delay if status in (409, 429) else self.error_delay

    def delay(self, first: float, attempt: int) -> float:
        """The delay before retry number ``attempt`` (0-based) of a failure whose first delay is ``first``."""
        return min(self.cap, first * float(2 ** min(attempt, self.attempts)))


RETRY = RetryPolicy()
"""The operator's one retry policy (kopf handlers and pokes)."""

Work = Callable[[str, str, str], Awaitable[object]]
"""A pass: ``(namespace, name, trigger)``; raises SpecProblem or RetryLater."""


class WorkQueue:
    """Locks, debounced pokes with retries, and the resync loop around one ``work`` function."""

    def __init__(self, work: Work, *, debounce: float = 0.5, policy: RetryPolicy = RETRY) -> None:
        self.work = work
        self.debounce = debounce
        self.policy = policy
        self._locks: dict[Key, asyncio.Lock] = {}
        self._pending: dict[Key, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def lock(self, key: Key) -> asyncio.Lock:
        """The lock of one ModelDeployment: a pass holds it from its read to its status write."""
        return self._locks.setdefault(key, asyncio.Lock())

    def poke(self, namespace: str, name: str, trigger: str) -> None:
        """Schedule a pass soon; pokes within the debounce window coalesce into one."""
        key = (namespace, name)
        task = self._pending.get(key)
        if task is not None and not task.done():
            return
        task = asyncio.create_task(self._poked(key, trigger), name=f"reconcile {key}")
        self._pending[key] = task
        self._tasks.add(task)
        metrics.WORKQUEUE_DEPTH.inc()
        task.add_done_callback(self._done)

    @property
    def depth(self) -> int:
        """Poked passes not finished yet: debouncing, running, or waiting to retry."""
        return len(self._tasks)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        metrics.WORKQUEUE_DEPTH.dec()

    async def resync_forever(self, list_keys: Callable[[], Awaitable[list[Key]]], interval: float) -> None:
        """The safety net for anything a watch missed: every ``interval``, poke every object."""
        while True:
            await asyncio.sleep(interval)
            for key in await list_keys():
                self.poke(*key, "resync")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _poked(self, key: Key, trigger: str) -> None:
        await asyncio.sleep(self.debounce)
        self._pending.pop(key, None)  # events from now on schedule another pass
        for attempt in range(self.policy.attempts):
            try:
                await self.work(*key, trigger)
                return
            except SpecProblem:
                return  # reported in status; the next spec change will try again
            except RetryLater as exc:
                delay = self.policy.delay(exc.delay, attempt)
                logger.info("reconcile of %s/%s will be retried in %.0fs: %s", *key, delay, exc)
            except Exception:
                delay = self.policy.delay(self.policy.unexpected_delay, attempt)
                logger.exception("reconcile of %s/%s failed; retrying in %.0fs", *key, delay)
            await asyncio.sleep(delay)

"""Unit tests of the batching core: merge/split (pure numpy) and the scheduler (pure asyncio).

No server, no ONNX Runtime: the scheduler is driven with a fake runner that records its batches and
a :class:`FakeClock` that only moves when a test advances it, so no test sleeps or depends on the
machine's speed: "the delay was honoured" is asserted on the fake clock, exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from modelserve_server.batching.merge import batch_key, batch_rows, merge, split
from modelserve_server.batching.scheduler import BatchScheduler, Pending, Timer
from modelserve_server.errors import InternalError, InvalidInput

# -- merge / split ---------------------------------------------------------------------------------


def test_merge_concatenates_without_mutating() -> None:
    a = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array([[b"a"], [b"b"]], dtype=object)}
    b = {"x": np.arange(3, dtype=np.float32).reshape(1, 3), "s": np.array([[b"c"]], dtype=object)}
    before = {k: v.copy() for k, v in a.items()}
    merged = merge([a, b])
    assert merged["x"].shape == (3, 3) and merged["s"].tolist() == [[b"a"], [b"b"], [b"c"]]
    merged["x"][:] = -1
    for k in a:
        np.testing.assert_array_equal(a[k], before[k])


def test_merge_of_one_is_the_same_arrays() -> None:
    x = np.zeros((2, 3), dtype=np.float32)
    assert merge([{"x": x}])["x"] is x
    with pytest.raises(ValueError):
        merge([])


def test_split_returns_views_by_rows() -> None:
    out = {"y": np.arange(12).reshape(6, 2), "z": np.arange(6)}
    parts = split(out, [1, 3, 2])
    assert [p["y"].shape[0] for p in parts] == [1, 3, 2]
    np.testing.assert_array_equal(parts[1]["y"], out["y"][1:4])
    np.testing.assert_array_equal(parts[2]["z"], [4, 5])
    assert np.shares_memory(parts[1]["y"], out["y"])  # no copy
    assert split(out, [6])[0]["y"] is out["y"]


def test_split_refuses_outputs_that_do_not_follow_the_batch() -> None:
    with pytest.raises(InternalError, match="does not follow"):
        split({"y": np.zeros((5, 2))}, [2, 2])
    with pytest.raises(InternalError):
        split({"y": np.float32(1.0) * np.ones(())}, [1, 1])


def test_batch_rows_and_key() -> None:
    assert batch_rows({"a": np.zeros((3, 2)), "b": np.zeros((3,))}) == 3
    assert batch_rows({"a": np.zeros((3, 2)), "b": np.zeros((2,))}) is None
    assert batch_rows({"a": np.zeros(())}) is None
    k1 = batch_key({"a": np.zeros((3, 2), np.float32)})
    assert k1 == batch_key({"a": np.zeros((7, 2), np.float32)})
    assert k1 != batch_key({"a": np.zeros((3, 5), np.float32)})
    assert k1 != batch_key({"a": np.zeros((3, 2), np.float64)})


# -- scheduler ------------------------------------------------------------------------------------


class Recorder:
    """A runner that records batches; ``gate`` (when set) holds each batch until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None
        self.dispatch_delays: list[float] = []

    async def __call__(self, batch: Sequence[Pending[str, str]]) -> list[str]:
        self.batches.append([p.payload for p in batch])
        self.dispatch_delays += [p.dispatched - p.enqueued for p in batch]
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [f"done:{p.payload}" for p in batch]


class FakeClock:
    """A clock for the scheduler that moves only in :meth:`advance`, firing the timers that fall due."""

    def __init__(self) -> None:
        self.time = 1000.0
        self._timers: list[tuple[float, Callable[[], None], _Handle]] = []

    def now(self) -> float:
        return self.time

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        handle = _Handle()
        self._timers.append((self.time + delay, callback, handle))
        return handle

    async def advance(self, seconds: float) -> None:
        self.time += seconds
        due = [t for t in self._timers if t[0] <= self.time]
        self._timers = [t for t in self._timers if t[0] > self.time]
        for _, callback, handle in sorted(due, key=lambda t: t[0]):
            if not handle.cancelled:
                callback()
        await settle()


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


async def settle() -> None:
    """Let every ready callback and task run (a few loop turns; no wall-clock time is involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


def scheduler(runner: Recorder, clock: FakeClock | None = None, **kw: object) -> BatchScheduler[str, str]:
    args: dict[str, object] = {"max_batch_size": 4, "max_delay_s": 0.05, "batchable": True, **kw}
    return BatchScheduler(runner, clock=clock or FakeClock(), **args)  # type: ignore[arg-type]


async def test_idle_request_does_not_wait_for_the_delay() -> None:
    runner = Recorder()
    sched = scheduler(runner, max_delay_s=30.0)
    result = await asyncio.wait_for(sched.submit("a", 1, "k"), timeout=10)
    assert result == "done:a" and runner.batches == [["a"]]


async def test_same_turn_arrivals_share_a_batch() -> None:
    runner = Recorder()
    sched = scheduler(runner, max_delay_s=30.0)
    futures = [sched.submit(p, 1, "k") for p in "abc"]
    assert await asyncio.gather(*futures) == ["done:a", "done:b", "done:c"]
    assert runner.batches == [["a", "b", "c"]]


async def test_full_batch_behind_a_running_one_leaves_at_once() -> None:
    runner = Recorder()
    runner.gate = asyncio.Event()
    clock = FakeClock()
    sched = scheduler(runner, clock, max_delay_s=30.0)
    first = sched.submit("first", 1, "k")
    await settle()
    assert runner.batches == [["first"]] and sched.running == 1
    rest = [sched.submit(p, 1, "k") for p in "abcd"]  # exactly max_batch_size rows
    await settle()
    assert sched.queued == 4
    runner.gate.set()
    await settle()  # the clock has not moved: far less than the 30 s delay
    assert all(f.done() for f in (first, *rest))
    await asyncio.gather(first, *rest)
    assert runner.batches == [["first"], ["a", "b", "c", "d"]]


async def test_partial_batch_behind_a_running_one_waits_for_the_delay() -> None:
    runner = Recorder()
    runner.gate = asyncio.Event()
    clock = FakeClock()
    sched = scheduler(runner, clock, max_delay_s=0.2)
    first = sched.submit("first", 1, "k")
    await settle()
    queued_at = clock.now()
    rest = [sched.submit(p, 1, "k") for p in "ab"]
    runner.gate.set()
    await settle()
    assert first.done() and not any(f.done() for f in rest)
    await clock.advance(0.19)
    assert not any(f.done() for f in rest)  # not before the delay
    await clock.advance(0.01)
    await asyncio.gather(first, *rest)
    assert clock.now() - queued_at >= 0.2
    assert runner.batches == [["first"], ["a", "b"]]
    assert min(runner.dispatch_delays[1:]) >= 0.2


async def test_rows_limit_and_oversized_request() -> None:
    runner = Recorder()
    runner.gate = asyncio.Event()
    sched = scheduler(runner, max_delay_s=0.0)
    blocker = sched.submit("blocker", 1, "k")
    await settle()
    futures = [sched.submit("three-a", 3, "k"), sched.submit("three-b", 3, "k"), sched.submit("ten", 10, "k")]
    runner.gate.set()
    await asyncio.gather(blocker, *futures)
    assert runner.batches == [["blocker"], ["three-a"], ["three-b"], ["ten"]]


async def test_different_keys_are_batched_separately() -> None:
    runner = Recorder()
    clock = FakeClock()
    sched = scheduler(runner, clock)
    futures = [sched.submit("a1", 1, "A"), sched.submit("b1", 1, "B"), sched.submit("a2", 1, "A")]
    await settle()
    await clock.advance(0.05)  # B queued behind A's batch: it leaves after the delay
    await asyncio.gather(*futures)
    assert sorted(runner.batches) == [["a1", "a2"], ["b1"]]


async def test_unbatchable_model_runs_one_request_per_batch_in_order() -> None:
    runner = Recorder()
    sched = scheduler(runner, batchable=False)
    futures = [sched.submit(p, 1, p) for p in "abc"]
    await asyncio.gather(*futures)
    assert runner.batches == [["a"], ["b"], ["c"]]


async def test_runner_error_fails_its_batch_only() -> None:
    runner = Recorder()
    runner.fail_with = InvalidInput("bad batch")
    sched = scheduler(runner)
    futures = [sched.submit(p, 1, "k") for p in "ab"]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, InvalidInput) for r in results)
    runner.fail_with = RuntimeError("bug")
    with pytest.raises(InternalError, match="bug"):
        await sched.submit("c", 1, "k")
    runner.fail_with = None
    assert await sched.submit("d", 1, "k") == "done:d"


async def test_cancelled_request_is_skipped_and_idle_is_reported() -> None:
    runner = Recorder()
    runner.gate = asyncio.Event()
    sched = scheduler(runner, max_delay_s=0.0)
    blocker = sched.submit("blocker", 1, "k")
    await settle()
    gone = sched.submit("gone", 1, "k")
    kept = sched.submit("kept", 1, "k")
    gone.cancel()
    runner.gate.set()
    await asyncio.gather(blocker, kept)
    await asyncio.wait_for(sched.wait_idle(), timeout=10)
    assert ["gone"] not in runner.batches and any("kept" in b for b in runner.batches)
    assert sched.queued == 0 and sched.running == 0


async def test_two_instances_run_a_second_batch_while_the_first_runs() -> None:
    runner = Recorder()
    runner.gate = asyncio.Event()
    clock = FakeClock()
    sched = scheduler(runner, clock, max_delay_s=0.2, instances=2)
    first = sched.submit("first", 1, "k")
    await settle()
    second = sched.submit("second", 1, "k")  # an instance is free and nothing is queued: at once
    await settle()
    assert runner.batches == [["first"], ["second"]] and sched.running == 2
    rest = [sched.submit(p, 1, "k") for p in "ab"]  # both instances busy: they wait as with one
    await settle()
    await clock.advance(0.2)
    assert sched.queued == 2 and sched.running == 2  # the delay is over, but no instance is free
    runner.gate.set()
    await asyncio.gather(first, second, *rest)
    assert runner.batches == [["first"], ["second"], ["a", "b"]]
    assert sched.running == 0


async def test_abort_fails_the_requests_of_every_running_batch() -> None:
    runner = Recorder()
    runner.gate = asyncio.Event()
    clock = FakeClock()
    sched = scheduler(runner, clock, instances=2)
    running = [sched.submit("x", 1, "k")]
    await settle()
    running.append(sched.submit("y", 1, "k"))
    await settle()
    queued = sched.submit("z", 1, "k")
    await settle()
    assert sched.running == 2 and sched.queued == 1
    assert sched.abort(InternalError("cut off")) == 3
    for future in (*running, queued):
        with pytest.raises(InternalError, match="cut off"):
            await future
    runner.gate.set()
    await clock.advance(1.0)  # the aborted request's batching delay passes: it is dropped, not run
    await asyncio.wait_for(sched.wait_idle(), timeout=10)
    assert runner.batches == [["x"], ["y"]]


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        BatchScheduler(Recorder(), max_batch_size=0, max_delay_s=0.0, batchable=True)
    with pytest.raises(ValueError):
        BatchScheduler(Recorder(), max_batch_size=4, max_delay_s=0.0, batchable=True, instances=0)

"""Ask each ready server pod which execution provider it runs: ``GET /v2/models/<model>`` on the pod IP.

Why HTTP to the pod and not an annotation or a log line: the server's model metadata is the source of
truth (the same document a user can read), and the server needs no Kubernetes credentials. The answer
cannot change while a container lives, so it is cached per (pod uid, server restart count): a steady
state costs no request at all. A pod that did not answer is asked again after ``RETRY_SECONDS``,
doubling up to ``MAX_RETRY_SECONDS``; meanwhile its last answer stands, and the reconciler is poked
only when an answer differs from it, so an unreachable pod causes no status write and no reconcile
loop.

A reconcile never waits for a pod: :meth:`ProviderProbe.observe` answers at once from what is known,
starts a background request for each ready pod not asked yet, and calls ``on_change`` when an answer
arrives (the reconciler pokes itself), so an unreachable pod costs no reconcile latency.

This is the I/O half; :mod:`modelserve_operator.accelerator` turns the observations into the condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

from modelserve_contract import HTTP_PORT
from modelserve_operator.accelerator import Observation, parse_metadata
from modelserve_operator.render.deployment import SERVER_CONTAINER
from modelserve_operator.signature import dig

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 2.0
RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 600.0
MAX_ENTRIES = 10000

CacheKey = tuple[str, int]


def is_ready(pod: Mapping[str, Any]) -> bool:
    if dig(pod, "metadata", "deletionTimestamp"):
        return False
    conditions = dig(pod, "status", "conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _key(pod: Mapping[str, Any]) -> CacheKey:
    restarts = next(
        (int(c.get("restartCount") or 0) for c in dig(pod, "status", "containerStatuses") or []
         if c.get("name") == SERVER_CONTAINER),
        0,
    )
    return str(dig(pod, "metadata", "uid") or dig(pod, "metadata", "name")), restarts


class ProviderProbe:
    """Cached observations of the ready pods' providers (one instance per operator process)."""

    def __init__(
        self,
        *,
        timeout: float = TIMEOUT_SECONDS,
        retry: float = RETRY_SECONDS,
        port: int = HTTP_PORT,
    ) -> None:
        self.timeout = timeout
        self.retry = retry
        self.port = port
        self._known: dict[CacheKey, Observation] = {}
        self._failed: dict[CacheKey, tuple[float, int, Observation]] = {}  # (when, attempts, answer)
        self._asking: dict[CacheKey, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def observe(
        self, pods: Sequence[Mapping[str, Any]], model: str, on_change: Callable[[], None]
    ) -> list[Observation]:
        """An observation for every ready pod, from the cache; unknown pods are asked in the
        background (their observation is ``pending`` until ``on_change`` is called)."""
        now = time.monotonic()
        out: list[Observation] = []
        for pod in pods:
            if not is_ready(pod):
                continue
            key = _key(pod)
            name = str(dig(pod, "metadata", "name") or "?")
            if key in self._known:
                out.append(self._known[key])
                continue
            failed = self._failed.get(key)
            wait = min(self.retry * 2 ** (failed[1] - 1), MAX_RETRY_SECONDS) if failed else 0.0
            due = failed is None or now - failed[0] >= wait
            if due and key not in self._asking:
                task = asyncio.get_running_loop().create_task(self._learn(key, pod, model, on_change))
                self._asking[key] = task
            if failed is not None:
                out.append(failed[2])  # the last answer stands while a retry is in flight
            else:
                out.append(Observation(name, pending=True, error="asking the pod for its execution provider"))
        return out

    async def _learn(
        self, key: CacheKey, pod: Mapping[str, Any], model: str, on_change: Callable[[], None]
    ) -> None:
        before = self._failed.get(key)
        try:
            obs = await self._ask(pod, model)
            if obs.provider:
                if len(self._known) >= MAX_ENTRIES:
                    self._known.clear()
                self._known[key] = obs
                self._failed.pop(key, None)
            else:
                self._failed[key] = (time.monotonic(), (before[1] + 1) if before else 1, obs)
        finally:
            self._asking.pop(key, None)
        if before is not None and before[2] == obs:
            return  # the same answer as last time: nothing for the reconciler to do
        try:
            on_change()
        except Exception:  # a poke must never break the probe
            log.exception("provider probe: on_change failed")

    async def _ask(self, pod: Mapping[str, Any], model: str) -> Observation:
        name = str(dig(pod, "metadata", "name") or "?")
        ip = dig(pod, "status", "podIP")
        if not ip:
            return Observation(name, error="the pod has no IP")
        host = f"[{ip}]" if ":" in str(ip) else str(ip)
        url = f"http://{host}:{self.port}/v2/models/{model}"
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.get(url) as resp:
                if resp.status != 200:
                    return Observation(name, error=f"GET {url}: HTTP {resp.status}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return Observation(name, error=f"GET {url}: {type(exc).__name__}: {exc}"[:300])
        if not isinstance(body, Mapping):
            return Observation(name, error=f"GET {url}: not a JSON object")
        return parse_metadata(name, body)

    async def close(self) -> None:
        for task in list(self._asking.values()):
            task.cancel()
        for task in list(self._asking.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

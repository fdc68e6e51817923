"""One kinds table, one quantity parser, one retry policy, and the pure pieces of a pass.

Each test here would fail if a second place came back: a watched list, a renderer list or an
RBAC row written beside the kinds table; a retry delay computed outside the work queue; an
Event body or a replica patch assembled in the reconciler.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import kopf
import pytest

from modelserve_operator import events, kinds, metrics, rbac, replicas
from modelserve_operator.config import OperatorConfig
from modelserve_operator.handlers import _reconcile_now, build_registry
from modelserve_operator.kube import RESOURCES
from modelserve_operator.render import CHILD_KINDS, context_for, render
from modelserve_operator.render.children import RENDERERS
from modelserve_operator.settings import WATCHED_CHILDREN
from modelserve_operator.status import Transition
from modelserve_operator.workqueue import RETRY, RetryLater, RetryPolicy, WorkQueue

OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "modelserve_operator"


def ctx(**spec: Any) -> Any:
    md = {"metadata": {"name": "demo", "namespace": "ml", "uid": "u"},
          "spec": {"model": {"uri": "/m.onnx"}, **spec}}
    return context_for(md, OperatorConfig())


def test_everything_kind_related_is_derived_from_the_table() -> None:
    assert set(RESOURCES) == {(k.api_version, k.kind) for k in kinds.KINDS}
    assert tuple((k.group, k.version, k.plural) for k in kinds.KINDS if k.watched) == WATCHED_CHILDREN
    assert tuple((k.api_version, k.kind) for k in kinds.KINDS if k.child) == CHILD_KINDS
    assert set(RENDERERS) == {k.kind for k in kinds.CHILDREN}
    for k in kinds.KINDS:
        assert rbac.Permission(k.group, k.plural, k.verbs, k.why) in rbac.PERMISSIONS


def test_the_podmonitor_is_watched_so_its_drift_is_undone_at_once() -> None:
    """It was rendered but not watched: an edited PodMonitor waited for the 300 s resync."""
    assert ("monitoring.coreos.com", "v1", "podmonitors") in WATCHED_CHILDREN
    handlers = build_registry()._watching.get_all_handlers()
    watched = {h.selector.plural or h.selector.any_name for h in handlers}
    assert "podmonitors" in watched
    assert rbac.allows("monitoring.coreos.com", "podmonitors", "watch")


@pytest.mark.parametrize("kind", kinds.CHILDREN, ids=lambda k: k.kind)
def test_every_renderer_returns_its_kind_or_none(kind: kinds.Kind) -> None:
    wanted = ctx(scaling={"minReplicas": 2, "maxReplicas": 4}, service={"ingress": {"host": "a.example"}})
    unwanted = ctx(monitoring={"podMonitor": False})
    obj = RENDERERS[kind.kind](wanted)
    assert obj is not None and (obj["apiVersion"], obj["kind"]) == (kind.api_version, kind.kind)
    if kind.kind in ("Deployment", "Service"):
        assert RENDERERS[kind.kind](unwanted) is not None  # they go with their owner, by GC
    else:
        assert RENDERERS[kind.kind](unwanted) is None
        assert (kind.api_version, kind.kind, "demo") in render(unwanted, podmonitor_api=True).delete


def test_a_watched_kind_without_list_and_watch_is_refused() -> None:
    with pytest.raises(ValueError, match="watched"):
        kinds._check((kinds.Kind("v1", "Thing", "things", ("get",), "x", watched=True),))


def test_one_quantity_parser() -> None:
    """No second suffix table (``"Ki": ...``) anywhere in the operator but quantity.py."""
    for path in OPERATOR.rglob("*.py"):
        if path.name != "quantity.py":
            assert not re.search(r"[\"']Ki[\"']\s*:", path.read_text()), path


# --------------------------------------------------------------------------- one retry policy


def test_retry_policy_doubles_to_a_cap() -> None:
    assert [RETRY.delay(2.0, attempt) for attempt in range(8)] == [2, 4, 8, 16, 32, 60, 60, 60]
    assert RETRY.first_delay(409) == RETRY.first_delay(429) == 2.0 and RETRY.first_delay(503) == 5.0


class _Raising:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def reconcile(self, body: Any, trigger: str) -> None:
        raise self.exc


@pytest.mark.parametrize("retry", [0, 3, 9])
async def test_kopf_handlers_back_off_with_the_queues_policy(retry: int) -> None:
    with pytest.raises(kopf.TemporaryError) as info:
        await _reconcile_now(_Raising(RetryLater("busy", 2.0)), {}, "t", retry)  # type: ignore[arg-type]
    assert info.value.delay == RETRY.delay(2.0, retry)


async def test_an_unexpected_error_is_retried_with_the_same_policy_not_kopfs_default() -> None:
    """Before: a bug's exception went to kopf raw and was retried on kopf's own 30 s backoff."""
    with pytest.raises(kopf.TemporaryError) as info:
        await _reconcile_now(_Raising(KeyError("bug")), {}, "t", 2)  # type: ignore[arg-type]
    assert info.value.delay == RETRY.delay(RETRY.unexpected_delay, 2)


# --------------------------------------------------------------------------- pure pieces of a pass


def test_event_body() -> None:
    involved = {"name": "demo", "namespace": "ml", "uid": "u"}
    degraded = events.event_body(involved, Transition("Degraded", "True", "ImagePullBackOff", "no image"),
                                 now="2026-11-01T00:00:00Z", instance="op-1", suffix="1f")
    assert (degraded["type"], degraded["reason"]) == ("Warning", "ImagePullBackOff")
    assert degraded["metadata"] == {"name": "demo.1f", "namespace": "ml"}
    assert degraded["involvedObject"]["uid"] == "u" and degraded["message"] == "Degraded=True: no image"
    recovered = events.event_body(involved, Transition("Degraded", "False", "AsExpected", "ok", "True"),
                                  now="t", instance="op-1", suffix="2")
    assert (recovered["type"], recovered["reason"]) == ("Normal", "Recovered")


def test_replica_patches() -> None:
    owned = {"metadata": {"name": "demo", "namespace": "ml", "managedFields": [
        {"manager": replicas.FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
    ]}, "spec": {"replicas": 3}}
    patch = replicas.handover_patch(owned)
    assert patch is not None and patch["spec"] == {"replicas": 3}
    assert replicas.handover_patch({**owned, "metadata": {"name": "demo"}}) is None
    assert replicas.handover_patch(None) is None
    scaled = ctx(scaling={"minReplicas": 2, "maxReplicas": 6})
    live = {"metadata": {"name": "demo", "namespace": "ml"}, "spec": {"replicas": 1}}
    seed = replicas.seed_patch(scaled, live)
    assert seed is not None and seed["spec"] == {"replicas": 2}
    assert replicas.seed_patch(scaled, {"metadata": {}, "spec": {"replicas": 2}}) is None
    assert replicas.hpa_owned({"kind": "Deployment", "spec": {}})
    assert not replicas.hpa_owned({"kind": "Deployment", "spec": {"replicas": 1}})


async def test_the_depth_gauge_counts_a_poke_until_its_retries_end() -> None:
    """The gauge the kmock tests wait on: a poked pass counts from its poke through its retries."""

    def gauge() -> float:  # process-wide: other tests' queues are closed, so compare with the base
        return float(next(iter(metrics.WORKQUEUE_DEPTH.collect())).samples[0].value)

    async def until(cond: Any, what: str) -> None:
        async def loop() -> None:
            while not cond():
                await asyncio.sleep(0)
        try:
            await asyncio.wait_for(loop(), timeout=10)
        except TimeoutError:
            raise AssertionError(f"timed out after 10s waiting for {what}") from None

    base = gauge()
    attempts: list[str] = []
    release = asyncio.Event()

    async def work(namespace: str, name: str, trigger: str) -> None:
        attempts.append(trigger)
        if len(attempts) == 1:
            raise RetryLater("busy", delay=0.0)
        await release.wait()

    queue = WorkQueue(work, debounce=0.0, policy=RetryPolicy(conflict_delay=0.0, error_delay=0.0))
    queue.poke("ns", "a", "test")
    queue.poke("ns", "a", "test")  # coalesced: still one pass
    assert (queue.depth, gauge()) == (1, base + 1)
    await until(lambda: len(attempts) == 2, "the retry after the first attempt failed")
    assert (queue.depth, gauge()) == (1, base + 1)  # a retrying pass still counts
    release.set()
    await until(lambda: queue.depth == 0, "the pass to end")
    assert gauge() == base
    await queue.close()

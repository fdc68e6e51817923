"""One reconcile of one ModelDeployment: read, apply what differs, delete what is unwanted, report.

Why it is separate from the kopf handlers: the same reconcile runs from three places (kopf's
create/update/resume handlers, a child's watch event, and the slow safety-net resync), and the
kopf wiring should stay a thin translation of outcomes into kopf's retry semantics. This module
knows nothing of kopf: it raises :class:`SpecProblem` (kopf: ``PermanentError``, the spec can
never work as written) and :class:`RetryLater` (kopf: ``TemporaryError``, the cluster is busy).

The rules, in order:

1. An invalid spec or a ``pvc://`` model whose claim does not exist is reported in the status
   (``Degraded``, with a readable message) and not retried in a loop; existing children stay.
2. Every rendered child is read, and server-side applied only when :mod:`drift` says so: the
   steady state costs reads and no writes.
3. A child the spec no longer wants (HPA when min == max, a removed Ingress) is deleted, but
   only if this ModelDeployment owns it: the operator never deletes someone else's object.
4. The status is computed from the Deployment and its pods and patched only when it changed;
   condition transitions become Kubernetes Events.

Reconciles of the same ModelDeployment never overlap (one lock per object), and bursts of
child events (a rollout produces dozens of pod updates) coalesce into one reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import time
from collections.abc import Mapping
from typing import Any, NoReturn

from modelserve_operator import accelerator, drift, metrics
from modelserve_operator.api import API_VERSION, GROUP, KIND, parse_spec
from modelserve_operator.config import OperatorConfig
from modelserve_operator.kube import FIELD_MANAGER, HANDOVER_FIELD_MANAGER, Kube, KubeError
from modelserve_operator.provider_probe import ProviderProbe, is_ready
from modelserve_operator.render import render_children, selector_for, url_for
from modelserve_operator.render.common import model_name_for
from modelserve_operator.render.labels import selector_labels
from modelserve_operator.status import Problem, Transition, compute_status, rfc3339

logger = logging.getLogger(__name__)

Key = tuple[str, str]
DEFAULT_RESYNC_SECONDS = 300.0


class SpecProblem(Exception):
    """The spec cannot work as written; retrying without a spec change is pointless."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.reason}: {problem.message}")
        self.problem = problem


class RetryLater(Exception):
    """A transient failure (API 5xx, throttling, conflicts): retry after ``delay`` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclasses.dataclass
class Outcome:
    """What one reconcile did (for logs, metrics and tests)."""

    applied: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)
    status_written: bool = False
    status: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def writes(self) -> int:
        return len(self.applied) + len(self.deleted) + int(self.status_written)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def owned_by(child: Mapping[str, Any], md: Mapping[str, Any]) -> bool:
    """Is ``child`` controlled by ``md`` (by uid when known, else by name)?"""
    uid = _meta(md).get("uid")
    for ref in _meta(child).get("ownerReferences") or []:
        if ref.get("kind") != KIND or not str(ref.get("apiVersion", "")).startswith(GROUP + "/"):
            continue
        if (uid and ref.get("uid") == uid) or (not uid and ref.get("name") == _meta(md).get("name")):
            return True
    return False


def pvc_claim(md: Mapping[str, Any]) -> str | None:
    """The claim of a ``pvc://<claim>/<path>`` model, else None."""
    uri = str(((md.get("spec") or {}).get("model") or {}).get("uri") or "")
    if not uri.startswith("pvc://"):
        return None
    return uri.removeprefix("pvc://").partition("/")[0] or None


def _retry_delay(exc: KubeError) -> float:
    """The first retry's delay; callers double it per attempt (kopf's ``retry`` count, pokes)."""
    return 2.0 if exc.status in (409, 429) else 5.0


class Reconciler:
    """Reconciles ModelDeployments; one instance per operator process (kept in kopf's memo)."""

    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        *,
        debounce: float = 0.5,
        discovery_ttl: float = 300.0,
    ) -> None:
        self.kube = kube
        self.config = config
        self.debounce = debounce
        self.discovery_ttl = discovery_ttl
        self.instance = os.environ.get("HOSTNAME") or "modelserve-operator"
        self._locks: dict[Key, asyncio.Lock] = {}
        self._pending: dict[Key, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._podmonitor: tuple[float, bool] | None = None
        self.providers = ProviderProbe() if config.probe_providers else None

    # ------------------------------------------------------------------ helpers

    async def podmonitor_api(self) -> bool:
        """Whether the cluster serves PodMonitor (Prometheus Operator); cached for a while."""
        now = time.monotonic()
        if self._podmonitor is None or now - self._podmonitor[0] > self.discovery_ttl:
            try:
                found = await self.kube.has_resource("monitoring.coreos.com/v1", "PodMonitor")
            except KubeError as exc:
                logger.warning("discovery of PodMonitor failed, assuming absent: %s", exc)
                found = False
            self._podmonitor = (now, found)
        return self._podmonitor[1]

    def lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    # ------------------------------------------------------------------ entry points

    async def reconcile(self, md: Mapping[str, Any], trigger: str) -> Outcome:
        """Reconcile the ModelDeployment ``md`` names, under its lock, with metrics.

        The object is read afresh *inside* the lock: a body handed in by kopf or read before
        waiting for the lock may predate a spec change that another reconcile already applied,
        and acting on it would briefly roll the children back.
        """
        return await self.reconcile_by_name(
            str(_meta(md).get("namespace") or "default"), str(_meta(md).get("name")), trigger
        ) or Outcome()

    async def reconcile_by_name(self, namespace: str, name: str, trigger: str) -> Outcome | None:
        """Read the ModelDeployment and reconcile it; None when it is gone or being deleted."""
        started = time.perf_counter()
        result = "error"
        try:
            async with self.lock((namespace, name)):
                try:
                    md = await self.kube.get(API_VERSION, KIND, namespace, name)
                except KubeError as exc:
                    raise RetryLater(f"cannot read {namespace}/{name}: {exc}", _retry_delay(exc)) from exc
                if md is None or _meta(md).get("deletionTimestamp"):
                    result = "gone"
                    return None
                outcome = await self._reconcile(md)
            result = "written" if outcome.writes else "unchanged"
            return outcome
        except SpecProblem:
            result = "spec_problem"
            raise
        except RetryLater:
            result = "retry"
            raise
        finally:
            metrics.RECONCILES.labels(trigger=trigger, result=result).inc()
            metrics.RECONCILE_DURATION.labels(trigger=trigger).observe(time.perf_counter() - started)

    def poke(self, namespace: str, name: str, trigger: str) -> None:
        """Schedule a reconcile soon; pokes within the debounce window coalesce into one."""
        key = (namespace, name)
        task = self._pending.get(key)
        if task is not None and not task.done():
            return
        task = asyncio.create_task(self._poked(key, trigger), name=f"reconcile {key}")
        self._pending[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resync_forever(self, namespaces: tuple[str, ...], interval: float) -> None:
        """The safety net for anything a watch missed: every ``interval``, poke every object.

        One LIST per namespace (or one cluster-wide) per interval; the pokes then cost reads
        only, unless something really drifted.
        """
        while True:
            await asyncio.sleep(interval)
            for namespace in namespaces or (None,):
                try:
                    items = await self.kube.list(API_VERSION, KIND, namespace, {})
                except KubeError as exc:
                    logger.warning("resync: cannot list ModelDeployments: %s", exc)
                    continue
                for item in items:
                    meta = _meta(item)
                    self.poke(str(meta.get("namespace")), str(meta.get("name")), "resync")

    async def close(self) -> None:
        if self.providers is not None:
            await self.providers.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _poked(self, key: Key, trigger: str) -> None:
        await asyncio.sleep(self.debounce)
        self._pending.pop(key, None)  # events from now on schedule another pass
        for attempt in range(6):
            try:
                await self.reconcile_by_name(*key, trigger=trigger)
                return
            except SpecProblem:
                return  # reported in status; the next spec change will try again
            except RetryLater as exc:
                delay = min(60.0, exc.delay * 2**attempt)
                logger.info("reconcile of %s/%s will be retried in %.0fs: %s", *key, delay, exc)
                await asyncio.sleep(delay)
            except Exception:
                logger.exception("reconcile of %s/%s failed", *key)
                await asyncio.sleep(min(60.0, 2.0**attempt))

    # ------------------------------------------------------------------ the reconcile itself

    async def _reconcile(self, md: Mapping[str, Any]) -> Outcome:
        outcome = Outcome()
        try:
            desired = render_children(md, self.config, podmonitor_api=await self.podmonitor_api())
            url, selector, model = url_for(md), selector_for(md), model_name_for(md)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            await self._fail(md, outcome, Problem("InvalidSpec", _short(exc)))
        claim = pvc_claim(md)
        if claim and await self._read("v1", "PersistentVolumeClaim", md, claim) is None:
            namespace = _meta(md).get("namespace")
            await self._fail(md, outcome, Problem(
                "ModelVolumeMissing", f"PersistentVolumeClaim {claim!r} not found in namespace {namespace!r}"
            ))

        deployment: dict[str, Any] | None = None
        for obj in desired.apply:
            want = drift.with_hash(obj)
            kind, name = str(obj["kind"]), str(obj["metadata"]["name"])
            live = await self._read(str(obj["apiVersion"]), kind, md, name)
            reason = drift.apply_reason(want, live)
            if reason is not None:
                hpa_owned = kind == "Deployment" and "replicas" not in want["spec"]
                if hpa_owned:
                    await self._hand_over_replicas(md, live, outcome)
                created = live is None
                live = await self._apply(md, want, reason, outcome)
                if hpa_owned and created:
                    live = await self._seed_replicas(md, live, outcome)
            if obj["kind"] == "Deployment":
                deployment = live
        for api_version, kind, name in desired.delete:
            live = await self._read(api_version, kind, md, name)
            if live is not None and owned_by(live, md) and not _meta(live).get("deletionTimestamp"):
                await self._delete(md, api_version, kind, name, outcome)

        pods = await self._pods(md) if deployment is not None else []
        await self._report(md, outcome, deployment=deployment, pods=pods, url=url, selector=selector,
                           model=model, accel_status=self._accelerator(md, pods, model))
        return outcome

    def _accelerator(
        self, md: Mapping[str, Any], pods: list[dict[str, Any]], model: str
    ) -> accelerator.AcceleratorStatus:
        """AcceleratorReady from the ready pods' model metadata (:mod:`provider_probe`)."""
        gpu = int((((md.get("spec") or {}).get("resources") or {}).get("gpu")) or 0)
        ready = sum(1 for p in pods if is_ready(p))
        meta = _meta(md)
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        seen = (
            self.providers.observe(pods, model, lambda: self.poke(namespace, name, "provider"))
            if self.providers is not None
            else None
        )
        return accelerator.compute(seen, gpu=gpu, ready_pods=ready, previous=md.get("status") or {})

    async def _read(
        self, api_version: str, kind: str, md: Mapping[str, Any], name: str
    ) -> dict[str, Any] | None:
        try:
            return await self.kube.get(api_version, kind, str(_meta(md).get("namespace")), name)
        except KubeError as exc:
            if exc.status == 404:  # the kind itself is not served (e.g. no PodMonitor CRD)
                return None
            raise RetryLater(f"reading {kind} {name}: {exc}", _retry_delay(exc)) from exc

    async def _pods(self, md: Mapping[str, Any]) -> list[dict[str, Any]]:
        try:
            return await self.kube.list(
                "v1", "Pod", str(_meta(md).get("namespace")), selector_labels(str(_meta(md).get("name")))
            )
        except KubeError as exc:
            raise RetryLater(f"listing pods: {exc}", _retry_delay(exc)) from exc

    async def _hand_over_replicas(
        self, md: Mapping[str, Any], live: Mapping[str, Any] | None, outcome: Outcome
    ) -> None:
        """Keep the replica count when an HPA takes over from fixed replicas.

        The Deployment about to be applied leaves ``replicas`` out (the HPA owns it). If the
        operator's own apply still owns the field, the API server would *remove* it, and a
        removed ``replicas`` defaults to 1: a fixed-size model of 3 pods would drop to one pod
        until the HPA's next sync. So the current value is first applied by a second field
        manager (the handover Kubernetes documents for exactly this), which keeps owning it
        after the operator lets go; the HPA then adjusts it like any other value.
        """
        if live is None or not drift.applied_by(live, FIELD_MANAGER, ("spec", "replicas")):
            return
        replicas = (live.get("spec") or {}).get("replicas")
        if replicas is None:
            return
        meta = _meta(live)
        handover = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
            "spec": {"replicas": replicas},
        }
        await self._apply(
            md, handover, "handover of spec.replicas", outcome, field_manager=HANDOVER_FIELD_MANAGER
        )

    async def _seed_replicas(
        self, md: Mapping[str, Any], live: dict[str, Any], outcome: Outcome
    ) -> dict[str, Any]:
        """Start an HPA-scaled Deployment at ``minReplicas`` instead of the API default of 1.

        The operator's apply leaves ``replicas`` to the HPA, so a new Deployment starts with one
        pod and reaches ``minReplicas`` only at the HPA controller's next sync (~15 s), during
        which the model would report Ready at 1/1 below its floor. The floor is set once, at
        creation, by the handover field manager, which the HPA then overrides like any value.
        """
        minimum = parse_spec(dict(md.get("spec") or {})).scaling.min_replicas
        if (live.get("spec") or {}).get("replicas") == minimum:
            return live
        meta = _meta(live)
        seed = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
            "spec": {"replicas": minimum},
        }
        return await self._apply(md, seed, "seed of spec.replicas", outcome,
                                 field_manager=HANDOVER_FIELD_MANAGER)

    async def _apply(
        self, md: Mapping[str, Any], obj: dict[str, Any], reason: str, outcome: Outcome,
        *, field_manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        kind, name = obj["kind"], obj["metadata"]["name"]
        logger.info("applying %s %s/%s (%s)", kind, _meta(md).get("namespace"), name, reason)
        try:
            result = await self.kube.apply(obj, field_manager=field_manager)
        except KubeError as exc:
            if exc.status in (400, 422):  # the API server rejects what the spec asks for
                await self._fail(md, outcome, Problem("ApplyRejected", f"{kind} {name}: {exc.message}"))
            raise RetryLater(f"applying {kind} {name}: {exc}", _retry_delay(exc)) from exc
        metrics.CHILD_APPLIES.labels(kind=kind, reason=reason.split(" ")[0]).inc()
        outcome.applied.append(f"{kind}/{name}")
        return result

    async def _delete(
        self, md: Mapping[str, Any], api_version: str, kind: str, name: str, outcome: Outcome
    ) -> None:
        logger.info("deleting %s %s/%s: the spec no longer wants it", kind, _meta(md).get("namespace"), name)
        try:
            if await self.kube.delete(api_version, kind, str(_meta(md).get("namespace")), name):
                metrics.CHILD_DELETES.labels(kind=kind).inc()
                outcome.deleted.append(f"{kind}/{name}")
        except KubeError as exc:
            raise RetryLater(f"deleting {kind} {name}: {exc}", _retry_delay(exc)) from exc

    async def _fail(self, md: Mapping[str, Any], outcome: Outcome, problem: Problem) -> NoReturn:
        """Report a spec-level problem in the status (with the current Deployment), then raise."""
        name = str(_meta(md).get("name"))
        try:
            deployment = await self._read("apps/v1", "Deployment", md, name)
            url, selector = url_for(md), selector_for(md)
        except (ValueError, RetryLater):
            deployment, url, selector = None, None, None
        model = str(((md.get("spec") or {}).get("model") or {}).get("name") or name)
        await self._report(md, outcome, deployment=deployment, pods=[], url=url, selector=selector,
                           model=model, problem=problem)
        raise SpecProblem(problem)

    async def _report(
        self,
        md: Mapping[str, Any],
        outcome: Outcome,
        *,
        deployment: Mapping[str, Any] | None,
        pods: list[dict[str, Any]],
        url: str | None,
        selector: str | None,
        model: str,
        problem: Problem | None = None,
        accel_status: accelerator.AcceleratorStatus | None = None,
    ) -> None:
        meta = _meta(md)
        update = compute_status(md, deployment=deployment, pods=pods, url=url, selector=selector,
                                problem=problem, model=model, accelerator=accel_status)
        outcome.status = update.status
        if update.patch is not None:
            try:
                await self.kube.patch_status(
                    API_VERSION, KIND, str(meta.get("namespace")), str(meta.get("name")), update.patch
                )
            except KubeError as exc:
                if exc.status == 404:
                    return  # deleted meanwhile
                raise RetryLater(f"writing status: {exc}", _retry_delay(exc)) from exc
            metrics.STATUS_WRITES.inc()
            outcome.status_written = True
        for transition in update.transitions:
            await self._event(md, transition)

    async def _event(self, md: Mapping[str, Any], transition: Transition) -> None:
        meta = _meta(md)
        now = rfc3339(datetime.datetime.now(datetime.UTC))
        etype = "Warning" if transition.warning else "Normal"
        recovered = transition.type == "Degraded" and transition.status == "False"
        reason = "Recovered" if recovered else transition.reason
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{time.time_ns():x}", "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": API_VERSION, "kind": KIND, "name": meta.get("name"),
                "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": f"{transition.type}={transition.status}: {transition.message}"[:1000],
            "type": etype,
            "source": {"component": "modelserve-operator"},
            "reportingComponent": "modelserve-operator",
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.kube.create_event(event)
        metrics.EVENTS_POSTED.labels(type=etype, reason=reason).inc()


def _short(exc: Exception) -> str:
    """A validation error in one readable paragraph (pydantic's text is multi-line)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        with contextlib.suppress(Exception):
            parts = []
            for err in errors():
                loc = ".".join(str(p) for p in err.get("loc", ()))
                parts.append(f"spec.{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
            return "; ".join(parts)[:1000]
    return str(exc)[:1000]

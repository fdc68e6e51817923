"""One reconcile pass of one ModelDeployment: read, apply what differs, delete what is unwanted, report.

Why it is separate from the kopf handlers and from the queue: the same pass runs from kopf's
create/update/resume handlers, a child's watch event and the safety-net resync; *when* it runs
(locks, debounce, retries) is :mod:`modelserve_operator.workqueue`, and kopf's retry semantics
are :mod:`modelserve_operator.handlers`. This module knows nothing of kopf (an import-linter
contract holds it to that): it raises :class:`SpecProblem` (the spec can never work as
written) and :class:`RetryLater` (the cluster is busy).

The pass, in order:

1. **Read.** The ModelDeployment is parsed once into a
   :class:`~modelserve_operator.render.common.RenderContext`, which every later step uses. An
   invalid spec or a ``pvc://`` model whose claim does not exist is reported in the status
   (``Degraded``, with a readable message) and not retried in a loop; existing children stay.
2. **Apply.** Every rendered child is read, and server-side applied only when :mod:`drift`
   says so: the steady state costs reads and no writes. The replica hand-over and seed patches
   (:mod:`replicas`) go with the Deployment.
3. **Delete.** A child the spec no longer wants (HPA when min == max, a removed Ingress) is
   deleted, but only if this ModelDeployment owns it: the operator never deletes someone
   else's object.
4. **Report.** The status is computed from the Deployment and its pods (:mod:`status`) and
   patched only when it changed; condition transitions become Kubernetes Events (:mod:`events`).

Every API failure goes through one translation (:meth:`Reconciler._call`): the API server
refusing what the spec asks for (400, 422) is a spec problem, anything else a retry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import time
from collections.abc import Awaitable, Mapping
from typing import Any, NoReturn, TypeVar

from modelserve_operator import accelerator, drift, events, metrics, replicas
from modelserve_operator.api import API_VERSION, GROUP, KIND
from modelserve_operator.config import OperatorConfig
from modelserve_operator.kinds import CHILDREN
from modelserve_operator.kube import Kube, KubeError
from modelserve_operator.provider_probe import ProviderProbe, is_ready
from modelserve_operator.render import DesiredChildren, RenderContext, context_for, render
from modelserve_operator.status import Problem, compute_status, rfc3339
from modelserve_operator.workqueue import (
    DEFAULT_RESYNC_SECONDS,
    RETRY,
    Key,
    RetryLater,
    SpecProblem,
    WorkQueue,
)

__all__ = ["DEFAULT_RESYNC_SECONDS", "Outcome", "Reconciler", "RetryLater", "SpecProblem", "owned_by"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
OPTIONAL_KIND = next(k for k in CHILDREN if k.optional)


class Rejected(Exception):
    """The API server refused a request for what the spec asks (400, 422): a spec problem."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


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
        self.discovery_ttl = discovery_ttl
        self.instance = os.environ.get("HOSTNAME") or "modelserve-operator"
        self.queue = WorkQueue(self.reconcile_by_name, debounce=debounce)
        self._podmonitor: tuple[float, bool] | None = None
        self.providers = ProviderProbe() if config.probe_providers else None

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
        metrics.RECONCILES_IN_FLIGHT.inc()
        try:
            async with self.queue.lock((namespace, name)):
                md = await self._call(
                    f"reading {namespace}/{name}", self.kube.get(API_VERSION, KIND, namespace, name)
                )
                if md is None or _meta(md).get("deletionTimestamp"):
                    result = "gone"
                    return None
                outcome = await self._pass((namespace, name), md)
            result = "written" if outcome.writes else "unchanged"
            return outcome
        except SpecProblem:
            result = "spec_problem"
            raise
        except RetryLater:
            result = "retry"
            raise
        finally:
            metrics.RECONCILES_IN_FLIGHT.dec()
            metrics.RECONCILES.labels(trigger=trigger, result=result).inc()
            metrics.RECONCILE_DURATION.labels(trigger=trigger).observe(time.perf_counter() - started)

    def poke(self, namespace: str, name: str, trigger: str) -> None:
        """Schedule a reconcile soon (debounced; see :class:`WorkQueue`)."""
        self.queue.poke(namespace, name, trigger)

    async def resync_forever(self, namespaces: tuple[str, ...], interval: float) -> None:
        """Every ``interval``, poke every ModelDeployment: one LIST per namespace (or one
        cluster-wide); the pokes then cost reads only, unless something really drifted."""

        async def keys() -> list[Key]:
            found: list[Key] = []
            for namespace in namespaces or (None,):
                try:
                    items = await self.kube.list(API_VERSION, KIND, namespace, {})
                except KubeError as exc:
                    logger.warning("resync: cannot list ModelDeployments: %s", exc)
                    continue
                found += [(str(_meta(i).get("namespace")), str(_meta(i).get("name"))) for i in items]
            return found

        await self.queue.resync_forever(keys, interval)

    async def close(self) -> None:
        if self.providers is not None:
            await self.providers.close()
        await self.queue.close()

    async def podmonitor_api(self) -> bool:
        """Whether the cluster serves the optional kind (PodMonitor); cached for a while."""
        now = time.monotonic()
        if self._podmonitor is None or now - self._podmonitor[0] > self.discovery_ttl:
            try:
                found = await self.kube.has_resource(OPTIONAL_KIND.api_version, OPTIONAL_KIND.kind)
            except KubeError as exc:
                logger.warning("discovery of %s failed, assuming absent: %s", OPTIONAL_KIND.kind, exc)
                found = False
            self._podmonitor = (now, found)
        return self._podmonitor[1]

    # ------------------------------------------------------------------ the pass

    async def _pass(self, key: Key, md: Mapping[str, Any]) -> Outcome:
        outcome = Outcome()
        # 1. read: parse once; every later step uses ctx.
        try:
            ctx = context_for(md, self.config)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            await self._fail(key, md, None, outcome, Problem("InvalidSpec", _short(exc)))
        desired = render(ctx, podmonitor_api=await self.podmonitor_api())
        claim = ctx.pvc_claim
        if claim and await self._get(ctx, "v1", "PersistentVolumeClaim", claim) is None:
            message = f"PersistentVolumeClaim {claim!r} not found in namespace {ctx.namespace!r}"
            await self._fail(key, md, ctx, outcome, Problem("ModelVolumeMissing", message))
        try:
            # 2. apply, 3. delete
            deployment, hpa = await self._apply_children(ctx, desired, outcome)
            await self._delete_unwanted(ctx, md, desired, outcome)
        except Rejected as exc:
            await self._fail(key, md, ctx, outcome, exc.problem)
        # 4. report
        pods = await self._pods(ctx) if deployment is not None else []
        await self._report(md, ctx, outcome, deployment=deployment, pods=pods, hpa=hpa,
                           accel_status=self._accelerator(key, md, ctx, pods))
        return outcome

    def _accelerator(
        self, key: Key, md: Mapping[str, Any], ctx: RenderContext, pods: list[dict[str, Any]]
    ) -> accelerator.AcceleratorStatus:
        """AcceleratorReady from the ready pods' model metadata (:mod:`provider_probe`).

        An answer that arrives later pokes this object through the work queue (debounced, with
        the queue's one retry policy), so a reconcile never waits for a pod.
        """
        ready = sum(1 for p in pods if is_ready(p))
        seen = (
            self.providers.observe(pods, ctx.model_name, lambda: self.poke(*key, "provider"))
            if self.providers is not None
            else None
        )
        return accelerator.compute(
            seen, gpu=ctx.spec.resources.gpu, ready_pods=ready, previous=md.get("status") or {}
        )

    async def _apply_children(
        self, ctx: RenderContext, desired: DesiredChildren, outcome: Outcome
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Apply what differs; returns the live Deployment and the live HPA (None when not wanted)."""
        deployment: dict[str, Any] | None = None
        hpa: dict[str, Any] | None = None
        for obj in desired.apply:
            want = drift.with_hash(obj)
            kind, name = str(obj["kind"]), str(obj["metadata"]["name"])
            live = await self._get(ctx, str(obj["apiVersion"]), kind, name)
            reason = drift.apply_reason(want, live)
            if reason is not None:
                hpa_owned = replicas.hpa_owned(want)
                handover = replicas.handover_patch(live) if hpa_owned else None
                if handover is not None:
                    await self._apply(ctx, handover, "handover of spec.replicas", outcome,
                                      field_manager=replicas.HANDOVER_FIELD_MANAGER)
                created = live is None
                live = await self._apply(ctx, want, reason, outcome)
                seed = replicas.seed_patch(ctx, live) if hpa_owned and created else None
                if seed is not None:
                    live = await self._apply(ctx, seed, "seed of spec.replicas", outcome,
                                             field_manager=replicas.HANDOVER_FIELD_MANAGER)
            if kind == "Deployment":
                deployment = live
            elif kind == "HorizontalPodAutoscaler":
                hpa = live
        return deployment, hpa

    async def _delete_unwanted(
        self, ctx: RenderContext, md: Mapping[str, Any], desired: DesiredChildren, outcome: Outcome
    ) -> None:
        for api_version, kind, name in desired.delete:
            live = await self._get(ctx, api_version, kind, name)
            if live is None or not owned_by(live, md) or _meta(live).get("deletionTimestamp"):
                continue
            logger.info("deleting %s %s/%s: the spec no longer wants it", kind, ctx.namespace, name)
            gone = self.kube.delete(api_version, kind, ctx.namespace, name)
            if await self._call(f"deleting {kind} {name}", gone):
                metrics.CHILD_DELETES.labels(kind=kind).inc()
                outcome.deleted.append(f"{kind}/{name}")

    async def _report(
        self,
        md: Mapping[str, Any],
        ctx: RenderContext | None,
        outcome: Outcome,
        *,
        deployment: Mapping[str, Any] | None,
        pods: list[dict[str, Any]],
        problem: Problem | None = None,
        hpa: Mapping[str, Any] | None = None,
        accel_status: accelerator.AcceleratorStatus | None = None,
    ) -> None:
        meta = _meta(md)
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        update = compute_status(md, ctx, deployment=deployment, pods=pods, problem=problem, hpa=hpa,
                                accelerator=accel_status)
        outcome.status = update.status
        if update.patch is not None:
            written = await self._call(
                "writing status", self.kube.patch_status(API_VERSION, KIND, namespace, name, update.patch)
            )
            if written is None:
                return  # deleted meanwhile
            metrics.STATUS_WRITES.inc()
            outcome.status_written = True
        involved = {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")}
        for transition in update.transitions:
            event = events.event_body(
                involved, transition, now=rfc3339(datetime.datetime.now(datetime.UTC)),
                instance=self.instance, suffix=f"{time.time_ns():x}",
            )
            await self.kube.create_event(event)
            metrics.EVENTS_POSTED.labels(type=event["type"], reason=event["reason"]).inc()

    async def _fail(
        self, key: Key, md: Mapping[str, Any], ctx: RenderContext | None, outcome: Outcome, problem: Problem
    ) -> NoReturn:
        """Report a spec-level problem in the status (with the current Deployment), then raise."""
        try:
            deployment = await self._call(
                "reading the Deployment", self.kube.get("apps/v1", "Deployment", key[0], key[1])
            )
        except (RetryLater, Rejected):
            deployment = None
        await self._report(md, ctx, outcome, deployment=deployment, pods=[], problem=problem)
        raise SpecProblem(problem)

    # ------------------------------------------------------------------ API calls

    async def _call(self, what: str, request: Awaitable[T]) -> T:
        """Every API call of a pass goes through here: the one translation of :class:`KubeError`.

        400/422 (the API server refuses what the spec asks for) -> :class:`Rejected`; anything
        else -> :class:`RetryLater` with the retry policy's first delay for that status. (A 404
        is an answer, not a failure: the client's ``get``/``delete``/``patch_status`` return
        None or False for it.)
        """
        try:
            return await request
        except KubeError as exc:
            if exc.status in (400, 422):
                raise Rejected(Problem("ApplyRejected", f"{what}: {exc.message}")) from exc
            raise RetryLater(f"{what}: {exc}", RETRY.first_delay(exc.status)) from exc

    async def _get(self, ctx: RenderContext, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        """The live object, or None when it (or its kind, e.g. no PodMonitor CRD) does not exist."""
        live = self.kube.get(api_version, kind, ctx.namespace, name)
        return await self._call(f"reading {kind} {name}", live)

    async def _pods(self, ctx: RenderContext) -> list[dict[str, Any]]:
        return await self._call("listing pods", self.kube.list("v1", "Pod", ctx.namespace, ctx.selector))

    async def _apply(
        self, ctx: RenderContext, obj: dict[str, Any], reason: str, outcome: Outcome,
        *, field_manager: str = replicas.FIELD_MANAGER,
    ) -> dict[str, Any]:
        kind, name = obj["kind"], obj["metadata"]["name"]
        logger.info("applying %s %s/%s (%s)", kind, ctx.namespace, name, reason)
        result = await self._call(f"{kind} {name}", self.kube.apply(obj, field_manager=field_manager))
        metrics.CHILD_APPLIES.labels(kind=kind, reason=reason.split(" ")[0]).inc()
        outcome.applied.append(f"{kind}/{name}")
        return result


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

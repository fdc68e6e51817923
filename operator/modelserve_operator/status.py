"""The ModelDeployment's status, computed from what the cluster reports about its children.

Why a pure module: status is the part a user reads (``kubectl get md``, ``kubectl describe``),
so its rules deserve table-driven tests without a cluster. The reconciler hands in the
ModelDeployment as stored (its current status and generation), the pass's parsed
:class:`~modelserve_operator.render.common.RenderContext` (model name, URL and selector come
from it; None when the spec does not parse, and then the last written values stay), the live
Deployment and its pods (and, when the spec itself cannot work, a :class:`Problem`); this module
answers with the status it should have and, separately, the
patch to write: ``None`` when nothing changed, so that an unchanged reconcile writes nothing.

Conditions follow the Kubernetes conventions (``type``, ``status``, ``reason``, ``message``,
``lastTransitionTime``, ``observedGeneration``); ``lastTransitionTime`` moves only when a
condition's status flips, so a steady state never rewrites the timestamps.

``Degraded`` carries the most specific reason the pods reveal, with the cluster's own words:
the scheduler's message for an unschedulable pod ("0/3 nodes are available: 3 Insufficient
nvidia.com/gpu"), the ``fetch`` init container's termination message when the model download
fails, the kubelet's message for image pull errors, and the Deployment controller's message
when pods cannot even be created (Pod Security, quota). A termination message that starts with
one of the server's prefixes (``ModelInvalid:``, ``ModelFetchFailed:``, ``StartupError:``, see
``modelserve_contract``) names the reason itself, from the init container or the server container
(whose ``FallbackToLogsOnError`` policy still gives the log tail when the server wrote nothing).
``modelSignature`` comes from the fetch container's success message (:mod:`signature`).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import modelserve_contract as contract
from modelserve_operator import accelerator as accel
from modelserve_operator.render.common import RenderContext
from modelserve_operator.render.deployment import FETCH_CONTAINER, fetch_args
from modelserve_operator.signature import served_signature

IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
CONDITION_TYPES = ("Ready", "Progressing", "Degraded", accel.CONDITION)


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why the ModelDeployment is degraded: a CamelCase reason and a human-readable message."""

    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Transition:
    """A condition whose status or reason changed: the reconciler posts an Event for it."""

    type: str
    status: str
    reason: str
    message: str
    previous_status: str | None = None

    @property
    def warning(self) -> bool:
        """Warnings are the transitions a user should look at: degraded, no longer ready, the
        autoscaler's metric gone, or a pod that does not run the execution provider it asked for."""
        return (
            (self.type == "Degraded" and self.status == "True")
            or (self.type == "Ready" and self.status == "False" and self.previous_status == "True")
            or (self.type == "MetricsAvailable" and self.status == "False")
            or (self.type == accel.CONDITION and self.status == "False")
        )


@dataclasses.dataclass(frozen=True)
class StatusUpdate:
    """The full desired status, the merge patch to write (None: no write), and transitions."""

    status: dict[str, Any]
    patch: dict[str, Any] | None
    transitions: list[Transition]


def _get(obj: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def rfc3339(now: datetime.datetime) -> str:
    """Kubernetes' timestamp format: UTC, seconds precision, a ``Z`` suffix."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _terminated(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The most recent failed termination of a container, current or previous."""
    for state in ("state", "lastState"):
        term = _get(status, state, "terminated")
        if isinstance(term, Mapping) and term.get("exitCode", 0) != 0:
            return term
    return None


def _termination_text(term: Mapping[str, Any]) -> str:
    detail = str(term.get("message") or term.get("reason") or "terminated").strip()
    return f"{detail} (exit code {term.get('exitCode')})"


_PREFIXED_REASONS = (contract.MODEL_INVALID, contract.MODEL_FETCH_FAILED, contract.STARTUP_ERROR)


def _prefixed(term: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(reason, the text after the prefix) of a termination message the server wrote, else None."""
    message = str((term or {}).get("message") or "").strip()
    for reason in _PREFIXED_REASONS:
        if message.startswith(f"{reason}:"):
            return reason, message[len(reason) + 1 :].strip()
    return None


def pod_problem(pod: Mapping[str, Any]) -> Problem | None:
    """The single most telling problem of one pod, or None when the pod looks healthy."""
    name = _get(pod, "metadata", "name") or "?"
    if _get(pod, "metadata", "deletionTimestamp"):
        return None  # a terminating pod's troubles are history
    for container in _get(pod, "status", "initContainerStatuses") or []:
        waiting = _get(container, "state", "waiting") or {}
        if waiting.get("reason") in IMAGE_PULL_REASONS:
            text = waiting.get("message") or waiting["reason"]
            return Problem(waiting["reason"], f"pod {name}, init container {container.get('name')}: {text}")
        if container.get("name") == FETCH_CONTAINER and not container.get("ready"):
            term = _terminated(container)
            if term is not None:
                said = _prefixed(term)
                if said is not None and said[0] == contract.MODEL_INVALID:
                    return Problem(said[0], f"{said[1]} (pod {name}, init container {FETCH_CONTAINER})")
                text = _termination_text({**term, "message": said[1]} if said is not None else term)
                return Problem("ModelFetchFailed", f"pod {name}: model fetch failed: {text}")
    for container in _get(pod, "status", "containerStatuses") or []:
        waiting = _get(container, "state", "waiting") or {}
        reason = waiting.get("reason")
        if reason in IMAGE_PULL_REASONS or reason in CONFIG_REASONS:
            text = waiting.get("message") or reason
            return Problem(reason, f"pod {name}, container {container.get('name')}: {text}")
        term = _terminated(container)
        stopped = reason == "CrashLoopBackOff" or _get(container, "state", "terminated") is not None
        said = _prefixed(term) if stopped else None
        if said is not None:  # the server said why it stopped: that is the reason, not the back-off
            return Problem(said[0], f"{said[1]} (pod {name}, container {container.get('name')})")
        if reason == "CrashLoopBackOff":
            last = f"; last exit: {_termination_text(term)}" if term is not None else ""
            return Problem("CrashLoopBackOff", f"pod {name}, container {container.get('name')} crashes{last}")
    for cond in _get(pod, "status", "conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            message = cond.get("message") or "the pod cannot be scheduled"
            return Problem(cond.get("reason") or "Unschedulable", f"{message} (pod {name})")
    return None


def _deployment_condition(deployment: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any]:
    for cond in _get(deployment, "status", "conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def find_problem(
    deployment: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> Problem | None:
    """What keeps the model from serving as specified, from the Deployment and its pods."""
    failure = _deployment_condition(deployment, "ReplicaFailure")
    if failure.get("status") == "True":
        message = failure.get("message") or "pods cannot be created"
        return Problem(failure.get("reason") or "FailedCreate", message)
    for pod in sorted(pods, key=lambda p: str(_get(p, "metadata", "name"))):
        found = pod_problem(pod)
        if found is not None:
            return found
    progressing = _deployment_condition(deployment, "Progressing")
    if progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Problem("ProgressDeadlineExceeded", progressing.get("message") or "the rollout is stuck")
    return None


def _conditions(
    deployment: Mapping[str, Any] | None, problem: Problem | None, spec_problem: bool
) -> dict[str, tuple[str, str, str]]:
    """(status, reason, message) per condition type."""
    wanted = _get(deployment, "spec", "replicas")
    wanted = 1 if wanted is None else int(wanted)
    ready = int(_get(deployment, "status", "readyReplicas") or 0)
    updated = int(_get(deployment, "status", "updatedReplicas") or 0)
    total = int(_get(deployment, "status", "replicas") or 0)
    generation = _get(deployment, "metadata", "generation")
    observed = _get(deployment, "status", "observedGeneration")
    caught_up = generation is None or (observed is not None and int(observed) >= int(generation))

    result: dict[str, tuple[str, str, str]] = {}
    if deployment is None:
        reason = problem.reason if problem is not None else "DeploymentMissing"
        message = problem.message if problem is not None else "the Deployment does not exist yet"
        result["Ready"] = ("False", reason, message)
        result["Progressing"] = ("False" if spec_problem else "True", reason, message)
    else:
        counts = f"{ready}/{wanted} replicas ready"
        if wanted == 0:
            result["Ready"] = ("False", "ScaledToZero", "the model is scaled to zero replicas")
        elif ready >= wanted:
            result["Ready"] = ("True", "ReplicasReady", counts)
        else:
            result["Ready"] = ("False", "ReplicasNotReady", counts)
        rolled = caught_up and updated >= wanted and total <= wanted and ready >= wanted
        stuck = problem is not None and (spec_problem or problem.reason == "ProgressDeadlineExceeded")
        if stuck and problem is not None:
            result["Progressing"] = ("False", problem.reason, problem.message)
        elif rolled:
            result["Progressing"] = ("False", "RolloutComplete", f"{updated}/{wanted} replicas up to date")
        else:
            result["Progressing"] = ("True", "RollingOut", f"{updated}/{wanted} replicas updated, {counts}")
    if problem is not None:
        result["Degraded"] = ("True", problem.reason, problem.message)
    else:
        result["Degraded"] = ("False", "AsExpected", "no problem found")
    return result


METRICS_AVAILABLE = "MetricsAvailable"
"""Whether the autoscaler's metric really arrives (only on autoscaled ModelDeployments)."""


_METRIC_SOURCE_FIELD = {"Pods": "pods", "Resource": "resource", "External": "external", "Object": "object",
                        "ContainerResource": "containerResource"}


def metrics_condition(hpa: Mapping[str, Any]) -> tuple[str, str, str]:
    """(status, reason, message) of ``MetricsAvailable``, from the HPA's own conditions.

    Why: an HPA whose custom metric never arrives (no Prometheus scrape, no adapter, a broken rule)
    silently holds the replica count; its ``ScalingActive=False`` is the only trace, on another
    object. The HPA's reason and message are passed through unchanged, so what the user searches
    for is what the controller said. ``AbleToScale=False`` (it cannot change the scale at all)
    counts too; neither condition yet means the controller has not evaluated it.
    """
    listed = _get(hpa, "status", "conditions") or []
    conds = {c.get("type"): c for c in listed if isinstance(c, Mapping)}
    active, able = conds.get("ScalingActive"), conds.get("AbleToScale")
    for cond in (active, able):
        if cond is not None and cond.get("status") == "False":
            return ("False", str(cond.get("reason") or "MetricUnavailable"), str(cond.get("message") or ""))
    if active is not None and active.get("status") == "True":
        current = []
        for metric in _get(hpa, "status", "currentMetrics") or []:
            kind = metric.get("type", "")
            body = metric.get(_METRIC_SOURCE_FIELD.get(kind, ""), {})
            name = _get(body, "metric", "name") or body.get("name") or kind
            value = _get(body, "current", "averageValue") or _get(body, "current", "averageUtilization")
            if value is not None:
                current.append(f"{name}={value}")
        detail = "; ".join(current) or str(active.get("message") or "")
        return ("True", str(active.get("reason") or "ValidMetricFound"), detail)
    return ("Unknown", "AwaitingMetrics", "the HorizontalPodAutoscaler has not evaluated its metric yet")


def compute_status(
    md: Mapping[str, Any],
    ctx: RenderContext | None,
    *,
    deployment: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]] = (),
    problem: Problem | None = None,
    now: datetime.datetime | None = None,
    hpa: Mapping[str, Any] | None = None,
    accelerator: accel.AcceleratorStatus | None = None,
) -> StatusUpdate:
    """The status ``md`` should have, and the merge patch that gets it there (None if none).

    ``ctx`` is the pass's parsed ModelDeployment (None: the spec does not parse, so model, URL
    and selector are left as last written). ``problem`` is a spec-level problem found by the
    reconciler (invalid spec, missing PVC): it wins over anything the pods say, and the children
    may not even exist. ``hpa`` is the live HorizontalPodAutoscaler when the spec autoscales: it adds
    the ``MetricsAvailable`` condition (see :func:`metrics_condition`). ``accelerator``
    (:func:`modelserve_operator.accelerator.compute`) adds the AcceleratorReady condition and
    ``status.provider``.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    current: Mapping[str, Any] = md.get("status") or {}
    generation = _get(md, "metadata", "generation")
    spec_problem = problem is not None
    problem = problem or find_problem(deployment, pods)
    previous = {c.get("type"): c for c in current.get("conditions") or [] if isinstance(c, Mapping)}

    conditions: list[dict[str, Any]] = []
    transitions: list[Transition] = []
    computed = _conditions(deployment, problem, spec_problem)
    if hpa is not None:
        computed[METRICS_AVAILABLE] = metrics_condition(hpa)
    if accelerator is not None:
        computed[accel.CONDITION] = (accelerator.status, accelerator.reason, accelerator.message)
    for ctype, (cstatus, reason, message) in computed.items():
        before = previous.get(ctype) or {}
        same_status = before.get("status") == cstatus
        cond: dict[str, Any] = {
            "type": ctype,
            "status": cstatus,
            "reason": reason,
            "message": message,
            "lastTransitionTime": before.get("lastTransitionTime") if same_status else None,
        }
        cond["lastTransitionTime"] = cond["lastTransitionTime"] or rfc3339(now)
        if generation is not None:
            cond["observedGeneration"] = int(generation)
        conditions.append(cond)
        first_fallback = ctype == accel.CONDITION and cstatus == "False"  # warn from the first sighting
        changed = not same_status or before.get("reason") != reason
        if changed and (before or cstatus == "True" or first_fallback):
            transitions.append(Transition(ctype, cstatus, reason, message, before.get("status")))

    signature = current.get("modelSignature")
    if ctx is not None:
        signature = served_signature(
            pods, signature, container=FETCH_CONTAINER, args=fetch_args(ctx), uri=ctx.spec.model.uri
        )
    status: dict[str, Any] = {
        "model": ctx.model_name if ctx is not None else None,
        "replicas": int(_get(deployment, "status", "replicas") or 0),
        "readyReplicas": int(_get(deployment, "status", "readyReplicas") or 0),
        "url": ctx.url if ctx is not None else None,
        "selector": ctx.selector_string if ctx is not None else None,
        "conditions": conditions,
        "modelSignature": signature,
    }
    if generation is not None:
        status["observedGeneration"] = int(generation)
    if accelerator is not None:
        status["provider"] = accelerator.provider
    status = {key: value for key, value in status.items() if value is not None}
    if accelerator is not None and accelerator.provider is None and current.get("provider") is not None:
        status["provider"] = None  # a merge patch removes the stale summary
    unchanged = all(current.get(key) == value for key, value in status.items())
    patch: dict[str, Any] = status
    stored = current.get("modelSignature")
    if isinstance(stored, Mapping) and stored != signature:
        # A merge patch keeps keys it does not name: null out the keys the new signature lacks, or
        # the whole signature when there is none.
        gone = {key: None for key in stored if signature is None or key not in signature}
        unchanged = False
        patch = {**status, "modelSignature": None if signature is None else {**gone, **signature}}
    return StatusUpdate(status=status, patch=None if unchanged else patch, transitions=transitions)

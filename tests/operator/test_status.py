"""Status computation (pure): conditions from a Deployment and its pods, and no write when unchanged."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from modelserve_operator.api import ModelDeploymentStatus
from modelserve_operator.config import OperatorConfig
from modelserve_operator.render import context_for
from modelserve_operator.render.labels import selector_string
from modelserve_operator.status import Problem, compute_status, pod_problem

T0 = datetime.datetime(2026, 11, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)
URL = "http://iris.models.svc:8080/v2/models/iris"
SELECTOR = {"app.kubernetes.io/name": "modelserve-server", "serving.modelserve.io/modeldeployment": "iris"}
GPU_MESSAGE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."


def md(status: dict[str, Any] | None = None, generation: int = 3) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "iris", "namespace": "models", "generation": generation},
        "spec": {"model": {"uri": "https://example/iris.onnx"}},
    }
    if status is not None:
        body["status"] = status
    return body


CTX = context_for(md(), OperatorConfig())
"""The pass's parsed ModelDeployment: model name, URL and selector of the status come from it."""
assert (CTX.url, CTX.selector) == (URL, SELECTOR)


def deployment(wanted: int = 2, ready: int = 2, updated: int | None = None, total: int | None = None,
               conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris", "generation": 4},
        "spec": {"replicas": wanted},
        "status": {
            "observedGeneration": 4,
            "replicas": wanted if total is None else total,
            "readyReplicas": ready,
            "updatedReplicas": wanted if updated is None else updated,
            "conditions": conditions or [],
        },
    }


def pod(name: str = "iris-abc", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


UNSCHEDULABLE = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": GPU_MESSAGE}])
FETCH_CRASHING = pod(initContainerStatuses=[{
    "name": "fetch", "ready": False, "restartCount": 3,
    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"}},
    "lastState": {"terminated": {"exitCode": 2, "reason": "Error",
                                 "message": "sha256 mismatch: expected 00ab, got 17ff"}},
}])
FETCH_FAILED_ONCE = pod(initContainerStatuses=[{
    "name": "fetch", "ready": False,
    "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "HTTP 404 for https://x/m.onnx"}},
}])
IMAGE_PULL = pod(containerStatuses=[{
    "name": "server", "ready": False,
    "state": {"waiting": {"reason": "ImagePullBackOff",
                          "message": 'Back-off pulling image "ghcr.io/modelserve/server:nope"'}},
}])
SERVER_CRASHING = pod(containerStatuses=[{
    "name": "server", "ready": False,
    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
    "lastState": {"terminated": {"exitCode": 1, "message": "model has no inputs"}},
}])
HEALTHY = pod(conditions=[{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
              containerStatuses=[{"name": "server", "ready": True, "state": {"running": {}}}])


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


@pytest.mark.parametrize(
    ("pods", "reason", "fragment"),
    [
        pytest.param([UNSCHEDULABLE], "Unschedulable", GPU_MESSAGE, id="unschedulable"),
        pytest.param([FETCH_CRASHING], "ModelFetchFailed",
                     "sha256 mismatch: expected 00ab, got 17ff (exit code 2)", id="fetch-crashloop"),
        pytest.param([FETCH_FAILED_ONCE], "ModelFetchFailed", "HTTP 404 for https://x/m.onnx",
                     id="fetch-failed"),
        pytest.param([IMAGE_PULL], "ImagePullBackOff", "ghcr.io/modelserve/server:nope", id="image-pull"),
        pytest.param([SERVER_CRASHING], "CrashLoopBackOff", "model has no inputs", id="server-crash"),
        pytest.param([HEALTHY, UNSCHEDULABLE], "Unschedulable", "Insufficient nvidia.com/gpu",
                     id="one-of-two"),
    ],
)
def test_degraded_reasons_come_from_the_pods(pods: list[dict[str, Any]], reason: str, fragment: str) -> None:
    update = compute_status(md(), CTX, deployment=deployment(ready=0), pods=pods, now=T0)
    cond = conditions(update.status)
    assert cond["Degraded"]["status"] == "True"
    assert cond["Degraded"]["reason"] == reason
    assert fragment in cond["Degraded"]["message"]
    assert cond["Ready"]["status"] == "False"
    assert cond["Ready"]["message"] == "0/2 replicas ready"
    assert update.patch is not None
    assert any(t.type == "Degraded" and t.warning for t in update.transitions)


def test_all_ready_is_ready_and_complete() -> None:
    update = compute_status(md(), CTX, deployment=deployment(), pods=[HEALTHY, HEALTHY], now=T0)
    status = update.status
    cond = conditions(status)
    assert (cond["Ready"]["status"], cond["Ready"]["reason"]) == ("True", "ReplicasReady")
    assert (cond["Progressing"]["status"], cond["Progressing"]["reason"]) == ("False", "RolloutComplete")
    assert (cond["Degraded"]["status"], cond["Degraded"]["reason"]) == ("False", "AsExpected")
    assert status["replicas"] == 2 and status["readyReplicas"] == 2
    assert status["observedGeneration"] == 3
    assert status["url"] == URL and status["model"] == "iris"
    assert status["selector"] == "app.kubernetes.io/name=modelserve-server," \
        "serving.modelserve.io/modeldeployment=iris"
    assert all(c["lastTransitionTime"] == "2026-11-01T12:00:00Z" for c in status["conditions"])
    # Every field the operator writes is declared in the typed status (the CRD's schema comes from it).
    ModelDeploymentStatus.model_validate(status)


def test_unchanged_status_writes_nothing_and_keeps_transition_times() -> None:
    first = compute_status(md(), CTX, deployment=deployment(), pods=[HEALTHY], now=T0)
    again = compute_status(md(first.status), CTX, deployment=deployment(), pods=[HEALTHY], now=T1)
    assert again.patch is None
    assert again.transitions == []
    assert again.status == first.status


def test_transition_moves_only_the_flipped_condition_time() -> None:
    healthy = compute_status(md(), CTX, deployment=deployment(), pods=[HEALTHY], now=T0)
    broken = compute_status(md(healthy.status), CTX, deployment=deployment(ready=1),
                            pods=[HEALTHY, IMAGE_PULL], now=T1)
    before, after = conditions(healthy.status), conditions(broken.status)
    assert broken.patch is not None
    assert after["Ready"]["status"] == "False"
    assert after["Ready"]["lastTransitionTime"] == "2026-11-01T12:05:00Z"
    assert after["Degraded"]["lastTransitionTime"] == "2026-11-01T12:05:00Z"
    assert (before["Progressing"]["status"], after["Progressing"]["status"]) == ("False", "True")
    assert after["Progressing"]["lastTransitionTime"] == "2026-11-01T12:05:00Z"
    warnings = {(t.type, t.reason) for t in broken.transitions if t.warning}
    assert warnings == {("Ready", "ReplicasNotReady"), ("Degraded", "ImagePullBackOff")}


def test_new_generation_is_a_change() -> None:
    first = compute_status(md(), CTX, deployment=deployment(), pods=[], now=T0)
    bumped = compute_status(md(first.status, generation=4), CTX, deployment=deployment(), pods=[], now=T1)
    assert bumped.patch is not None and bumped.patch["observedGeneration"] == 4


def test_rollout_in_progress_is_progressing() -> None:
    update = compute_status(md(), CTX, deployment=deployment(wanted=3, ready=3, updated=1, total=4), pods=[],
                            now=T0)
    cond = conditions(update.status)
    assert (cond["Progressing"]["status"], cond["Progressing"]["reason"]) == ("True", "RollingOut")
    assert cond["Ready"]["status"] == "True"  # the old pods still serve


def test_spec_problem_wins_and_stops_progress() -> None:
    problem = Problem("ModelVolumeMissing", "PersistentVolumeClaim 'models' not found in namespace 'models'")
    update = compute_status(md(), None, deployment=None, pods=[], problem=problem, now=T0)
    cond = conditions(update.status)
    assert (cond["Degraded"]["status"], cond["Degraded"]["reason"]) == ("True", "ModelVolumeMissing")
    assert (cond["Ready"]["status"], cond["Ready"]["reason"]) == ("False", "ModelVolumeMissing")
    assert cond["Progressing"]["status"] == "False"
    assert "url" not in update.status


def test_pod_creation_failure_from_the_deployment() -> None:
    failure = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
               "message": 'pods "iris-x" is forbidden: violates PodSecurity "restricted:latest"'}
    update = compute_status(md(), CTX, deployment=deployment(ready=0, conditions=[failure]), pods=[], now=T0)
    cond = conditions(update.status)
    assert cond["Degraded"]["reason"] == "FailedCreate" and "PodSecurity" in cond["Degraded"]["message"]


def test_terminating_pods_are_ignored() -> None:
    leaving = {**IMAGE_PULL, "metadata": {"name": "old", "deletionTimestamp": "2026-11-01T11:00:00Z"}}
    assert pod_problem(leaving) is None


def test_selector_string_is_sorted() -> None:
    assert selector_string({"b": "2", "a": "1"}) == "a=1,b=2"
    assert selector_string("x=y") == "x=y"


# --- MetricsAvailable: does the HPA's metric arrive? ---------------------------------------------

def _hpa(*conditions: tuple[str, str, str, str],
         current: list[dict[str, object]] | None = None) -> dict[str, object]:
    return {"status": {"conditions": [{"type": t, "status": s, "reason": r, "message": m}
                                      for t, s, r, m in conditions],
                       "currentMetrics": current or []}}


def test_metrics_available_passes_the_hpas_reason_when_the_metric_is_missing() -> None:
    from modelserve_operator.status import metrics_condition
    hpa = _hpa(("AbleToScale", "True", "SucceededGetScale", "ok"),
               ("ScalingActive", "False", "FailedGetPodsMetric",
                'the HPA was unable to compute the replica count: unable to get metric '
                'modelserve_inflight_requests: no metrics returned from custom metrics API'))
    status, reason, message = metrics_condition(hpa)
    assert (status, reason) == ("False", "FailedGetPodsMetric")
    assert "no metrics returned from custom metrics API" in message


def test_metrics_available_true_with_the_current_value_and_unknown_before_the_first_evaluation() -> None:
    from modelserve_operator.status import metrics_condition
    hpa = _hpa(("AbleToScale", "True", "ReadyForNewScale", "ok"),
               ("ScalingActive", "True", "ValidMetricFound", "the HPA was able to compute the replica count"),
               current=[{"type": "Pods", "pods": {"metric": {"name": "modelserve_inflight_requests"},
                                                  "current": {"averageValue": "3500m"}}}])
    assert metrics_condition(hpa) == ("True", "ValidMetricFound", "modelserve_inflight_requests=3500m")
    assert metrics_condition({"status": {}})[0:2] == ("Unknown", "AwaitingMetrics")
    cannot_scale = _hpa(("AbleToScale", "False", "FailedGetScale", "no scale subresource"))
    assert metrics_condition(cannot_scale) == ("False", "FailedGetScale", "no scale subresource")


def test_metrics_available_appears_only_on_autoscaled_modeldeployments() -> None:
    from modelserve_operator.status import compute_status
    md = {"metadata": {"name": "m", "namespace": "n", "generation": 1}, "status": {}}
    deployment = {"spec": {"replicas": 1}, "status": {"replicas": 1, "readyReplicas": 1}}
    without = compute_status(md, None, deployment=deployment)
    assert "MetricsAvailable" not in {c["type"] for c in without.status["conditions"]}
    hpa = _hpa(("ScalingActive", "False", "FailedGetPodsMetric", "no metrics returned"))
    with_hpa = compute_status(md, None, deployment=deployment, hpa=hpa)
    cond = {c["type"]: c for c in with_hpa.status["conditions"]}["MetricsAvailable"]
    assert (cond["status"], cond["reason"]) == ("False", "FailedGetPodsMetric")
    # A change of the metric's status is a transition (an Event), like the other conditions'.
    md_after = {**md, "status": with_hpa.status}
    recovered = compute_status(md_after, None, deployment=deployment,
                               hpa=_hpa(("ScalingActive", "True", "ValidMetricFound", "ok")))
    assert [(t.type, t.status) for t in recovered.transitions] == [("MetricsAvailable", "True")]

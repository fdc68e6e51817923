"""Models checked before they are served (issue 10), the operator's half: the fetch init container runs
the checks, a prefixed termination message becomes the Degraded reason, and the fetch container's
success message becomes ``status.modelSignature``."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from modelserve_operator.api import ModelDeploymentStatus, parse_spec
from modelserve_operator.config import OperatorConfig
from modelserve_operator.render import context_for, render_children
from modelserve_operator.render.deployment import fetch_args
from modelserve_operator.signature import parse_signature, served_signature, shown_uri
from modelserve_operator.status import compute_status, pod_problem

URI = "https://models.example/iris.onnx"
SIGNATURE = {"models": [{
    "file": "iris.onnx", "sha256": "ab" * 32, "opset": 17,
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
}]}  # fmt: skip
MESSAGE = "ModelSignature: " + json.dumps(SIGNATURE, separators=(",", ":"))


def md(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "iris", "namespace": "models", "uid": "u", "generation": 2},
        "spec": spec or {"model": {"uri": URI}},
    }
    if status is not None:
        body["status"] = status
    return body


CTX = context_for(md(), OperatorConfig())
DEPLOYMENT: dict[str, Any] = {"spec": {"replicas": 1}, "status": {}}
ARGS = fetch_args(CTX)


def fetched_pod(message: str | None = MESSAGE, *, name: str = "iris-a", args: list[str] | None = None,
                exit_code: int = 0) -> dict[str, Any]:
    term: dict[str, Any] = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}
    if message is not None:
        term["message"] = message
    return {
        "metadata": {"name": name},
        "spec": {"initContainers": [{"name": "fetch", "args": list(ARGS or []) if args is None else args}]},
        "status": {"initContainerStatuses": [{"name": "fetch", "ready": exit_code == 0,
                                              "state": {"terminated": term}}]},
    }  # fmt: skip


def degraded(pods: list[dict[str, Any]]) -> dict[str, Any]:
    update = compute_status(md(), CTX, deployment={"spec": {"replicas": 1}, "status": {}}, pods=pods)
    return next(c for c in update.status["conditions"] if c["type"] == "Degraded")


# --------------------------------------------------------------------------- rendering


def test_fetch_container_checks_the_model() -> None:
    out = render_children(md(), OperatorConfig())
    (fetch,) = out.find("Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert fetch["args"] == ["fetch", URI, "/models", "--check"]
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_require_batch_dim_only_when_the_spec_requires_batching() -> None:
    # maxBatchSize defaults to 32 (the API server fills it in): that alone does not refuse a
    # fixed-shape model, which the server serves one request at a time.
    batching = {"model": {"uri": URI}, "runtime": {"maxBatchSize": 64}}
    assert "--require-batch-dim" not in (fetch_args(context_for(md(batching), OperatorConfig())) or [])
    required = {"model": {"uri": URI}, "runtime": {"requireBatching": True}}
    assert fetch_args(context_for(md(required), OperatorConfig())) == [
        "fetch", URI, "/models", "--check", "--require-batch-dim"]


def test_pvc_models_have_no_fetch_and_are_checked_by_the_server() -> None:
    pvc = {"model": {"uri": "pvc://store/iris.onnx"}}
    ctx = context_for(md(pvc), OperatorConfig())
    assert fetch_args(ctx) is None
    pod = render_children(md(pvc), OperatorConfig()).find("Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    # The server writes ModelInvalid: to its own termination log; the policy keeps the log tail as fallback.
    assert pod["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
    with pytest.raises(ValueError, match="requireBatching"):
        parse_spec({**pvc, "runtime": {"requireBatching": True}})


# --------------------------------------------------------------------------- Degraded from prefixes


def server_pod(message: str, *, waiting: bool = True) -> dict[str, Any]:
    term = {"exitCode": 1, "reason": "Error", "message": message}
    state = {"waiting": {"reason": "CrashLoopBackOff"}} if waiting else {"terminated": term}
    return {"metadata": {"name": "iris-b"}, "status": {
        "initContainerStatuses": [{"name": "fetch", "ready": True, "state": {"terminated": {"exitCode": 0}}}],
        "containerStatuses": [{"name": "server", "ready": False, "state": state,
                               "lastState": {"terminated": term}}],
    }}  # fmt: skip


@pytest.mark.parametrize(("pod", "reason", "message"), [
    pytest.param(fetched_pod("ModelInvalid: /models/iris.onnx: opset 999 is newer than this ONNX Runtime "
                             "supports (up to 21)", exit_code=1), "ModelInvalid",
                 "/models/iris.onnx: opset 999 is newer than this ONNX Runtime supports (up to 21) "
                 "(pod iris-a, init container fetch)", id="init-model-invalid"),
    pytest.param(fetched_pod("ModelFetchFailed: https://models.example/iris.onnx: HTTP 404 Not Found",
                             exit_code=1), "ModelFetchFailed",
                 "pod iris-a: model fetch failed: https://models.example/iris.onnx: HTTP 404 Not Found "
                 "(exit code 1)", id="init-fetch-failed"),
    pytest.param(server_pod("ModelInvalid: /models/iris.onnx: external data file 'w.bin' of tensor 'w' is "
                            "missing"), "ModelInvalid",
                 "/models/iris.onnx: external data file 'w.bin' of tensor 'w' is missing "
                 "(pod iris-b, container server)", id="server-model-invalid"),
    pytest.param(server_pod("StartupError: --providers cuda: CUDAExecutionProvider is not available"),
                 "StartupError", "--providers cuda: CUDAExecutionProvider is not available "
                 "(pod iris-b, container server)", id="server-startup-error"),
    pytest.param(server_pod("StartupError: cannot listen on 0.0.0.0:8080", waiting=False),
                 "StartupError", "cannot listen on 0.0.0.0:8080", id="server-terminated-before-back-off"),
    # Log tail (FallbackToLogsOnError) or an older image: no prefix, the kubelet's reason stays.
    pytest.param(server_pod("Traceback (most recent call last):\n  ...\nMemoryError"), "CrashLoopBackOff",
                 "MemoryError", id="server-log-fallback"),
])  # fmt: skip
def test_prefixed_termination_messages_name_the_reason(
    pod: dict[str, Any], reason: str, message: str
) -> None:
    problem = pod_problem(pod)
    assert problem is not None and problem.reason == reason
    assert message in problem.message, problem.message
    cond = degraded([pod])
    assert (cond["status"], cond["reason"]) == ("True", reason)
    assert cond["message"] == problem.message


def test_a_running_server_with_an_old_termination_message_is_not_degraded() -> None:
    pod = server_pod("StartupError: cannot listen", waiting=False)
    pod["status"]["containerStatuses"][0]["state"] = {"running": {}}
    pod["status"]["containerStatuses"][0]["ready"] = True
    assert pod_problem(pod) is None


# --------------------------------------------------------------------------- the signature


def test_parse_signature_good() -> None:
    parsed = parse_signature(MESSAGE, "https://user:pw@models.example/iris.onnx?X-Sig=s3cr3t#sha256=ab")
    assert parsed == {"uri": URI, **SIGNATURE}
    assert "s3cr3t" not in json.dumps(parsed) and "pw" not in json.dumps(parsed)


def test_parse_signature_cut_by_the_server_is_kept_and_says_so() -> None:
    body = copy.deepcopy(SIGNATURE)
    body["models"][0].update(truncated=True, inputCount=5000, outputCount=1)
    body.update(truncated=True, modelCount=3)
    parsed = parse_signature("ModelSignature: " + json.dumps(body), URI)
    assert parsed is not None and parsed["truncated"] is True and parsed["modelCount"] == 3
    assert parsed["models"][0]["inputCount"] == 5000 and parsed["models"][0]["truncated"] is True


@pytest.mark.parametrize("message", [
    MESSAGE[:100],                                   # cut by the kubelet mid-JSON
    MESSAGE[:-1],
    "ModelSignature: not json",
    "ModelSignature: [1, 2]",
    "ModelSignature: {}",                           # no model
    'ModelSignature: {"models": [{"file": "m"}]}',  # fields missing
    'ModelSignature: {"models": [{"file": "m", "sha256": "x", "opset": "seventeen"}]}',
    "ModelSignature: " + json.dumps({"models": [{
        **SIGNATURE["models"][0],  # type: ignore[dict-item]
        "inputs": [{"name": "x", "datatype": "FP32", "shape": "big"}]}]}),
    MESSAGE.removeprefix("ModelSignature: "),        # no prefix
    "/models/iris.onnx",                            # fetch's stdout as a log fallback
    "",
    None,
    42,
])  # fmt: skip
def test_parse_signature_garbage_is_ignored(message: Any) -> None:
    assert parse_signature(message, URI) is None


def test_newer_fields_from_a_newer_server_are_dropped_not_fatal() -> None:
    body = copy.deepcopy(SIGNATURE)
    body["models"][0]["irVersion"] = 8
    body["producer"] = "future"
    parsed = parse_signature("ModelSignature: " + json.dumps(body), URI)
    assert parsed == {"uri": URI, **SIGNATURE}


def test_status_carries_the_signature_of_a_current_pod() -> None:
    update = compute_status(md(), CTX, deployment=DEPLOYMENT, pods=[fetched_pod()])
    assert update.status["modelSignature"] == {"uri": URI, **SIGNATURE}
    assert update.patch is not None and update.patch["modelSignature"] == update.status["modelSignature"]
    ModelDeploymentStatus.model_validate(update.status)  # declared (pruning: test_crd.py)
    # Unchanged: no write.
    again = compute_status(md(status=update.status), CTX, deployment={"spec": {"replicas": 1}, "status": {}},
                           pods=[fetched_pod()], now=None)
    assert again.status["modelSignature"] == update.status["modelSignature"]


def test_pods_of_another_model_do_not_report_and_the_old_signature_goes_with_its_uri() -> None:
    old = fetched_pod(args=["fetch", "https://models.example/old.onnx", "/models", "--check"])
    assert served_signature([old], None, container="fetch", args=ARGS, uri=URI) is None
    stored = {"uri": shown_uri(URI), **SIGNATURE}
    # Scaled to zero (no pods): the signature read for this URI stays.
    assert served_signature([], stored, container="fetch", args=ARGS, uri=URI) == stored
    # The spec now names another model: the stored one is removed, by a merge patch that says null.
    other = {"model": {"uri": "https://models.example/new.onnx"}}
    ctx = context_for(md(other), OperatorConfig())
    update = compute_status(md(other, status={"modelSignature": stored}), ctx,
                            deployment={"spec": {"replicas": 1}, "status": {}}, pods=[old])  # fmt: skip
    assert "modelSignature" not in update.status
    assert update.patch is not None and update.patch["modelSignature"] is None


def test_a_failed_or_unfinished_fetch_reports_no_signature() -> None:
    assert served_signature([fetched_pod(exit_code=1)], None, container="fetch", args=ARGS, uri=URI) is None
    running = fetched_pod()
    running["status"]["initContainerStatuses"][0]["state"] = {"running": {}}
    assert served_signature([running], None, container="fetch", args=ARGS, uri=URI) is None
    assert served_signature([fetched_pod()], None, container="fetch", args=None, uri=URI) is None  # pvc://


def test_a_changed_signature_nulls_the_keys_it_no_longer_has() -> None:
    cut = {"uri": URI, **SIGNATURE, "truncated": True, "modelCount": 2}
    update = compute_status(md(status={"modelSignature": cut}), CTX,
                            deployment=DEPLOYMENT, pods=[fetched_pod()])  # fmt: skip
    assert update.patch is not None
    patched = update.patch["modelSignature"]
    assert patched["truncated"] is None and patched["modelCount"] is None
    assert update.status["modelSignature"] == {"uri": URI, **SIGNATURE}

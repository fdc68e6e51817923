"""The write-or-skip decision (pure): an unchanged child is not applied, a drifted one is."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelserve_operator.drift import HASH_ANNOTATION, apply_reason, content_hash, with_hash
from modelserve_operator.quantity import try_parse_quantity as parse_quantity


def desired() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "iris", "namespace": "models", "labels": {"a": "1"}},
        "spec": {
            "replicas": 2,
            "template": {"spec": {
                "containers": [{"name": "server", "image": "srv:1", "ports": [{"containerPort": 8080}],
                                "resources": {"limits": {"cpu": "1000m", "memory": "1024Mi"}}}],
                "initContainers": [{"name": "fetch", "image": "srv:1"}],
            }},
        },
    }


def live_from(want: dict[str, Any]) -> dict[str, Any]:
    """What an API server returns: our fields, plus defaults and normalised quantities."""
    live = copy.deepcopy(want)
    live["metadata"].update(uid="u1", resourceVersion="7", generation=1, managedFields=[{"manager": "x"}])
    spec = live["spec"]
    spec["strategy"] = {"type": "RollingUpdate"}
    server = spec["template"]["spec"]["containers"][0]
    server["imagePullPolicy"] = "IfNotPresent"
    server["ports"][0]["protocol"] = "TCP"
    server["resources"]["limits"] = {"cpu": "1", "memory": "1Gi"}
    live["status"] = {"replicas": 2}
    return live


def test_unchanged_object_is_not_applied() -> None:
    want = with_hash(desired())
    assert apply_reason(want, live_from(want)) is None


def test_missing_object_is_applied() -> None:
    assert apply_reason(with_hash(desired()), None) == "missing"


def test_changed_spec_changes_the_hash() -> None:
    old = with_hash(desired())
    new_spec = desired()
    new_spec["spec"].pop("replicas")  # e.g. the HPA took over: a removal a subset check cannot see
    new = with_hash(new_spec)
    assert apply_reason(new, live_from(old)) == "changed"


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="evil:2"), "image"),
        (lambda o: o["spec"].update(replicas=5), "replicas"),
        (lambda o: o["metadata"]["labels"].pop("a"), "labels"),
        (lambda o: o["spec"]["template"]["spec"]["initContainers"].clear(), "initContainers"),
    ],
)
def test_drift_of_an_owned_field_is_detected(edit: Any, where: str) -> None:
    want = with_hash(desired())
    live = live_from(want)
    edit(live)
    reason = apply_reason(want, live)
    assert reason is not None and reason.startswith("drift at") and where in reason


def test_hash_ignores_its_own_annotation_and_key_order() -> None:
    a = desired()
    b = {k: a[k] for k in reversed(list(a))}
    assert content_hash(a) == content_hash(b) == content_hash(with_hash(a))
    assert HASH_ANNOTATION in with_hash(a)["metadata"]["annotations"]


def test_terminating_child_is_left_to_its_deletion() -> None:
    want = with_hash(desired())
    live = live_from(want)
    live["metadata"]["deletionTimestamp"] = "2026-11-01T00:00:00Z"
    assert apply_reason(want, live) is None


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [("1000m", "1", True), ("1024Mi", "1Gi", True), ("0.5", "500m", True), ("2", 2, True),
     ("1Gi", "1G", False), ("srv:1", "srv:1", True), ("abc", "abd", False)],
)
def test_quantities_compare_by_value(a: Any, b: Any, equal: bool) -> None:
    qa, qb = parse_quantity(a), parse_quantity(b)
    if qa is None or qb is None:
        assert (a == b) is equal
    else:
        assert (qa == qb) is equal

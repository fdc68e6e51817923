"""The body of the Kubernetes Event posted when a condition of a ModelDeployment changes.

Why pure and apart from the reconciler: what a user reads in ``kubectl describe md`` (reason,
type, message) is decided here and tested without a cluster; the reconciler only posts it.
A Degraded condition that clears is reported as ``Recovered`` (a Normal event), not as the
``AsExpected`` reason of the condition, which says nothing in an event list.
"""

from __future__ import annotations

from typing import Any

from modelserve_operator.api import API_VERSION, KIND
from modelserve_operator.render.common import Obj
from modelserve_operator.status import Transition

COMPONENT = "modelserve-operator"
MESSAGE_MAX = 1000


def event_reason(transition: Transition) -> str:
    recovered = transition.type == "Degraded" and transition.status == "False"
    return "Recovered" if recovered else transition.reason


def event_type(transition: Transition) -> str:
    return "Warning" if transition.warning else "Normal"


def event_body(
    involved: dict[str, Any], transition: Transition, *, now: str, instance: str, suffix: str
) -> Obj:
    """A core/v1 Event about ``involved`` (``{"name", "namespace", "uid"}`` of the ModelDeployment).

    ``now`` is an RFC 3339 time, ``instance`` the reporting operator pod, ``suffix`` makes the
    Event's name unique (the caller passes a clock reading).
    """
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{involved['name']}.{suffix}", "namespace": involved["namespace"]},
        "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, **involved},
        "reason": event_reason(transition),
        "message": f"{transition.type}={transition.status}: {transition.message}"[:MESSAGE_MAX],
        "type": event_type(transition),
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }

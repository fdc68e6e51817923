"""Labels and annotations shared by every child of a ModelDeployment.

Why here: the Deployment's selector is immutable and the Service, PDB and PodMonitor must
select exactly the Deployment's pods, so the selector labels are defined once. The rest are
the recommended ``app.kubernetes.io/*`` labels, which tools (kubectl, dashboards, cost
reports) use to group objects.
"""

from __future__ import annotations

from collections.abc import Mapping

from modelserve_operator.api import GROUP

APP_NAME = "modelserve-server"
PART_OF = "modelserve"
MANAGED_BY = "modelserve-operator"
COMPONENT = "inference-server"

# The label that ties a child (and every pod) to its ModelDeployment.
MODELDEPLOYMENT_LABEL = f"{GROUP}/modeldeployment"

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
VERSION_LABEL = "app.kubernetes.io/version"
COMPONENT_LABEL = "app.kubernetes.io/component"
PART_OF_LABEL = "app.kubernetes.io/part-of"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


def selector_labels(md_name: str) -> dict[str, str]:
    """The pods' selector (immutable on the Deployment: never add keys here)."""
    return {NAME_LABEL: APP_NAME, MODELDEPLOYMENT_LABEL: md_name}


def selector_string(selector: Mapping[str, str] | str) -> str:
    """Labels as a label-selector string, sorted (``status.selector`` for the scale subresource)."""
    if isinstance(selector, str):
        return selector
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items()))


def common_labels(md_name: str, model_version: str) -> dict[str, str]:
    """Labels on every child object and every pod."""
    return {
        **selector_labels(md_name),
        INSTANCE_LABEL: md_name,
        VERSION_LABEL: model_version,
        COMPONENT_LABEL: COMPONENT,
        PART_OF_LABEL: PART_OF,
        MANAGED_BY_LABEL: MANAGED_BY,
    }


def pod_labels(md_name: str, model_version: str, extra: Mapping[str, str]) -> dict[str, str]:
    """Pod labels: the user's extras first, so they can never override the selector."""
    return {**dict(extra), **common_labels(md_name, model_version)}

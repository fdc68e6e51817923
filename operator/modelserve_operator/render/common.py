"""What every renderer shares: the resolved context, object metadata and the result type.

``RenderContext`` is a ModelDeployment parsed once: the reconciler builds it at the top of a
pass (:func:`context_for`) and hands the same object to rendering, status, replica seeding
and failure reporting. It resolves every fact that depends on the operator configuration or
on metadata (model name = metadata.name, image by GPU count, GPU resource, URL, selector,
the pvc:// claim) exactly once, so the Deployment, the Service, the status and the reconciler
cannot disagree about them, and nothing downstream re-reads the raw dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import modelserve_contract as contract
from modelserve_operator.api import API_VERSION, KIND, ModelDeploymentSpec, parse_spec
from modelserve_operator.config import OperatorConfig
from modelserve_operator.render import labels

# Ports the server container listens on (the server's own defaults, from the shared contract);
# the Service maps the spec's ports onto them, so a user may expose port 80 without the
# (non-root) server binding a privileged port.
HTTP_CONTAINER_PORT = contract.HTTP_PORT
GRPC_CONTAINER_PORT = contract.GRPC_PORT
METRICS_PATH = contract.METRICS_PATH
READY_PATH = contract.READY_PATH
LIVE_PATH = contract.LIVE_PATH
MODELS_DIR = contract.MODELS_DIR

Obj = dict[str, Any]


@dataclass
class DesiredChildren:
    """The outcome of rendering: objects to server-side apply, and children to delete.

    ``delete`` holds ``(apiVersion, kind, name)`` in the ModelDeployment's namespace for kinds
    the spec no longer wants; deleting one that does not exist is expected (404 is success).
    """

    apply: list[Obj] = field(default_factory=list)
    delete: list[tuple[str, str, str]] = field(default_factory=list)

    def find(self, kind: str) -> Obj | None:
        """The applied object of ``kind``, if any (a convenience for tests and status)."""
        return next((obj for obj in self.apply if obj["kind"] == kind), None)


@dataclass(frozen=True)
class RenderContext:
    """A ModelDeployment with every default resolved."""

    name: str
    namespace: str
    uid: str
    spec: ModelDeploymentSpec
    config: OperatorConfig

    @property
    def model_name(self) -> str:
        return self.spec.model.name or self.name

    @property
    def gpu_resource(self) -> str:
        return self.spec.resources.gpu_resource or self.config.gpu_resource

    @property
    def server_image(self) -> str:
        return self.config.image_for(self.spec.resources.gpu, self.spec.runtime.image)

    @property
    def fetch_image(self) -> str:
        return self.config.fetch_image or self.server_image

    @property
    def selector(self) -> dict[str, str]:
        return labels.selector_labels(self.name)

    @property
    def selector_string(self) -> str:
        """The selector as a string (``status.selector``, read by the scale subresource)."""
        return labels.selector_string(self.selector)

    @property
    def url(self) -> str:
        """Cluster-local inference URL: ``http://<svc>.<ns>.svc:<port>/v2/models/<name>``."""
        return (
            f"http://{self.name}.{self.namespace}.svc:{self.spec.service.http_port}"
            f"/v2/models/{self.model_name}"
        )

    @property
    def pvc_claim(self) -> str | None:
        """The claim of a ``pvc://<claim>/<path>`` model (mounted, never fetched), else None."""
        parts = urlsplit(self.spec.model.uri)
        return parts.netloc if parts.scheme == "pvc" else None

    @property
    def model_path(self) -> str:
        """Where the server finds the model inside the pod.

        Fetched URIs land where ``modelserve fetch`` puts them (the shared contract); a
        ``pvc://claim/p`` model is the claim mounted at ``/models``, so the path is ``/models/p``.
        """
        parts = urlsplit(self.spec.model.uri)
        if parts.scheme == "pvc":
            return f"{MODELS_DIR}/{parts.path.lstrip('/')}"
        return contract.fetched_model_path(self.spec.model.uri, MODELS_DIR)

    @property
    def labels(self) -> dict[str, str]:
        return labels.common_labels(self.name, self.spec.model.version)

    def owner_reference(self) -> Obj:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, *, annotations: Mapping[str, str] | None = None) -> Obj:
        """Metadata of a child: same name and namespace as the owner, labels, owner reference."""
        meta: Obj = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": self.labels,
        }
        if annotations:
            meta["annotations"] = dict(annotations)
        meta["ownerReferences"] = [self.owner_reference()]
        return meta


def _metadata(md: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = md.get("metadata") or {}
    if not meta.get("name"):
        raise ValueError("the ModelDeployment has no metadata.name")
    return meta


def context_for(md: Mapping[str, Any], config: OperatorConfig) -> RenderContext:
    """Resolve a whole ModelDeployment object (metadata + spec) against the configuration.

    Raises ``pydantic.ValidationError`` for an invalid spec, ``ValueError`` for missing metadata.
    """
    meta = _metadata(md)
    return RenderContext(
        name=str(meta["name"]),
        namespace=str(meta.get("namespace") or "default"),
        uid=str(meta.get("uid") or ""),
        spec=parse_spec(md.get("spec") or {}),
        config=config,
    )

"""The operator's only door to the Kubernetes API (besides kopf's own watches).

Why a thin generic layer instead of the generated ``AppsV1Api``/``CoreV1Api`` classes:

* **One code path for every child kind.** Server-side apply is the same PATCH for a Deployment,
  a Service or a PodMonitor; the typed classes would need one method per kind, and a PodMonitor
  has none.
* **RBAC is checked before every call.** Each request names its API group, resource and verb,
  and :func:`modelserve_operator.rbac.allows` must grant it, or :class:`NotAllowed` is raised
  before anything goes on the wire. The chart's ClusterRole is generated from the same table,
  so a call the table forgets fails in every test, not only on a real cluster.
* **No blocking call on kopf's event loop.** The official client is synchronous (urllib3), so
  every request runs in a worker thread (``asyncio.to_thread``).
* **Every request is counted** (``modelserve_operator_api_requests_total``), so tests and the
  benchmark can prove that an unchanged reconcile writes nothing.

Server-side apply: ``PATCH`` with ``Content-Type: application/apply-patch+yaml`` (JSON is YAML),
``fieldManager=modelserve`` and ``force=true``: the operator is the authority over the fields it
renders and takes them back from whoever edited them (drift).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3

from modelserve_operator import metrics, rbac
from modelserve_operator.kinds import KINDS
from modelserve_operator.replicas import FIELD_MANAGER, HANDOVER_FIELD_MANAGER

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"
WRITE_VERBS = frozenset({"create", "patch", "update", "delete"})

__all__ = [
    "FIELD_MANAGER", "HANDOVER_FIELD_MANAGER", "RESOURCES", "Kube", "KubeError", "NotAllowed", "Resource",
    "load_configuration", "resource_for",
]  # fmt: skip

logger = logging.getLogger(__name__)


class KubeError(Exception):
    """An API error with the server's status code, reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        """Server-side trouble, throttling or conflicts are worth retrying; 4xx mostly are not."""
        return self.status in (0, 409, 429) or self.status >= 500


class NotAllowed(RuntimeError):
    """The call is not in the RBAC table: a programming error, caught before the request."""


@dataclasses.dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API: group, version, plural, and whether it is namespaced."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [prefix]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if sub:
            parts.append(sub)
        return "/".join(parts)


# Every kind the operator reads or writes (the kinds table). A kind missing there cannot be touched.
RESOURCES: dict[tuple[str, str], Resource] = {
    (k.api_version, k.kind): Resource(k.group, k.version, k.plural, k.namespaced) for k in KINDS
}


def resource_for(api_version: str, kind: str) -> Resource:
    try:
        return RESOURCES[(api_version, kind)]
    except KeyError:
        raise NotAllowed(f"the operator does not handle {kind} in {api_version}") from None


def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """A client configuration: the given kubeconfig, else in-cluster, else the default kubeconfig.

    The returned ``kubernetes.client.Configuration`` is shared with kopf (see the login handler in
    :mod:`modelserve_operator.handlers`), so kopf's watches and this client use one identity.
    """
    config = kubernetes.client.Configuration()
    if kubeconfig or os.environ.get("KUBECONFIG") or "KUBERNETES_SERVICE_HOST" not in os.environ:
        kubernetes.config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=config, persist_config=False
        )  # type: ignore[no-untyped-call]
    else:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    return config


class Kube:
    """Async facade over the synchronous official client; every call is RBAC-checked and counted."""

    def __init__(self, configuration: Any, *, timeout: float = 30.0) -> None:
        self.configuration = configuration
        self.api = kubernetes.client.ApiClient(configuration)
        self.timeout = timeout

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ the one request path

    def _request_sync(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*serialized, _request_timeout=self.timeout)
            raw = response.read()  # type: ignore[no-untyped-call]
        except kubernetes.client.ApiException as exc:  # TLS or connection-level trouble
            raise KubeError(exc.status or 0, str(exc.reason or "ConnectionError"), str(exc)) from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # refused, reset, timed out, retries spent
            raise KubeError(0, type(exc).__name__, str(exc)) from exc
        text = raw.decode("utf-8", "replace") if raw else ""
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        if not 200 <= response.status <= 299:
            reason = data.get("reason") if isinstance(data, dict) else None
            message = data.get("message") if isinstance(data, dict) else None
            raise KubeError(response.status, str(reason or response.reason), str(message or text[:500]))
        return data

    async def request(
        self,
        verb: str,
        res: Resource,
        *,
        namespace: str | None = None,
        name: str | None = None,
        sub: str | None = None,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        """Check ``verb`` on ``res`` against the RBAC table, then perform it in a worker thread."""
        rbac_resource = f"{res.plural}/{sub}" if sub else res.plural
        if not rbac.allows(res.group, rbac_resource, verb):
            raise NotAllowed(f"RBAC table does not allow {verb} on {rbac_resource} in group {res.group!r}")
        method = {
            "get": "GET", "list": "GET", "create": "POST", "patch": "PATCH",
            "update": "PUT", "delete": "DELETE",
        }[verb]
        path = res.path(namespace, name, sub)
        started = time.perf_counter()
        code = "error"
        try:
            result = await asyncio.to_thread(
                self._request_sync, method, path, query=query, body=body, content_type=content_type
            )
            code = "2xx"
            return result
        except KubeError as exc:
            code = str(exc.status)
            raise
        finally:
            metrics.API_REQUESTS.labels(verb=verb, resource=rbac_resource, code=code).inc()
            metrics.API_LATENCY.labels(verb=verb).observe(time.perf_counter() - started)
            if verb in WRITE_VERBS:
                logger.debug("%s %s -> %s", verb, path, code)

    # ------------------------------------------------------------------ typed conveniences

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        try:
            result: dict[str, Any] = await self.request(
                "get", resource_for(api_version, kind), namespace=namespace, name=name
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def list(
        self, api_version: str, kind: str, namespace: str | None, labels: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Objects matching ``labels`` in ``namespace`` (None: all namespaces); the labels are also
        checked here, as not every server (kmock, for one) filters by label selector."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        data = await self.request(
            "list", resource_for(api_version, kind), namespace=namespace,
            query=[("labelSelector", selector)] if selector else None,
        )
        items = (data or {}).get("items") or []
        return [
            item for item in items
            if all(((item.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in labels.items())
        ]

    async def apply(self, obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply ``obj`` (creates it when absent); returns the object as stored."""
        meta = obj.get("metadata") or {}
        res = resource_for(str(obj.get("apiVersion")), str(obj.get("kind")))
        result: dict[str, Any] = await self.request(
            "patch", res, namespace=meta.get("namespace"), name=meta["name"],
            query=[("fieldManager", field_manager), ("force", "true")],
            body=dict(obj), content_type=APPLY_CONTENT_TYPE,
        )
        return result

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete with background propagation; False when it was already gone (404)."""
        try:
            await self.request(
                "delete", resource_for(api_version, kind), namespace=namespace, name=name,
                query=[("propagationPolicy", "Background")],
            )
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """A JSON merge patch of the status subresource (the only status write the operator does);
        None when the object is gone (deleted meanwhile)."""
        try:
            result: dict[str, Any] = await self.request(
                "patch", resource_for(api_version, kind), namespace=namespace, name=name, sub="status",
                body={"status": dict(status)}, content_type=MERGE_CONTENT_TYPE,
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def create_event(self, event: Mapping[str, Any]) -> None:
        """Post a core/v1 Event; failures are logged, never raised (events are best effort)."""
        try:
            await self.request(
                "create", resource_for("v1", "Event"),
                namespace=(event.get("metadata") or {}).get("namespace"), body=dict(event),
            )
        except KubeError as exc:
            logger.warning("could not post event %s: %s", (event.get("reason")), exc)

    async def has_resource(self, api_version: str, kind: str) -> bool:
        """Discovery: does the server serve ``kind`` in ``api_version`` (e.g. PodMonitor)?

        Discovery paths are non-resource URLs that the built-in ``system:discovery`` role grants
        to every authenticated user, so they have no row in the RBAC table.
        """
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            data = await asyncio.to_thread(self._request_sync, "GET", path)
        except KubeError as exc:
            if exc.status in (404, 503):
                return False
            raise
        finally:
            metrics.API_REQUESTS.labels(verb="get", resource="discovery", code="done").inc()
        return any(r.get("kind") == kind for r in (data or {}).get("resources") or [])

"""kopf wiring: which events trigger a reconcile, and how its outcome maps onto kopf's retries.

Why so thin: every decision lives in :mod:`modelserve_operator.reconcile` (testable without
kopf); this module only says *when* to reconcile:

* ``create`` / ``update`` / ``resume`` of a ModelDeployment: reconcile it now. A spec that can
  never work raises ``kopf.PermanentError`` (kopf stops retrying until the next spec change; the
  problem is in the status), a busy cluster raises ``kopf.TemporaryError`` with a delay.
* a watch event on any watched kind (the ``watched`` rows of :mod:`modelserve_operator.kinds`:
  Deployment, Service, HPA, PDB, Ingress, PodMonitor, and the pods): poke the
  owner, so that a deleted Service or an edited image is restored within about a second and the
  status follows the pods. Pokes coalesce, so a rollout's burst of pod events costs one
  reconcile. ``on.event`` is used rather than ``on.delete`` on purpose: a deletion handler
  would make kopf put its finalizer on every child.
* no ``@kopf.timer``: kopf puts its finalizer on every object that has a timer or a daemon, and
  a finalizer would let a ModelDeployment hang in ``Terminating`` whenever the operator is down.
  The slow safety-net resync is :meth:`Reconciler.resync_forever` instead, started next to kopf
  in :func:`modelserve_operator.main.operate`: one LIST per interval, then a poke per object.

The registry is built by a function, not at import time, so tests and ``main`` each get a
fresh one, and importing this module registers nothing globally.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from modelserve_operator.api import GROUP, KIND, PLURAL, VERSION
from modelserve_operator.reconcile import Reconciler
from modelserve_operator.render.labels import MANAGED_BY, MANAGED_BY_LABEL, MODELDEPLOYMENT_LABEL
from modelserve_operator.settings import WATCHED_CHILDREN
from modelserve_operator.workqueue import RETRY, RetryLater, SpecProblem

logger = logging.getLogger(__name__)


def make_memo(reconciler: Reconciler, configuration: Any) -> kopf.Memo:
    """The operator-wide memo: kopf hands (a shallow copy of) it to every handler."""
    memo = kopf.Memo()
    memo.reconciler = reconciler
    memo.configuration = configuration
    return memo


def _reconciler(memo: Any) -> Reconciler:
    return cast(Reconciler, memo.reconciler)


def connection_info(configuration: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from the same client configuration the reconciler uses.

    One identity for kopf's watches and the reconciler's requests: with a ServiceAccount
    token kubeconfig, both are authorised by exactly the chart's RBAC.
    """
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    scheme, token = None, None
    if header:
        parts = str(header).split(" ", 1)
        scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file or None,
        private_key_path=configuration.key_file or None,
    )


def owner_of(child: Mapping[str, Any]) -> str | None:
    """The name of the ModelDeployment a child (or a pod) belongs to, if any."""
    meta = child.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(GROUP + "/"):
            return str(ref.get("name"))
    name = (meta.get("labels") or {}).get(MODELDEPLOYMENT_LABEL)
    return str(name) if name else None


async def _reconcile_now(reconciler: Reconciler, body: Mapping[str, Any], trigger: str, retry: int) -> None:
    """Map the reconciler's outcomes onto kopf: give up on bad specs, back off on busy clusters.

    The delays are the work queue's one retry policy (:data:`RETRY`) at kopf's retry count, so a
    handler and a poke back off alike; an unexpected exception is logged and retried the same way.
    """
    try:
        await reconciler.reconcile(body, trigger)
    except SpecProblem as exc:
        raise kopf.PermanentError(str(exc)) from exc
    except RetryLater as exc:
        raise kopf.TemporaryError(str(exc), delay=RETRY.delay(exc.delay, retry)) from exc
    except Exception as exc:
        logger.exception("reconcile (%s) failed", trigger)
        raise kopf.TemporaryError(str(exc), delay=RETRY.delay(RETRY.unexpected_delay, retry)) from exc


def build_registry() -> kopf.OperatorRegistry:
    """A kopf registry with every handler of the operator."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(id="login", registry=registry)
    def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
        return connection_info(memo.configuration)

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        await _reconciler(memo).close()

    # Explicit ids: kopf derives its progress annotations' keys from them, and the API server
    # validates annotation keys (a derived "build_registry.<locals>.reconcile" is not one).
    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    async def reconcile(body: kopf.Body, reason: Any, memo: Any, retry: int, **_: Any) -> None:
        await _reconcile_now(_reconciler(memo), _plain(body), f"md-{reason}", retry)

    async def on_child_event(event: Mapping[str, Any], body: kopf.Body, memo: Any, **_: Any) -> None:
        if event.get("type") is None:
            return  # the initial listing: the ModelDeployments' resume handlers cover it
        owner = owner_of(body)
        namespace = (body.get("metadata") or {}).get("namespace")
        if owner and namespace:
            _reconciler(memo).poke(str(namespace), owner, f"{body.get('kind', 'child')}-{event.get('type')}")

    for group, version, plural in WATCHED_CHILDREN:
        kopf.on.event(
            group, version, plural, id=f"child-{plural}", labels={MANAGED_BY_LABEL: MANAGED_BY},
            registry=registry,
        )(on_child_event)
    return registry


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """kopf's Body is a read-only view; the reconciler wants a plain dict."""
    return {key: body[key] for key in body}

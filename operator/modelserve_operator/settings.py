"""kopf's settings for this operator, each with the reason it is not kopf's default.

* **Progress and diff-base in annotations** under ``serving.modelserve.io/``: kopf's bookkeeping
  must survive the CRD's structural schema (the API server prunes undeclared ``status`` fields),
  and a prefix of our own keeps it recognisable in ``kubectl get -o yaml``.
* **No finalizer.** Children carry owner references and the garbage collector deletes them with
  the ModelDeployment; the operator has nothing to clean up outside the cluster, so it registers
  no deletion handler and no timer or daemon (kopf adds its finalizer for any of those), and
  kopf then adds no finalizer. A finalizer would only add a way for a ModelDeployment to hang
  in ``Terminating`` while the operator is down.
* **Standalone, no peering.** Peering is not leader election (two replicas of equal priority
  both pause); the operator runs as one replica with the ``Recreate`` strategy instead, and
  needs no peering RBAC.
* **No kopf events.** The reconciler posts its own Events on condition transitions (with
  readable reasons); kopf's per-handler events would be a write per reconcile.
* **No scanning of CRDs and namespaces.** The operator watches known resources in either all
  namespaces or the exact namespaces it is given, so it needs no cluster-wide read access to
  CustomResourceDefinitions and Namespaces. The CRD must exist when the operator starts (the
  chart installs it first).
* **Server-side label selectors on the children's watches**, so the operator does not stream
  every Pod and Deployment of the cluster, only those labelled as managed by it. The watched
  kinds are the ``watched`` rows of :mod:`modelserve_operator.kinds`; one whose API the cluster
  does not serve (PodMonitor without the Prometheus Operator) is skipped by kopf's start-up
  discovery, and the resync covers it.
"""

from __future__ import annotations

import logging

import kopf

from modelserve_operator.api import GROUP
from modelserve_operator.kinds import WATCHED
from modelserve_operator.render.labels import MANAGED_BY, MANAGED_BY_LABEL

# (group, version, plural) of the children whose watch events trigger a reconcile of the owner.
WATCHED_CHILDREN: tuple[tuple[str, str, str], ...] = tuple((k.group, k.version, k.plural) for k in WATCHED)
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"


def configure(settings: kopf.OperatorSettings, *, request_timeout: float = 60.0) -> kopf.OperatorSettings:
    """Apply this operator's choices to ``settings`` (kopf's defaults otherwise)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"  # registered by nothing; see above
    settings.peering.standalone = True
    settings.peering.clusterwide = False
    settings.posting.enabled = False
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "modelserve-operator"
    settings.scanning.disabled = True
    # Watches end server-side every few minutes and are resumed; bookmarks keep them alive.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = request_timeout
    settings.networking.connect_timeout = 30
    for group, version, plural in WATCHED_CHILDREN:
        settings.watching.label_selectors[group, version, plural] = MANAGED_SELECTOR
    # No default_backoff: the handlers turn every failure into a TemporaryError whose delay is
    # the work queue's retry policy (modelserve_operator.workqueue.RETRY), the one policy.
    return settings

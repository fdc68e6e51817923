"""Decide, without any API call, whether a child object must be (re)applied.

Why this module exists: the issue demands that reconciling an unchanged spec performs *zero*
API writes. Server-side apply is idempotent on the server, but every apply is still a PATCH
request (and, on a busy cluster, an admission + etcd round trip). So before applying, the
operator compares what it wants with what it read, and only writes when one of two things
differs:

1. **The desired object changed.** A hash of the rendered object is stored on the child in the
   ``serving.modelserve.io/desired-hash`` annotation. A different hash means the spec (or the
   operator's rendering) changed, including changes that *remove* fields, which a subset check
   alone cannot see (e.g. ``replicas`` dropped from the Deployment once an HPA owns scaling).
2. **The live object drifted.** Someone edited a field the operator owns (``kubectl set image``,
   ``kubectl scale``, a deleted label). The hash annotation would still match, so every desired
   field is also compared with the live object: a *subset* comparison, because the API server
   adds defaults (``protocol: TCP``, ``imagePullPolicy``, probes' ``timeoutSeconds``...) that
   the operator never sent and must not fight over.

The comparison tolerates the API server's normalisations that would otherwise look like drift
forever: resource quantities (``"1000m"`` comes back as ``"1"``, compared with the operator's one
quantity parser), and integers sent as floats.
Everything here is pure: no kopf, no kubernetes client (see the import-linter contract).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from modelserve_operator.quantity import try_parse_quantity

HASH_ANNOTATION = "serving.modelserve.io/desired-hash"

def content_hash(obj: Mapping[str, Any]) -> str:
    """A stable hash of a desired object, ignoring the hash annotation itself."""
    meta = dict(obj.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != HASH_ANNOTATION}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    canonical = json.dumps({**obj, "metadata": meta}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def with_hash(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` that carries its own content hash as an annotation."""
    digest = content_hash(obj)
    meta = dict(obj.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), HASH_ANNOTATION: digest}
    return {**obj, "metadata": meta}


def _scalars_equal(want: object, have: object) -> bool:
    if want == have and type(want) is type(have):
        return True
    if isinstance(want, bool) or isinstance(have, bool):
        return False
    if isinstance(want, int | float) and isinstance(have, int | float):
        return float(want) == float(have)
    if isinstance(want, str) and isinstance(have, str | int | float):
        # Quantities are normalised by the API server: "1000m" -> "1", "1024Mi" -> "1Gi".
        a, b = try_parse_quantity(want), try_parse_quantity(have)
        return a is not None and b is not None and a == b
    return False


def _keyed(items: Sequence[Any]) -> dict[str, Mapping[str, Any]] | None:
    """Lists of named dicts (containers, ports, env, volumes) are compared by name, as SSA does."""
    if not items or not all(isinstance(i, Mapping) and isinstance(i.get("name"), str) for i in items):
        return None
    return {i["name"]: i for i in items}


def first_difference(want: Any, have: Any, path: str = "") -> str | None:
    """The first path where ``want`` is not contained in ``have``, or None when it is.

    Dicts: every key of ``want`` must be in ``have`` with a matching value (extra keys in
    ``have`` are server defaults or other managers' fields and are fine). Lists of named dicts
    are matched by name; other lists must have the same length and match item by item.
    """
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return path or "."
        for key, value in want.items():
            if key not in have:
                if value is None or value == {} or value == [] or value == "":
                    continue  # empty values are omitted by the API server (omitempty)
                return f"{path}.{key}"
            found = first_difference(value, have[key], f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(have, list):
            return path or "."
        want_keyed, have_keyed = _keyed(want), _keyed(have)
        if want_keyed is not None and have_keyed is not None:
            for name, item in want_keyed.items():
                if name not in have_keyed:
                    return f"{path}[{name}]"
                found = first_difference(item, have_keyed[name], f"{path}[{name}]")
                if found is not None:
                    return found
            return None
        if len(want) != len(have):
            return f"{path}[len]"
        for index, (a, b) in enumerate(zip(want, have, strict=True)):
            found = first_difference(a, b, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    return None if _scalars_equal(want, have) else (path or ".")


def applied_by(live: Mapping[str, Any] | None, manager: str, path: Sequence[str]) -> bool:
    """Whether ``manager``'s server-side apply owns the field at ``path`` (``("spec", "replicas")``)
    of ``live``, according to its ``metadata.managedFields``.

    It matters when the operator stops applying a field: the API server then *removes* a field
    that only the operator owned, and a removed ``spec.replicas`` becomes the default, 1.
    """
    for entry in ((live or {}).get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        node: Any = entry.get("fieldsV1") or {}
        for key in path:
            node = node.get(f"f:{key}") if isinstance(node, Mapping) else None
        if node is not None:
            return True
    return False


def apply_reason(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> str | None:
    """Why ``desired`` (already carrying its hash) must be applied over ``live``; None: no write.

    The reason is logged and counted in the operator's metrics, so a surprising write can be
    explained afterwards ("drift at .spec.template.spec.containers[server].image").
    """
    if live is None:
        return "missing"
    want_hash = ((desired.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
    have_hash = ((live.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
    if (live.get("metadata") or {}).get("deletionTimestamp"):
        return None  # being deleted: its DELETED event triggers a fresh create
    if want_hash is None or want_hash != have_hash:
        return "changed"
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "status")}
    found = first_difference(body, live)
    return None if found is None else f"drift at {found}"

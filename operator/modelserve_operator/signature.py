"""The served model's signature (``status.modelSignature``), read from the pods' fetch init container.

Why from the pods: ``modelserve fetch --check`` already reads the model's structure to check it,
and on success writes the signature to its termination message (``ModelSignature: <JSON>``, see
``modelserve_contract.MODEL_SIGNATURE``); the kubelet keeps it in
``status.initContainerStatuses[].state.terminated.message``. So ``kubectl describe md`` can show
inputs, outputs, opset and sha256 without the operator calling the server, and without the
operator image (which has no ONNX reader) opening the model.

Everything here is pure and defensive: the message crosses a trust boundary (whatever ran in the
init container wrote it, and the kubelet cuts it at 4 KiB), so anything that is not a well-formed
signature is ignored, never an error. Only pods whose fetch container runs the current spec's
fetch arguments count, so during a model change an old pod never reports the old model as the
new one. When no such pod reports one (scaled to zero, the new pods still fetching), the last
written signature stays only while it was read for the same ``model.uri``.

``pvc://`` models are mounted, not fetched: they have no fetch container and no signature; the
server checks them at load (``ModelInvalid:`` in the server container's termination message).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pydantic

import modelserve_contract as contract
from modelserve_operator.api import ModelSignature

_PREFIX = f"{contract.MODEL_SIGNATURE}: "


def shown_uri(uri: str) -> str:
    """``uri`` as the status may show it: no user info, query (pre-signed URLs sign there) or fragment."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return ""
    netloc = parts.netloc.rsplit("@", 1)[-1]  # no user name either: it may be a key id
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_signature(message: Any, uri: str = "") -> dict[str, Any] | None:
    """The status form of a fetch container's termination message, or None when it is not a signature
    (another message, JSON cut by the kubelet, garbage, fields of the wrong type)."""
    if not isinstance(message, str) or not message.startswith(_PREFIX):
        return None
    try:
        body = json.loads(message[len(_PREFIX) :])
        if not isinstance(body, dict):
            return None
        parsed = ModelSignature.model_validate({**body, "uri": shown_uri(uri)})
    except (ValueError, pydantic.ValidationError):  # json.JSONDecodeError is a ValueError
        return None
    if not parsed.models:
        return None
    return parsed.model_dump(by_alias=True, exclude_none=True, mode="json")


def dig(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or None where a step is missing or not a mapping (pod JSON)."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def pod_signature(
    pod: Mapping[str, Any], container: str, args: Sequence[str], uri: str
) -> dict[str, Any] | None:
    """The signature one pod's fetch container ``container`` reported, if it runs ``args`` and succeeded."""
    specs = dig(pod, "spec", "initContainers") or []
    spec = next((c for c in specs if isinstance(c, Mapping) and c.get("name") == container), None)
    if spec is None or list(spec.get("args") or []) != list(args):
        return None
    for status in dig(pod, "status", "initContainerStatuses") or []:
        if isinstance(status, Mapping) and status.get("name") == container:
            term = dig(status, "state", "terminated")
            if isinstance(term, Mapping) and term.get("exitCode") == 0:
                return parse_signature(term.get("message"), uri)
    return None


def served_signature(
    pods: Sequence[Mapping[str, Any]],
    previous: Any,
    *,
    container: str,
    args: Sequence[str] | None,
    uri: str,
) -> dict[str, Any] | None:
    """``status.modelSignature`` to write: from the first pod (by name) of the current spec that
    reports one; else the previous value when it was read for the same URI; else None.

    ``args`` None: the spec has no fetch container (a pvc:// model), so there is no signature.
    """
    if args is None:
        return None
    for pod in sorted(pods, key=lambda p: str(dig(p, "metadata", "name"))):
        if dig(pod, "metadata", "deletionTimestamp"):
            continue
        found = pod_signature(pod, container, args, uri)
        if found is not None:
            return found
    if isinstance(previous, Mapping) and previous.get("uri") == shown_uri(uri):
        return dict(previous)
    return None

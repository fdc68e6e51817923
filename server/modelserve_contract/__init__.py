"""Facts the inference server and the operator must agree on, written once (no third-party imports).

Why a package of its own: the operator renders the pods the server runs in, so the server's
ports, health and metrics paths, the uid its image runs as, and where ``modelserve fetch``
puts a model are facts of both halves. Written twice, they drifted (the operator ran the
pods as uid 1000 while the image's user is 65532). Both halves import this module; neither
imports the other (an import-linter contract keeps them independent, another keeps this
module free of everything but the standard library), and the operator image, which installs
the same distribution without the server's dependencies, can import it.

The image side of the uid (Dockerfile ``USER``, the chart's ``runAsUser``, the README) is
held to :data:`SERVER_UID` by ``tests/packaging/test_contract.py``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

HTTP_PORT = 8080
"""The server's HTTP port in the container (REST API, health, /metrics)."""
GRPC_PORT = 8081
"""The server's gRPC port in the container."""
LIVE_PATH = "/v2/health/live"
"""Liveness: the process is up and its event loop answers."""
READY_PATH = "/v2/health/ready"
"""Readiness: every model is loaded and warmed, and the server is not draining."""
METRICS_PATH = "/metrics"
"""Prometheus exposition on the HTTP port."""
SERVER_UID = 65532
"""The non-root uid (and gid) the images run as; the operator's pods run as the same."""
MODELS_DIR = "/models"
"""Where the fetch init container puts the model, and where the server container reads it."""

# Termination messages (``/dev/termination-log``): the server and ``modelserve fetch`` write them, the
# operator reads them from the pod's container statuses and turns them into status.
TERMINATION_MESSAGE_LIMIT = 4096
"""Bytes of a termination message the kubelet keeps (it cuts the rest)."""
MODEL_INVALID = "ModelInvalid"
"""Prefix (``ModelInvalid: <reason>``) of a model that fails the checks; also the Degraded reason."""
MODEL_FETCH_FAILED = "ModelFetchFailed"
"""Prefix of a model that could not be fetched; also the Degraded reason."""
STARTUP_ERROR = "StartupError"
"""Prefix of any other start-up failure of ``modelserve serve``; also the Degraded reason."""
MODEL_SIGNATURE = "ModelSignature"
"""Prefix of the success message of ``modelserve fetch --check``: ``ModelSignature: <compact JSON>``
(``{"models": [{"file", "sha256", "opset", "inputs", "outputs"}]}``, tensors as ``{"name",
"datatype", "shape"}`` with ``-1`` for a dynamic dimension), cut to fit
:data:`TERMINATION_MESSAGE_LIMIT` with ``"truncated": true`` where tensors or models were left out."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_file_name(raw: str, default: str) -> str:
    """A URI path component as a local file name: percent-decoded, unsafe characters as ``_``.

    ``""``, ``.`` and ``..`` become ``default``, so a name can never leave the directory.
    """
    name = _UNSAFE.sub("_", unquote(raw))
    return default if name in ("", ".", "..") else name


def fetched_model_path(uri: str, dest_dir: str = MODELS_DIR) -> str:
    """Where ``modelserve fetch URI DEST_DIR`` puts the model: ``DEST_DIR/<last path component>``.

    The component is taken from the URI's path (a plain path: the path itself, without a
    ``#sha256=`` fragment); an http(s) URI without one becomes ``model.onnx``, anything else
    without one (an s3:// bucket) ``model``.
    """
    parts = urlsplit(uri)
    path = parts.path.rstrip("/") if parts.scheme else uri.split("#", 1)[0].rstrip("/")
    last = path.rsplit("/", 1)[-1]
    default = "model.onnx" if parts.scheme in ("http", "https") else "model"
    return f"{dest_dir.rstrip('/')}/{safe_file_name(last, default)}"

"""One error hierarchy for the whole server, and the one place where errors become status codes.

Why one place: the REST and the gRPC front ends must answer the same mistake with the same class
of status (a wrong tensor shape is a client error on both), and ONNX Runtime's own exceptions must
never leak out as a 500. Every layer below the transports raises a :class:`ModelserveError`
subclass; the transports only read ``http_status`` / ``grpc_code`` and ``message``.

``grpc_code`` is the *name* of a ``grpc.StatusCode`` member (e.g. ``"INVALID_ARGUMENT"``) so that this
module, and everything importing it, stays free of grpc.
"""

from __future__ import annotations

from typing import ClassVar


class ModelserveError(Exception):
    """Base of every error the server reports to a client.

    ``message`` is what the client sees (``{"error": message}`` over REST, the status details over
    gRPC); it should name the tensor, model or field that is wrong.
    """

    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(ModelserveError):
    """The client sent something malformed or inconsistent with the model (HTTP 400)."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class ModelNotFound(ModelserveError):
    """Unknown model name or version (HTTP 404)."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class NotReady(ModelserveError):
    """The server or the model cannot serve right now: loading, or draining on SIGTERM (HTTP 503)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class PayloadTooLarge(ModelserveError):
    """The request body exceeds ``--max-request-bytes`` (HTTP 413)."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class ClientGone(ModelserveError):
    """The client went away before its request was complete; nobody is left to answer (counted 499)."""

    http_status = 499
    grpc_code = "CANCELLED"


class InternalError(ModelserveError):
    """A failure that is not the client's fault (HTTP 500). Seeing one means a bug or a broken model."""

    http_status = 500
    grpc_code = "INTERNAL"


class HeaderTooLarge(ModelserveError):
    """The request head (line and headers) exceeds the server's cap (HTTP 431)."""

    http_status = 431
    grpc_code = "RESOURCE_EXHAUSTED"


def as_client_error(exc: BaseException) -> ModelserveError:
    """What a client is told about ``exc``: the error itself, or an InternalError that names it.

    The one place the text of a 500 is written, for both transports; the caller logs the trace.
    """
    if isinstance(exc, ModelserveError):
        return exc
    return InternalError(f"internal error: {type(exc).__name__}: {exc}")


class StartupError(Exception):
    """Configuration that can never serve (bad flag, missing model, unavailable provider).

    Not a :class:`ModelserveError`: it never reaches a client; ``serve`` prints it and exits non-zero.
    """


# ONNX Runtime's pybind exceptions, by class name (so this module does not import onnxruntime).
# INVALID_ARGUMENT is raised for a wrong dtype, rank or static dimension: a client error.
_ORT_CLIENT_ERRORS = frozenset({"InvalidArgument"})


def translate_runtime_error(exc: BaseException, context: str) -> ModelserveError:
    """Map an exception raised while running a model to a :class:`ModelserveError`.

    ``context`` names the model (and version) for the message. ONNX Runtime's ``InvalidArgument`` and
    the ``ValueError`` it raises for an unknown input name are client errors (400); anything else
    (``Fail``, ``RuntimeException``, out of memory) is an internal error (500).
    """
    if isinstance(exc, ModelserveError):
        return exc
    name = type(exc).__name__
    detail = str(exc).strip() or name
    if name in _ORT_CLIENT_ERRORS or isinstance(exc, ValueError | TypeError):
        return InvalidInput(f"{context}: {detail}")
    return InternalError(f"{context}: {name}: {detail}")


class FetchError(StartupError):
    """A model URI could not be made available locally (``modelserve fetch`` or ``serve --model URI``).

    ``uri`` must already be redacted (no passwords or signed query strings): see
    :func:`modelserve_server.fetch.redact_uri`. The message names the URI and the cause in one line.
    """

    def __init__(self, uri: str, cause: str) -> None:
        super().__init__(f"cannot fetch {uri}: {cause}")
        self.uri = uri
        self.cause = cause

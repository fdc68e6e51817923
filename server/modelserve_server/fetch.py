"""Fetch a model from where it is published to a local path the server can load.

Why this module exists: a pod's init container (``modelserve fetch URI DEST_DIR``) and
``modelserve serve --model URI`` must turn the same URI into the same file, and must fail the
same way - with one error naming the URI and the cause, and a non-zero exit that Kubernetes
shows as a failing init container. So there is one implementation, used by both.

Guarantees:
- Nothing half-written is ever visible at the final path: every download goes to a temporary
  file (or directory) beside the destination and is moved into place with an atomic rename
  only after it is complete and, when a checksum is given, verified. On any failure the
  temporary is removed.
- Checksums (``sha256=`` argument or a ``#sha256=<hex>`` URI fragment) are compared on the
  bytes as written, while streaming, so a large model is read once.
- Error messages never carry secrets: passwords in the URI and query strings (pre-signed URLs
  carry signatures there) are redacted.

Where a fetched model lands (the init container and the operator rely on it; the name rule is
``modelserve_contract.safe_file_name``, shared with the operator's ``fetched_model_path``):
``DEST_DIR/<last path component of the URI>``; for an ``s3://`` prefix that is a "directory",
``DEST_DIR/<last component of the prefix>/...`` with the tree below it (a Triton-style
repository or model directory).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit
from urllib.request import url2pathname

from modelserve_contract import safe_file_name as _safe_name
from modelserve_server.errors import FetchError, StartupError
from modelserve_server.parsing import ascii_uint

__all__ = ["FetchError", "cache_dir_for", "fetch_main", "fetch_model", "redact_uri"]

#: Tests replace it with an ``httpx.MockTransport``; None is httpx's own network transport.
HTTP_TRANSPORT: Any = None
_CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough to keep memory flat.
_HTTP_TIMEOUT_S = 60.0
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------------------------------------
# Public API


def fetch_model(uri: str, dest_dir: Path, *, sha256: str | None = None, copy_local: bool = False) -> Path:
    """Make the model at ``uri`` available locally and return its path.

    Local paths and ``file://`` URIs are returned in place (nothing is copied) unless
    ``copy_local`` is set, in which case they are copied into ``dest_dir`` like a download.
    ``http(s)://`` and ``s3://`` are downloaded into ``dest_dir`` (created if missing).
    Raises :class:`FetchError` naming the (redacted) URI and the cause.
    """
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise _error(uri, f"malformed URI: {exc}") from exc
    expected = _expected_sha256(uri, parts.fragment, sha256)
    scheme = parts.scheme.lower()
    try:
        if scheme in ("http", "https"):
            return _fetch_http(uri, Path(dest_dir), expected)
        if scheme == "s3":
            return _fetch_s3(uri, Path(dest_dir), expected)
        if scheme == "file" or scheme == "" or _looks_like_windows_drive(scheme):
            return _fetch_local(uri, Path(dest_dir), expected, copy_local)
    except FetchError:
        raise
    except OSError as exc:  # disk full, permissions on dest_dir, ...
        raise _error(uri, f"{type(exc).__name__}: {exc}") from exc
    raise _error(uri, f"unsupported scheme {parts.scheme!r} (use a path, file://, http(s):// or s3://)")


def cache_dir_for(uri: str, root: Path) -> Path:
    """A per-URI directory under ``root``, so two URIs whose files share a name never collide."""
    parts = urlsplit(uri)
    digest = hashlib.sha256(urlunsplit(parts._replace(fragment="")).encode()).hexdigest()[:16]
    return Path(root) / digest


def redact_uri(uri: str) -> str:
    """The URI without its password, query values and fragment, fit for logs and error messages."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{user}:***@{host}"
    query = "<redacted>" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def fetch_main(argv: list[str]) -> int:
    """``modelserve fetch URI DEST_DIR [--sha256 HEX] [--check]``: what a pod's init container runs.

    Prints the local path of the model on success; with ``--check`` it also writes the model's
    signature to the termination message (``ModelSignature: <JSON>``, see
    :func:`modelserve_server.modelcheck.signature_message`), which the operator copies into
    ``status.modelSignature``. On failure prints one line naming the URI and the cause to stderr,
    writes ``ModelFetchFailed: ...`` or ``ModelInvalid: ...`` there instead and returns 1 (argparse
    returns 2 for usage errors).
    """
    parser = argparse.ArgumentParser(
        prog="modelserve fetch",
        description="Fetch a model URI (path, file://, http(s)://, s3://) into DEST_DIR and print where "
        "it landed. Files land at DEST_DIR/<last component of the URI path>.",
    )
    parser.add_argument("uri", metavar="URI", help="model URI; may end in #sha256=<hex>")
    parser.add_argument("dest_dir", metavar="DEST_DIR", type=Path, help="directory to fetch into")
    parser.add_argument("--sha256", metavar="HEX", default=None, help="expected SHA-256 of the file")
    parser.add_argument("--check", action="store_true",
                        help="check the fetched model(s) before the server starts: ONNX, an opset this "
                        "ONNX Runtime supports, external-data files present")
    parser.add_argument("--require-batch-dim", action="store_true",
                        help="with --check: also require a dynamic first dimension (batching asked for)")
    args = parser.parse_args(argv)
    try:
        path = fetch_model(args.uri, args.dest_dir, sha256=args.sha256, copy_local=True)
        if args.check or args.require_batch_dim:
            known = _expected_sha256(args.uri, urlsplit(args.uri).fragment, args.sha256)
            signatures = _check_fetched(path, require_batch_dim=args.require_batch_dim, sha256=known)
            _termination_message(_signature_message(signatures))
    except FetchError as exc:
        print(f"modelserve fetch: error: {exc}", file=sys.stderr)
        _termination_message(f"ModelFetchFailed: {exc}")
        return 1
    except StartupError as exc:  # ModelInvalid
        print(f"modelserve fetch: error: {exc}", file=sys.stderr)
        _termination_message(f"ModelInvalid: {exc}")
        return 1
    print(path)
    return 0


def _check_fetched(path: Path, *, require_batch_dim: bool, sha256: str | None = None) -> list[dict[str, Any]]:
    """Check one fetched file, or every ``.onnx`` file of a fetched tree (a model repository), and
    return their signatures. ``sha256`` is the digest the fetch already verified (the file is not
    read again); without one each file is hashed here, one more sequential read."""
    from modelserve_server.modelcheck import ModelInvalid, check_model, signature

    files = sorted(path.rglob("*.onnx")) if path.is_dir() else [path]
    if not files:
        raise ModelInvalid(f"{path}: no .onnx file in the fetched directory")
    signatures = []
    for model in files:
        summary = check_model(model, require_batch_dim=require_batch_dim)
        name = model.relative_to(path).as_posix() if path.is_dir() else model.name
        digest = sha256 if sha256 is not None and not path.is_dir() else _file_sha256(model)
        signatures.append(signature(summary, name, digest))
    return signatures


def _signature_message(signatures: list[dict[str, Any]]) -> str:
    from modelserve_server.modelcheck import signature_message

    return signature_message(signatures)


def _termination_message(message: str) -> None:
    from modelserve_server.modelcheck import write_termination_message

    write_termination_message(message)


# ---------------------------------------------------------------------------------------------
# Checksums and file names


def _error(uri: str, cause: str) -> FetchError:
    return FetchError(redact_uri(uri), cause)


def _expected_sha256(uri: str, fragment: str, argument: str | None) -> str | None:
    from_fragment: str | None = None
    for item in fragment.split("&") if fragment else []:
        key, _, value = item.partition("=")
        if key == "sha256":
            from_fragment = value
    values = {v.strip().lower() for v in (from_fragment, argument) if v is not None}
    if len(values) > 1:
        raise _error(uri, "the --sha256 argument and the #sha256= fragment disagree")
    if not values:
        return None
    value = values.pop()
    if not _SHA256_RE.match(value):
        raise _error(uri, f"malformed sha256 {value!r}: expected 64 hexadecimal digits")
    return value


def _verify(uri: str, actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        raise _error(uri, f"sha256 mismatch: expected {expected}, got {actual}")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _looks_like_windows_drive(scheme: str) -> bool:
    return len(scheme) == 1 and scheme.isalpha()


@contextlib.contextmanager
def _atomic_file(final: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside ``final``, renamed onto it on success and removed on failure."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with tmp.open("wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _atomic_dir(final: Path) -> Iterator[Path]:
    """A temporary directory beside ``final``, swapped into place on success, removed on failure."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part"))
    try:
        yield tmp
        tmp.chmod(0o755)
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
            os.replace(final, old / "x")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------
# Local paths and file://


def _fetch_local(uri: str, dest_dir: Path, expected: str | None, copy_local: bool) -> Path:
    parts = urlsplit(uri)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise _error(uri, f"file:// URIs must name a local path, not host {parts.netloc!r}")
        source = Path(url2pathname(parts.path))
    else:
        source = Path(uri.split("#", 1)[0]).expanduser()
    if not source.exists():
        raise _error(uri, f"no such file or directory: {source}")
    if source.is_dir():
        if expected is not None:
            raise _error(uri, "a sha256 checksum applies to a file, but this is a directory")
        if not copy_local:
            return source
        final = dest_dir / _safe_name(source.resolve().name, "model")
        if final.resolve() == source.resolve():
            return final
        with _atomic_dir(final) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        return final
    _verify(uri, _file_sha256(source), expected)
    if not copy_local:
        return source
    final = dest_dir / _safe_name(source.name, "model.onnx")
    if final.exists() and final.resolve() == source.resolve():
        return final
    with _atomic_file(final) as out, source.open("rb") as src:
        shutil.copyfileobj(src, out, _CHUNK)
    return final


# ---------------------------------------------------------------------------------------------
# http:// and https://


def _fetch_http(uri: str, dest_dir: Path, expected: str | None) -> Path:
    import httpx

    parts = urlsplit(uri)
    url = urlunsplit(parts._replace(fragment=""))
    final = dest_dir / _safe_name(PurePosixPath(parts.path).name, "model.onnx")
    if expected is not None and final.is_file() and _file_sha256(final) == expected:
        return final  # already fetched and verified: a restart does not download again
    secure = parts.scheme.lower() == "https"

    def no_downgrade(request: httpx.Request) -> None:
        # Every hop of a redirect chain passes here: an https URI never continues over plain http.
        if secure and request.url.scheme != "https":
            raise _error(uri, "refusing a redirect from https to http (the model would travel unencrypted)")

    try:
        with httpx.Client(
            follow_redirects=True, timeout=_HTTP_TIMEOUT_S, event_hooks={"request": [no_downgrade]},
            transport=HTTP_TRANSPORT,
        ) as client, client.stream("GET", url) as response:
            if response.status_code != 200:
                raise _error(uri, f"HTTP {response.status_code} {response.reason_phrase}".rstrip())
            declared = ascii_uint(response.headers.get("content-length", ""), max_digits=20)
            digest = hashlib.sha256()
            received = 0
            with _atomic_file(final) as out:
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
                if declared is not None and not encoded and received != declared:
                    raise _error(uri, f"truncated download: {received} of {declared} bytes")
                _verify(uri, digest.hexdigest(), expected)
    except httpx.HTTPError as exc:
        raise _error(uri, _describe_http_error(exc)) from exc
    return final


def _describe_http_error(exc: Exception) -> str:
    cause: BaseException = exc
    while cause.__cause__ is not None and not str(cause):
        cause = cause.__cause__
    text = str(cause) or type(cause).__name__
    return f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------------------------------------
# s3://


def _fetch_s3(uri: str, dest_dir: Path, expected: str | None) -> Path:
    try:
        import boto3
        import botocore.exceptions
    except ImportError as exc:
        raise _error(uri, "s3:// needs boto3: install the 's3' extra ('modelserve[s3]')") from exc
    parts = urlsplit(uri)
    bucket, key = parts.netloc, parts.path.lstrip("/")  # keys are literal, as in the AWS CLI
    if not bucket:
        raise _error(uri, "no bucket: expected s3://bucket/key")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    try:
        client = boto3.client("s3", endpoint_url=endpoint)
        if key and not key.endswith("/"):
            try:
                client.head_object(Bucket=bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if _s3_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                    raise
            else:
                return _s3_download_file(client, uri, bucket, key, dest_dir, expected)
        prefix = key if not key or key.endswith("/") else key + "/"
        keys = _s3_list(client, bucket, prefix)
        if not keys:
            what = f"no object {key!r}" if key else "no objects"
            raise _error(uri, f"{what} in bucket {bucket!r}")
        if expected is not None:
            raise _error(uri, "a sha256 checksum applies to a file, but this is a prefix (directory)")
        name = PurePosixPath(prefix.rstrip("/")).name  # the whole bucket lands in DEST_DIR/model
        return _s3_download_tree(client, uri, bucket, prefix, keys, dest_dir / _safe_name(name, "model"))
    except botocore.exceptions.ClientError as exc:
        raise _error(uri, _describe_s3_error(exc, bucket)) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise _error(uri, f"{type(exc).__name__}: {exc}") from exc


def _s3_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe_s3_error(exc: Any, bucket: str) -> str:
    code = _s3_code(exc)
    if code == "NoSuchBucket":
        return f"bucket {bucket!r} does not exist"
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"access denied ({code}): check the credentials and the bucket policy"
    message = exc.response.get("Error", {}).get("Message") or str(exc)
    return f"S3 error {code}: {message}"


def _s3_list(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(str(item["Key"]) for item in page.get("Contents", []))
    return keys


def _s3_download_file(
    client: Any, uri: str, bucket: str, key: str, dest_dir: Path, expected: str | None
) -> Path:
    final = dest_dir / _safe_name(PurePosixPath(key).name, "model.onnx")
    if expected is not None and final.is_file() and _file_sha256(final) == expected:
        return final
    with _atomic_file(final) as out:
        client.download_fileobj(bucket, key, out)
        if expected is not None:
            out.flush()
            _verify(uri, _file_sha256(Path(out.name)), expected)
    return final


def _s3_download_tree(client: Any, uri: str, bucket: str, prefix: str, keys: list[str], final: Path) -> Path:
    with _atomic_dir(final) as tmp:
        for key in keys:
            relative = PurePosixPath(key[len(prefix) :])
            if key.endswith("/") or not relative.parts:
                continue  # a "folder" marker object
            if ".." in relative.parts or relative.is_absolute():
                raise _error(uri, f"refusing object key that leaves the prefix: {key!r}")
            target = tmp.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                client.download_fileobj(bucket, key, out)
    return final

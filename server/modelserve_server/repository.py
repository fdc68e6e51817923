"""Which models this server serves, where their files are, and which version is the default.

Two sources, both from the command line (a contract with the operator and the chart):

* ``--model [NAME=]URI`` (repeatable): one model, version ``"1"``; NAME defaults to the file's stem.
  Non-local URIs (``http(s)://``, ``s3://``) are handed to :func:`modelserve_server.fetch.fetch_model`
  (imported lazily, so a server image without boto3 still serves local files).
* ``--model-repository DIR``: a Triton-style tree ``DIR/<name>/<version>/model.onnx``; every numeric
  version is served and the highest is the default.

This module only resolves names to files; loading sessions is :mod:`modelserve_server.runtime`'s job.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from modelserve_server.errors import StartupError
from modelserve_server.registry import version_sort_key

log = logging.getLogger(__name__)

#: Where non-local model URIs are downloaded for ``serve``; the init container uses its own DEST_DIR.
CACHE_DIR_ENV = "MODELSERVE_CACHE_DIR"
DEFAULT_VERSION = "1"
MODEL_FILENAME = "model.onnx"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_VERSION_RE = re.compile(r"^[0-9]{1,18}$")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """One ``--model`` argument after parsing."""

    name: str
    uri: str


@dataclass(frozen=True, slots=True)
class ModelVersionFile:
    """A model version resolved to a local ONNX file."""

    name: str
    version: str
    path: Path


@dataclass(slots=True)
class ModelIndex:
    """All models and versions to serve: ``versions[name]`` sorted ascending, highest is the default."""

    files: dict[str, dict[str, ModelVersionFile]] = field(default_factory=dict)

    def add(self, entry: ModelVersionFile) -> None:
        versions = self.files.setdefault(entry.name, {})
        if entry.version in versions:
            raise StartupError(
                f"model {entry.name} version {entry.version} is given twice "
                f"({versions[entry.version].path} and {entry.path})"
            )
        versions[entry.version] = entry

    def default_version(self, name: str) -> str:
        return max(self.files[name], key=version_sort_key)

    def all(self) -> list[ModelVersionFile]:
        return [
            self.files[n][v] for n in sorted(self.files) for v in sorted(self.files[n], key=version_sort_key)
        ]


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def parse_model_arg(arg: str) -> ModelSource:
    """Parse ``[NAME=]URI``. ``NAME=`` is recognised only when it looks like a model name.

    A URI can contain ``=`` (query strings, ``#sha256=``), so the prefix counts as a name only when it
    has no ``/`` or ``:`` in it.
    """
    name: str | None = None
    uri = arg
    head, sep, tail = arg.partition("=")
    if sep and head and "/" not in head and ":" not in head and "#" not in head:
        name, uri = head, tail
    if not uri:
        raise StartupError(f"--model {arg!r}: empty URI")
    if name is None:
        path_part = uri.split("#", 1)[0].split("?", 1)[0].rstrip("/")
        stem = Path(path_part.rsplit("/", 1)[-1]).stem
        if stem == "model" and "/" in path_part:
            # ".../resnet/1/model.onnx" is more usefully named after its directory than "model".
            stem = Path(path_part).parent.name if not Path(path_part).parent.name.isdigit() else stem
        name = stem
    if not _NAME_RE.match(name):
        raise StartupError(
            f"--model {arg!r}: model name {name!r} must be 1-128 of [A-Za-z0-9_.-], starting alphanumeric"
        )
    return ModelSource(name, uri)


def _cache_root() -> Path:
    root = os.environ.get(CACHE_DIR_ENV)
    return Path(root) if root else Path(tempfile.gettempdir()) / "modelserve-cache"


def _onnx_file(path: Path, what: str) -> Path:
    """A file is used as is; a directory must hold ``model.onnx`` (a Triton version directory)."""
    if path.is_dir():
        candidate = path / MODEL_FILENAME
        if candidate.is_file():
            return candidate
        raise StartupError(f"{what}: directory {path} has no {MODEL_FILENAME}")
    if not path.is_file():
        raise StartupError(f"{what}: no such file {path}")
    return path


def resolve_source(source: ModelSource) -> Path:
    """Return a local ONNX file for a ``--model`` source, fetching non-local URIs first.

    Every scheme goes through :func:`modelserve_server.fetch.fetch_model`, the code ``modelserve
    fetch`` runs, so a ``#sha256=`` pin is verified on local files too (they are used in place).
    """
    what = f"--model {source.name}={source.uri}"
    from modelserve_server import fetch

    if _is_local(source.uri):
        local = fetch.fetch_model(source.uri, _cache_root(), copy_local=False)
    else:
        local = fetch.fetch_model(source.uri, fetch.cache_dir_for(source.uri, _cache_root()))
    return _onnx_file(Path(local), what)


def scan_repository(root: Path) -> list[ModelVersionFile]:
    """Read a Triton-style tree ``root/<name>/<version>/model.onnx``.

    Non-numeric version directories and version directories without ``model.onnx`` are skipped with a
    warning (Triton does the same); a repository with no model at all is a start-up error.
    """
    if not root.is_dir():
        raise StartupError(f"--model-repository {root}: not a directory")
    found: list[ModelVersionFile] = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _NAME_RE.match(model_dir.name):
            log.warning("model repository: skipping %s (not a valid model name)", model_dir)
            continue
        for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
            if not _VERSION_RE.match(version_dir.name):
                log.warning("model repository: skipping %s (version directories are numbers)", version_dir)
                continue
            model_file = version_dir / MODEL_FILENAME
            if not model_file.is_file():
                log.warning("model repository: skipping %s (no %s)", version_dir, MODEL_FILENAME)
                continue
            found.append(ModelVersionFile(model_dir.name, str(int(version_dir.name)), model_file))
    if not found:
        raise StartupError(f"--model-repository {root}: no <name>/<version>/{MODEL_FILENAME} found")
    return found


def build_index(model_args: list[str], repository: Path | None) -> ModelIndex:
    """Resolve every ``--model`` and ``--model-repository`` into one :class:`ModelIndex`.

    Blocking (may download): call it from a worker thread at start-up.
    """
    index = ModelIndex()
    if repository is not None:
        for entry in scan_repository(repository):
            index.add(entry)
    for arg in model_args:
        source = parse_model_arg(arg)
        if source.name in index.files:
            raise StartupError(f"--model {arg!r}: a model named {source.name!r} is already configured")
        index.add(ModelVersionFile(source.name, DEFAULT_VERSION, resolve_source(source)))
    if not index.files:
        raise StartupError("no models: give --model [NAME=]URI or --model-repository DIR")
    return index

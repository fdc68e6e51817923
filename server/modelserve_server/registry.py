"""The model registry: which models and versions are configured, which are loaded, which is the default.

Why apart from the data plane: naming facts (the expected set from the command line, the default
version, what "not loaded yet" means against "unknown") are decided here once, and a request resolves
its model exactly once, through :meth:`ModelRegistry.resolve`, to the :class:`LoadedModel` that then
carries it (session, scheduler, metrics, statistics). Nothing here runs a model or touches a transport.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from modelserve_server.errors import ModelNotFound, NotReady
from modelserve_server.parsing import ascii_uint

M = TypeVar("M")


def version_sort_key(version: str) -> tuple[int, str]:
    """Numeric versions compare as numbers ("10" > "9"); anything else sorts before them, by text."""
    number = ascii_uint(version)  # str.isdigit() is true for "²", which int() refuses
    return (number, "") if number is not None else (-1, version)


class ModelRegistry(Generic[M]):
    """Configured names and versions, the loaded ones (``M``: the loaded-model type), defaults, readiness.

    Generic over the loaded-model type so that this module depends on nothing but errors and the
    version order; the data plane instantiates it with :class:`~modelserve_server.loaded.LoadedModel`.
    """

    def __init__(self) -> None:
        self._loaded: dict[str, dict[str, M]] = {}
        self._defaults: dict[str, str] = {}
        self._expected: dict[str, set[str]] = {}  # configured, maybe not loaded yet
        self._complete = False

    # -- configuration and loading ---------------------------------------------------------------

    def expect(self, name: str, version: str) -> None:
        """A configured version: "not loaded yet" (503) rather than "unknown" (404) until it loads."""
        self._expected.setdefault(name, set()).add(version)

    def add(self, name: str, version: str, model: M) -> None:
        """Register a loaded version; the highest loaded version becomes the default."""
        self._loaded.setdefault(name, {})[version] = model
        self.expect(name, version)
        current = self._defaults.get(name)
        if current is None or version_sort_key(version) > version_sort_key(current):
            self._defaults[name] = version

    def set_default(self, name: str, version: str) -> None:
        """The default version of ``name`` as the repository decided it."""
        self._defaults[name] = version

    def mark_complete(self) -> None:
        """Every configured version is loaded and warmed: the server may turn ready."""
        self._complete = True

    @property
    def complete(self) -> bool:
        """True once start-up loaded every configured version."""
        return self._complete

    # -- lookups ---------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Configured model names, sorted."""
        return sorted(self._expected)

    def versions(self, name: str) -> list[str]:
        """Configured versions of ``name``, ascending. Raises ModelNotFound."""
        if name not in self._expected:
            raise ModelNotFound(f"unknown model {name!r}")
        return sorted(self._expected[name], key=version_sort_key)

    def resolve(self, name: str, version: str | None) -> M:
        """The loaded model for ``name`` and ``version`` (None or "": the default).

        Raises :class:`ModelNotFound` for names and versions that are not configured, and
        :class:`NotReady` for configured ones that are not loaded yet.
        """
        versions = self._loaded.get(name)
        if versions is None:
            if name in self._expected:
                raise NotReady(f"model {name!r} is not loaded yet")
            raise ModelNotFound(f"unknown model {name!r}")
        if not version:
            version = self._defaults.get(name)
            if version is None or version not in versions:
                raise NotReady(f"model {name!r} is not loaded yet")
        loaded = versions.get(version)
        if loaded is None:
            if version in self._expected.get(name, ()):
                raise NotReady(f"model {name!r} version {version!r} is not loaded yet")
            raise ModelNotFound(f"unknown version {version!r} of model {name!r}")
        return loaded

    def loaded(self, name: str | None = None) -> Iterator[M]:
        """Loaded models (of ``name``, or all), by name then version order."""
        names: Iterable[str] = sorted(self._loaded) if name is None else [name]
        for n in names:
            versions = self._loaded.get(n, {})
            for v in sorted(versions, key=version_sort_key):
                yield versions[v]

    def count(self) -> int:
        """Loaded model versions."""
        return sum(len(v) for v in self._loaded.values())

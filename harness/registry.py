"""Registries for models, compressors and suites.

Built-in entries are registered lazily as "module:attribute" strings with a one-line description, so `harness list`
and `harness --help` never import torch. Third-party distributions add entries through the entry-point groups
`harness.models`, `harness.compressors` and `harness.suites`; their description is read from the loaded object.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from harness.errors import UsageError, unknown_name_error


@dataclass
class Entry:
    name: str
    target: str  # "package.module:attribute", or "<object>" when registered as an object
    description: str | None  # None: read from the loaded object (plugins)
    origin: str  # "builtin" or the providing distribution's name


class Registry:
    """Named, lazily imported objects of one kind."""

    def __init__(self, kind: str, group: str, builtins_module: str) -> None:
        self.kind = kind
        self.group = group
        self._builtins_module = builtins_module
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, Any] = {}
        self._discovered = False

    def register(self, name: str, target: Any, description: str, origin: str = "builtin") -> None:
        """Register `target`: a "module:attribute" string (imported on first use) or the object itself."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        if isinstance(target, str):
            self._entries[name] = Entry(name, target, description, origin)
        else:
            self._entries[name] = Entry(name, "<object>", description, origin)
            self._loaded[name] = target

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        importlib.import_module(self._builtins_module)  # its import registers the built-ins
        for ep in entry_points(group=self.group):
            if ep.name in self._entries:
                continue  # a plugin may not shadow a built-in
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            self._entries[ep.name] = Entry(ep.name, ep.value, None, dist)

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def entry(self, name: str) -> Entry:
        self._discover()
        if name not in self._entries:
            raise unknown_name_error(self.kind, name, self._entries)
        return self._entries[name]

    def get(self, name: str) -> Any:
        entry = self.entry(name)
        if name not in self._loaded:
            module_name, _, attribute = entry.target.partition(":")
            try:
                obj = importlib.import_module(module_name)
                for part in attribute.split(".") if attribute else []:
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as exc:
                raise UsageError(
                    f"{self.kind} '{name}' (from {entry.origin}) cannot be loaded from '{entry.target}': {exc}"
                ) from exc
            self._loaded[name] = obj
        return self._loaded[name]

    def describe(self, name: str) -> str:
        entry = self.entry(name)
        if entry.description is not None:
            return entry.description
        doc = getattr(self.get(name), "description", None) or (self.get(name).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


DEFAULT_MODEL = "reference"  # what --model means when it is not given
MODELS = Registry("model", "harness.models", "harness.models")
COMPRESSORS = Registry("method", "harness.compressors", "compressors")
SUITES = Registry("suite", "harness.suites", "suites")

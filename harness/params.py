"""Typed parameters for compressors and suites, set from the command line with `--set <scope>.<name>=<value>`."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

from harness.errors import UsageError, unknown_name_error


def parse_set_options(options: list[str], scopes: list[str]) -> dict[str, dict[str, str]]:
    """Split `["fidelity.prompts=p.txt", ...]` into {"fidelity": {"prompts": "p.txt"}}; every key must be scoped."""
    parsed: dict[str, dict[str, str]] = {scope: {} for scope in scopes}
    for option in options:
        key, sep, value = option.partition("=")
        scope, dot, name = key.strip().partition(".")
        if not sep or not dot or not scope or not name:
            raise UsageError(
                f"malformed --set '{option}': expected <scope>.<name>=<value>, where scope is one of "
                f"{', '.join(scopes)} (for example --set sampling.num_inference_steps=8)"
            )
        if scope not in parsed:
            raise _scope_error(key, scope, scopes)
        if name in parsed[scope]:
            raise UsageError(f"--set {scope}.{name} is given twice")
        parsed[scope][name] = value.strip()
    return parsed


def _scope_error(key: str, scope: str, scopes: list[str]) -> UsageError:
    """A --set scope this command does not have: a method or suite not asked for says how to add it."""
    from harness.registry import COMPRESSORS, SUITES

    for registry, option in ((COMPRESSORS, "--method"), (SUITES, "--suite")):
        if scope in registry.names():
            return UsageError(f"--set {key}=...: {registry.kind} {scope} is not part of this command; add it with "
                              f"{option} {scope} (in a chain: a+{scope}), or drop the setting")
    return unknown_name_error("--set scope", scope, scopes)


def _convert(text: str, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null", "") and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(text, inner, where)
    if origin in (tuple, list):
        element = args[0] if args else str
        values = tuple(_convert(part.strip(), element, where) for part in text.split(",") if part.strip())
        return values if origin is tuple else list(values)
    if origin is typing.Literal:
        if text not in args:
            raise UsageError(f"{where}: '{text}' is not one of {', '.join(map(str, args))}")
        return text
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{where}: '{text}' is not a boolean (use true or false)")
    if annotation in (int, float):
        try:
            value = annotation(text)
        except ValueError:
            raise UsageError(f"{where}: '{text}' is not a valid {annotation.__name__}") from None
        if annotation is float and not math.isfinite(value):  # nan turns guidance off, inf makes NaN images
            raise UsageError(f"{where}: '{text}' is not a finite number")
        return value
    if annotation is Path:
        return Path(text).expanduser()
    if annotation is str:
        return text
    raise TypeError(f"{where}: parameters of type {annotation!r} cannot be set from the command line")


def build_params(params_cls: type, settings: dict[str, str], scope: str) -> Any:
    """Instantiate the dataclass `params_cls` from string settings, converting each to its annotated type."""
    return override_params(params_cls(), settings, scope)


def override_params(params: Any, settings: dict[str, str], scope: str) -> Any:
    """A copy of the dataclass instance `params` with string settings converted to the fields' types."""
    params_cls = type(params)
    hints = typing.get_type_hints(params_cls)
    fields = {f.name for f in dataclasses.fields(params_cls)}
    values = {}
    for name, text in settings.items():
        if name not in fields:
            raise unknown_name_error(f"parameter of {scope}", name, fields) if fields else UsageError(
                f"{scope} takes no parameters (got --set {scope}.{name})"
            )
        values[name] = _convert(text, hints[name], f"--set {scope}.{name}")
    try:
        return dataclasses.replace(params, **values)
    except ValueError as exc:  # the dataclass's own validation in __post_init__
        raise UsageError(f"{scope}: {exc}") from None


def params_as_dict(params: Any) -> dict[str, Any]:
    """JSON-ready resolved parameters (paths as strings, tuples as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return {f.name: plain(getattr(params, f.name)) for f in dataclasses.fields(params)}


def params_from_record(params_cls: type, recorded: dict[str, Any], scope: str) -> Any:
    """The dataclass `params_cls` from what `params_as_dict` recorded (a saved recipe step's parameters), typed and
    validated again through the `--set` conversions; a field missing from the record keeps its default."""
    as_text = {name: ",".join(map(str, value)) if isinstance(value, list) else str(value)
               for name, value in recorded.items()}
    return build_params(params_cls, as_text, scope)

"""What every plugin (compressor or suite) is: a registered name, a description, typed parameters, the run's context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from harness.context import Context
from harness.params import params_as_dict


class Plugin:
    """Base of compressors and suites. Subclasses set `name` and a frozen `Params` dataclass (`--set` fills it).

    Built-ins describe themselves on registration; `description` is what `harness list` shows for a plugin that is
    registered through an entry point.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, params: Any = None, context: Context | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self.context = context or Context()

    def resolved_params(self) -> dict[str, Any]:
        return params_as_dict(self.params)

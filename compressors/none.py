"""The uncompressed model: the baseline every method is compared with."""

from __future__ import annotations

from typing import Any

from compressors.base import Compressor


class NoCompression(Compressor):
    name = "none"  # its description lives in the registration (compressors/__init__.py)

    @property
    def changes_model(self) -> bool:
        return False

    def apply(self, model: Any) -> dict[str, Any]:
        return {}

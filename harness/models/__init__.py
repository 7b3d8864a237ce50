"""Models: registered presets, loading, the block topology. Importing this package registers the built-ins."""

from harness.models.presets import PRESETS
from harness.registry import MODELS

for _name, _spec in PRESETS.items():
    MODELS.register(_name, _spec, _spec.description)

"""Pipeline families: one module per family, each registering one `Family` instance here. Light to import."""

from harness.models.families.base import (
    Family,
    family_of,
    family_of_pipeline_class,
    family_of_transformer,
    register,
    registered_families,
)
from harness.models.families.chroma import ChromaFamily
from harness.models.families.flux import FluxFamily
from harness.models.families.flux2 import Flux2Family
from harness.models.families.qwenimage import QwenImageFamily
from harness.models.families.sd3 import SD3Family
from harness.models.families.zimage import ZImageFamily

register(SD3Family())
register(FluxFamily())
register(QwenImageFamily())
register(Flux2Family())
register(ZImageFamily())
register(ChromaFamily())

# The family a Hub repo id that is not a preset is assumed to hold until its model_index.json is read.
HUB_REPO_FAMILY: Family = family_of("sd3")

__all__ = ["HUB_REPO_FAMILY", "Family", "family_of", "family_of_pipeline_class", "family_of_transformer", "register",
           "registered_families"]

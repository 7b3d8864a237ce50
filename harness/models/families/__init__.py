"""Pipeline families: one module per family, each registering one `Family` instance here. Light to import."""

from harness.models.families.base import (
    Family,
    family_of,
    family_of_pipeline_class,
    family_of_transformer,
    register,
    registered_families,
)
from harness.models.families.flux import FluxFamily
from harness.models.families.sd3 import SD3Family

register(SD3Family())
register(FluxFamily())

# The family a Hub repo id that is not a preset is assumed to hold until its model_index.json is read.
HUB_REPO_FAMILY: Family = family_of("sd3")

__all__ = ["HUB_REPO_FAMILY", "Family", "family_of", "family_of_pipeline_class", "family_of_transformer", "register",
           "registered_families"]

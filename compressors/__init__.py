"""Compression methods. Each is one module plus one registration line here (or an entry point in
the group `harness.compressors` of another distribution)."""

from harness.registry import COMPRESSORS

COMPRESSORS.register("none", "compressors.none:NoCompression", "No compression: the original model (the baseline).")

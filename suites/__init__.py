"""Evaluation suites. Each is one module plus one registration line here (or an entry point in
the group `harness.suites` of another distribution)."""

from harness.registry import SUITES

SUITES.register(
    "fidelity",
    "suites.fidelity:FidelitySuite",
    "PSNR, SSIM and LPIPS of each image against the uncompressed model's image for the same prompt and seed.",
)
SUITES.register(
    "geneval-shapes",
    "suites.geneval_shapes:GenevalShapesSuite",
    "GenEval's rules and scores on the synthetic shapes world (553 prompts), judged exactly instead of by a detector.",
)

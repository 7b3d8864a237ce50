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
SUITES.register("geneval", "suites.geneval:GenevalSuite",
                "GenEval: 553 prompts x 4 images; official evaluator or transformers Mask2Former + open_clip colours.")
SUITES.register("hpsv2", "suites.hpsv2:HPSv2Suite",
                "HPSv2 (v2.1 default, v2.0 selectable) x100 on 4 styles x 800 HPDv2 prompts; OpenCLIP ViT-H-14.")
SUITES.register("clipscore", "suites.clipscore:ClipScoreSuite",
                "CLIPScore (torchmetrics' form, x100) of each image and its prompt; CLIP ViT-L/14 by default.")
SUITES.register("pickscore", "suites.pickscore:PickScoreSuite",
                "PickScore: the Pick-a-Pic preference CLIP's logit-scaled image-prompt similarity.")
SUITES.register("imagereward", "suites.imagereward:ImageRewardSuite",
                "ImageReward v1.0 through the image-reward package's own model (its own environment); DrawBench-style.")
SUITES.register("fid", "suites.fid:FIDSuite",
                "FID and KID of the images against the uncompressed model's for the same prompts and seeds.")
SUITES.register("cmmd", "suites.cmmd:CMMDSuite",
                "CMMD (CLIP embeddings, Gaussian-kernel MMD) against the uncompressed model's images.")
SUITES.register("latency", "suites.latency:LatencySuite",
                "Median time per image, per denoising step and per transformer forward, with spread; first call apart.")
SUITES.register("memory", "suites.memory:MemorySuite",
                "Weight bytes per component; load, inference and transformer-forward peaks; fit on GPU profiles.")

# Suite groups `--suite` accepts. "quality" is the model's own quality suites (ModelSpec.quality_suites).
SUITE_GROUPS: dict[str, tuple[str, ...]] = {
    "device": ("latency", "memory"),
    "quality": (),  # filled per model
    "full": ("quality", "fidelity", "device"),
    # what a paper reports, to place a method in its tables: HierarchicalPrune (GenEval, HPSv2, memory, latency);
    # SVDQuant (FID, ImageReward, CLIPScore, LPIPS and PSNR against the 16-bit model; its CLIP-IQA is not here)
    "paper": ("geneval", "hpsv2", "device"),
    "svdquant": ("fid", "imagereward", "clipscore", "fidelity"),
}

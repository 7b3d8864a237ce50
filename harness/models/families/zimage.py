"""Z-Image (ZImagePipeline, ZImageTransformer2DModel; Z-Image-Turbo): a single-stream DiT (S3-DiT) on 2x2 latent
patches with 3-axis RoPE, one Qwen3 text encoder (its second-to-last hidden state, padding dropped: each caption
keeps its own length), FLUX.1's VAE layout. Z-Image-Turbo is distilled to sample in a few steps without guidance
(guidance 0); where guidance is on, the pipeline runs it in ONE forward on twice the batch (the latents repeated, the
negative captions appended), as pos + w * (pos - neg), so w = 0 is off (not 1).

The transformer takes LISTS: one latent [C, 1, H, W] (a frame axis of 1) and one caption [T_i, 2560] per sample, at
t = 1 - sigma in [0, 1] (0 is noise), and returns ([one [C, 1, H, W] per sample],); its output is the negative of
the flow-matching velocity (x0 - noise), which the pipeline negates before the scheduler step.

Blocks, in execution order, all `ZImageTransformerBlock`s, each returning ONE tensor (its stream):
- `noise_refiner` (2): the image tokens alone (after the patch embedder, before the text joins), timestep-modulated;
- `context_refiner` (2): the caption tokens alone (after the caption embedder), without modulation (`modulation` is
  False: no adaLN_modulation, so no w_norm1);
- `layers` (30): the joint stream [image tokens, caption tokens], timestep-modulated.
A block is pre-norm attention and SwiGLU feed-forward, each wrapped in RMSNorms before and after (sandwich norm).
Its modulation `adaLN_modulation` is Sequential(Linear(min(dim, 256), 4 * dim)) of the timestep embedding, chunked
into (scale_msa, gate_msa, scale_mlp, gate_mlp): no shift; the inputs of attention and feed-forward are scaled by
1 + scale, their (post-normed) outputs gated by tanh(gate). Sub-components (the harness's vocabulary):
- `w_norm1` = adaLN_modulation; skipped: scales 0 (so x1) and gates whose tanh is exactly 1, i.e. the block computes
  as an unmodulated (context-refiner-like) block; its RMSNorms, which carry weights, stay;
- `attn` = attention (diffusers' Attention, Z-Image's processor); skipped: returns its normed, scaled input;
- `ff` = feed_forward (SwiGLU w1/w3 -> w2); skipped: returns its input.

Pruning: the main `layers` may be removed (n_layers follows). The refiners may be skipped in place (analysis) but not
removed: both refiner stacks take their length from ONE config entry, n_refiner_layers, so a transformer with one
refiner removed from one stack has no config that rebuilds it (from_pretrained would build the missing block again:
missing and unexpected keys), and removability is decided per block kind, so removals cannot be held to pairs.
They are also the only stream-specific layers: the noise refiners are the only image-only processing between the
patch embedder (one Linear) and the joint stream, the context refiners the only text-only processing of Qwen3's
features before it.

Step caches hook the main layers only (`caches_block`): the refiners run on their own streams (image only, caption
only), not the joint stream whose residuals a cache carries. First-Block Cache needs diffusers' block registry
corrected (`step_cache_blocks`). TaylorSeer's default module patterns ("^transformer_blocks.*attn", ...) match no
`layers.N.attention`: the family names its own (`taylorseer_identifiers`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from harness.models.families.base import COMPONENT_ATTRIBUTES, Family, draw_tensor, vae_scale_factor
from harness.models.spec import SamplingSettings

if TYPE_CHECKING:
    import torch

_MODULATED = ("w_norm1", "attn", "ff")
_MAIN, _NOISE_REFINER, _CONTEXT_REFINER = "zimage-main", "zimage-noise-refiner", "zimage-context-refiner"
# a gate that tanh takes to exactly 1.0: 1 - tanh(30) is about 2e-26, below float64's and every narrower type's ulp
_GATE = 30.0
_NOISE_REFINER_IDS = 1000  # diffusers numbers the noise refiners' layer_id from 1000 (the SigLIP refiners from 2000)


class ZImageFamily(Family):
    name = "zimage"
    pipeline_class_name = "ZImagePipeline"
    transformer_class_name = "ZImageTransformer2DModel"
    # ZImagePipeline.__call__'s defaults (diffusers pipelines/z_image/pipeline_z_image.py): 50 steps, guidance 5.0,
    # 1024x1024, 512 tokens, no negative prompt (an empty one where guidance is on)
    default_sampling = SamplingSettings(num_inference_steps=50, guidance_scale=5.0, max_sequence_length=512,
                                        negative_prompt=None)
    default_max_sequence_length = 512
    takes_negative_prompt = True
    kind_components = {
        _MAIN: _MODULATED,
        _NOISE_REFINER: _MODULATED,
        _CONTEXT_REFINER: ("attn", "ff"),  # no modulation
    }
    taylorseer_identifiers = (r"^layers\.\d+\.attention$",)  # the blocks name their attention `attention`
    component_attributes = {
        **COMPONENT_ATTRIBUTES,
        "w_norm1": ("adaLN_modulation",),
        "attn": ("attention",),
        "ff": ("feed_forward",),
    }

    # -- sampling ------------------------------------------------------------------------------------------------

    def native_size(self, transformer_config: dict[str, Any], vae_config: dict[str, Any]) -> int | None:
        """None: ZImagePipeline draws 1024 x 1024 whatever its configs say (`height = height or 1024`), which
        `default_sampling`'s size is."""
        return None

    def size_problem(self, transformer_config: dict[str, Any], vae_config: dict[str, Any], height: int,
                     width: int) -> str | None:
        patch = int(tuple(transformer_config.get("all_patch_size", (2,)))[0])
        step = vae_scale_factor(vae_config) * patch
        if height % step or width % step:
            return f"height and width must be multiples of {step} (the VAE's scale x the transformer's patch size)"
        lens = tuple(transformer_config.get("axes_lens", (1024, 512, 512)))
        rows, columns = height // step, width // step
        if rows > int(lens[1]) or columns > int(lens[2]):
            return (f"the transformer's RoPE tables (axes_lens {list(lens)}) cover {lens[1]} x {lens[2]} patches, "
                    f"{int(lens[1]) * step} x {int(lens[2]) * step} px")
        return None

    def doubles_batch(self, sampling: SamplingSettings) -> bool:
        return sampling.guidance_scale > 0  # ZImagePipeline.do_classifier_free_guidance: guidance_scale > 0

    def call_kwargs(self, settings: SamplingSettings, batch_size: int) -> dict[str, Any]:
        """The base arguments: the harness's guidance_scale is the pipeline's own `guidance_scale` (w of
        pos + w * (pos - neg), 0 = off, Turbo's value); cfg_normalization and cfg_truncation keep the pipeline's
        defaults (off, and guidance at every step)."""
        return super().call_kwargs(settings, batch_size)

    def draw_noise(self, pipeline: Any, batch_size: int, settings: SamplingSettings,
                   generator: torch.Generator | list[torch.Generator], device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
        """[B, C, 2 * (H // 16), 2 * (W // 16)] in float32 whatever the model's dtype: the pipeline draws its
        latents in float32 and keeps them so (its scheduler step asserts it)."""
        import torch

        return pipeline.prepare_latents(batch_size, pipeline.transformer.in_channels, settings.height,
                                        settings.width, torch.float32, device, generator)

    def encode_prompts(self, pipeline: Any, prompts: list[str], max_sequence_length: int | None,
                       device: torch.device | str) -> tuple[torch.Tensor, None]:
        """Qwen3's second-to-last hidden state of each chat-templated prompt without its padding, as the pipeline
        passes them (one [T_i, D] per prompt), zero-padded here to [B, max T_i, D]; no pooled embedding."""
        from torch.nn.utils.rnn import pad_sequence

        embeds, _ = pipeline.encode_prompt(  # a copy: diffusers writes the templated prompts into the list it gets
            prompt=list(prompts), device=device, do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length or self.default_max_sequence_length)
        return pad_sequence(list(embeds), batch_first=True), None

    def text_tokens(self, sampling: SamplingSettings, components: dict[str, Any]) -> int:
        """At most max_sequence_length: the pipeline drops each caption's padding, so the transformer sees the
        chat-templated prompt's own token count, which a prompt can raise up to this bound (the figure used without
        a prompt; the transformer itself pads captions to a multiple of 32)."""
        return sampling.max_sequence_length or self.default_max_sequence_length

    # -- bare transformer forwards -------------------------------------------------------------------------------

    def transformer_inputs(self, transformer: torch.nn.Module, batch_size: int, height: int, width: int,
                           text_tokens: int, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                           generator: torch.Generator | None = None) -> dict[str, Any]:
        """Lists of B latents [C, 1, H/8, W/8] and B captions [text_tokens, cap_feat_dim] in `dtype`, at t = 0.5
        (the transformer's t is 1 - sigma; float32, as the pipeline passes it). Only shapes decide the forward's
        control flow (sequence padding, masks, RoPE positions), so it runs on the meta device too."""
        import torch

        dtype = dtype or torch.float32
        config, draw = transformer.config, draw_tensor(device, dtype, generator)
        rows, columns = 2 * (height // 16), 2 * (width // 16)  # as ZImagePipeline.prepare_latents (VAE scale 8)
        latents, captions = [], []
        for _ in range(batch_size):
            latents.append(draw(config.in_channels, 1, rows, columns))
            captions.append(draw(text_tokens, config.cap_feat_dim))
        # t in float32 whatever the dtype, as the pipeline passes its timesteps
        return {"x": latents, "t": torch.full((batch_size,), 0.5, device=device, dtype=torch.float32),
                "cap_feats": captions, "return_dict": False}

    # -- training ------------------------------------------------------------------------------------------------

    def training_latents(self, pipeline: Any, images: Any) -> torch.Tensor:
        """[B, C, 1, H, W]: the pipeline's per-sample latent with its frame axis, stacked; encoded as the base
        does (the VAE's posterior sample, shifted and scaled)."""
        return super().training_latents(pipeline, images).unsqueeze(2)

    def training_inputs(self, pipeline: Any, x_t: torch.Tensor, sigma: torch.Tensor, image_size: tuple[int, int],
                        prompts: list[str], sampling: SamplingSettings, device: torch.device,
                        dtype: torch.dtype) -> dict[str, Any]:
        """The lists the pipeline passes: x_t's samples and each prompt's unpadded caption, at t = 1 - sigma. The
        output is ([B tensors [C, 1, H, W]],): stacked, x_t's shape; it is x0 - noise, the NEGATIVE velocity. t is
        float32, as the pipeline passes it (in bfloat16, t * 1000 would be off by up to 2 timesteps)."""
        import torch

        embeds, _ = pipeline.encode_prompt(
            prompt=list(prompts), device=device, do_classifier_free_guidance=False,
            max_sequence_length=sampling.max_sequence_length or self.default_max_sequence_length)
        return {"x": list(x_t.to(device, dtype).unbind(0)), "t": (1 - sigma.to(device, torch.float32)),
                "cap_feats": [e.to(device, dtype) for e in embeds], "return_dict": False}

    def velocity(self, output: Any) -> torch.Tensor:
        """The transformer returns ([B tensors [C, 1, H, W]],) holding x0 - noise: stacked and negated."""
        import torch

        return -torch.stack(output[0])

    # -- block structure -----------------------------------------------------------------------------------------

    def block_lists(self) -> list[tuple[str, type]]:
        from diffusers.models.transformers.transformer_z_image import ZImageTransformerBlock

        # execution order: image tokens refined, caption tokens refined, then the joint stream; `siglip_refiner`
        # exists only with siglip_feat_dim (Z-Image-Omni's configuration, another pipeline), never here
        return [("noise_refiner", ZImageTransformerBlock), ("context_refiner", ZImageTransformerBlock),
                ("layers", ZImageTransformerBlock)]

    def block_kind(self, block: torch.nn.Module) -> str:
        if not block.modulation:
            return _CONTEXT_REFINER
        return _NOISE_REFINER if block.layer_id >= _NOISE_REFINER_IDS else _MAIN

    def unremovable_reason(self, kind: str) -> str | None:
        if kind in (_NOISE_REFINER, _CONTEXT_REFINER):
            stream = "image" if kind == _NOISE_REFINER else "caption"
            return (f"a Z-Image {stream} refiner: both refiner stacks take their length from one config entry "
                    "(n_refiner_layers), so one removed refiner leaves a transformer that from_pretrained cannot "
                    "rebuild; only the main layers can be removed")
        return None

    def block_stand_in(self, block: torch.nn.Module) -> torch.nn.Module:
        from harness.models.stand_ins import PassThroughStream

        return PassThroughStream()

    def stand_in(self, component: str, module: torch.nn.Module) -> torch.nn.Module | None:
        if component == "w_norm1":
            from harness.models.stand_ins import ConstantModulation

            # (scale_msa, gate_msa, scale_mlp, gate_mlp): inputs scaled by 1 + 0, outputs gated by tanh(G) = 1
            return ConstantModulation(module[-1].out_features, (0.0, _GATE, 0.0, _GATE))
        return None  # attention: diffusers' Attention (passes its input through); feed_forward: identity

    def caches_block(self, block: torch.nn.Module) -> bool:
        return self.block_kind(block) == _MAIN

    def step_cache_blocks(self, transformer: torch.nn.Module) -> torch.nn.Module:
        """The main layers (the refiners, in their empty lists, always compute), after correcting diffusers' block
        registry entry, which First-Block Cache reads: diffusers 0.42.1 registers ZImageTransformerBlock with the
        default argument name `hidden_states`, but the block's stream argument is `x`, so the cache's lookup of
        `hidden_states` fails ("Parameter 'hidden_states' not found in function signature")."""
        _register_block_metadata()
        return super().step_cache_blocks(transformer)

    def stand_in_tokenizers(self, spec: Any) -> dict[str, Any]:
        """The Qwen tokenizer stand-in with the released vocabulary and special-token ids."""
        from harness.models.tiny.zimage import released_qwen_tokenizer

        return {"tokenizer": released_qwen_tokenizer()}

    def config_after_removal(self, transformer: torch.nn.Module) -> dict[str, Any]:
        refiners = len(transformer.noise_refiner)
        if len(transformer.context_refiner) != refiners:
            raise ValueError(f"the noise and context refiners differ in number ({refiners} and "
                             f"{len(transformer.context_refiner)}): n_refiner_layers cannot describe them")
        return {"n_layers": len(transformer.layers), "n_refiner_layers": refiners}


@lru_cache(maxsize=1)
def _register_block_metadata() -> None:
    """Re-register ZImageTransformerBlock's cache metadata so that a lookup of `hidden_states` finds `x` (by
    keyword or position), where the block's signature has no `hidden_states` (diffusers 0.42.1)."""
    import inspect

    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.models.transformers.transformer_z_image import ZImageTransformerBlock

    if "hidden_states" in inspect.signature(ZImageTransformerBlock.forward).parameters:
        return  # a diffusers whose block takes hidden_states by that name needs nothing

    class ZImageBlockMetadata(TransformerBlockMetadata):
        def _get_parameter_from_args_kwargs(self, identifier: str, args: Any = (), kwargs: Any = None) -> Any:
            return super()._get_parameter_from_args_kwargs("x" if identifier == "hidden_states" else identifier,
                                                           args, kwargs)

    TransformerBlockRegistry.register(
        model_class=ZImageTransformerBlock,
        metadata=ZImageBlockMetadata(return_hidden_states_index=0, return_encoder_hidden_states_index=None,
                                     hidden_states_argument_name="x"),
    )

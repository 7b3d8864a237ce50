"""FLUX.2 [dev] (Flux2Pipeline, Flux2Transformer2DModel): 8 double-stream then 48 single-stream blocks on 2x2
patchified VAE latents (AutoencoderKLFlux2, 32 channels -> 128 per token, normalised by the VAE's BatchNorm
statistics) with 4-axis (t, h, w, l) RoPE position ids; one text encoder, Mistral Small 3.x
(Mistral3ForConditionalGeneration), whose prompt runs through a chat template with FLUX.2's system message and whose
hidden states of layers 10, 20 and 30 are stacked into each token's 15360-wide embedding (no pooled embedding).
Guidance-distilled: guidance is an embedded input (`guidance_scale`), one forward per step, no negative prompt.
Reference images (image conditioning) are not used by the harness.

Modulation. Unlike FLUX.1, no block owns modulation weights: the model-level `double_stream_modulation_img`,
`double_stream_modulation_txt` and `single_stream_modulation` compute shift/scale/gate once per step from the time
and guidance embedding and every block of a kind receives the same tensors. The blocks' norms (norm1, norm2, ...)
are parameter-free LayerNorms. So the block kinds have no w_norm* component: skipping "a block's modulation" would
free no parameter (the shared layers still serve every other block) and is not offered; the shared modulation
modules belong to no block and are never pruned, by block removal or otherwise.

Components. Double-stream blocks: `attn` (the joint attention, both streams' projections; skipped, it returns its
normalised inputs, so each stream adds its gated, modulated normalised self), `ff` and `ff_context` (the SwiGLU
feed-forwards of the image and text streams; skipped, they return their input). Single-stream blocks fuse the
attention's QKV projection with the MLP's input projection (`to_qkv_mlp_proj`) and both output projections
(`to_out`) in one Flux2ParallelSelfAttention, so their only honest component is `attn`, the whole fused layer
(attention and MLP); skipping it leaves the residual stream plus the gated normalised input.

Pruning. Every block is removable: each returns its streams in the shape it took them, no block ends a stream (the
text stream joins the image stream after the last double block whatever the count), and the shared modulation is
computed outside the blocks. A skipped whole block returns its streams unchanged (the single-stream loop expects one
tensor, `block_stand_in`).

Step caches hook the single-stream blocks only (`caches_block`): diffusers' First-Block Cache needs its first and
last hooked blocks to return one form, and double and single blocks return different ones.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from harness.models.families.base import Family, draw_tensor, vae_scale_factor
from harness.models.spec import SamplingSettings

if TYPE_CHECKING:
    import torch

_DEFAULT_SAMPLE_SIZE = 128  # Flux2Pipeline.__init__'s default_sample_size (latent side; x the VAE's scale: 1024 px)
_GUIDANCE = 4.0  # Flux2Pipeline.__call__'s default guidance_scale, for bare forwards


class Flux2Family(Family):
    name = "flux2"
    pipeline_class_name = "Flux2Pipeline"
    transformer_class_name = "Flux2Transformer2DModel"
    # Flux2Pipeline.__call__ defaults: 50 steps, guidance_scale 4.0, max_sequence_length 512; 1024x1024
    default_sampling = SamplingSettings(num_inference_steps=50, guidance_scale=_GUIDANCE, max_sequence_length=512,
                                        negative_prompt=None)
    default_max_sequence_length = 512
    takes_negative_prompt = False
    kind_components = {
        "flux2-double": ("attn", "ff", "ff_context"),
        "flux2-single": ("attn",),  # the fused attention + MLP layer
    }

    # -- sampling --------------------------------------------------------------------------------------------------

    def native_size(self, transformer_config: dict[str, Any], vae_config: dict[str, Any]) -> int | None:
        """The pipeline's default size: its fixed default_sample_size (128) times the VAE's scale."""
        if "block_out_channels" not in vae_config:
            return None
        return _DEFAULT_SAMPLE_SIZE * vae_scale_factor(vae_config)

    def size_problem(self, transformer_config: dict[str, Any], vae_config: dict[str, Any], height: int,
                     width: int) -> str | None:
        step = vae_scale_factor(vae_config) * 2  # latents are patchified 2x2
        if height % step or width % step:
            # the pipeline only warns and draws a smaller image (its prepare_latents floors the size)
            return f"height and width must be multiples of {step} (the VAE's scale x FLUX.2's 2x2 latent patches)"
        return None

    def doubles_batch(self, sampling: SamplingSettings) -> bool:
        return False  # guidance-distilled: guidance is embedded

    def forwards_per_step(self, sampling: SamplingSettings) -> int:
        return 1

    def call_kwargs(self, settings: SamplingSettings, batch_size: int) -> dict[str, Any]:
        """The pipeline's own guidance argument is `guidance_scale`, embedded (never CFG); no negative prompt. The
        text encoder's hidden-state layers stay the pipeline's default (10, 20, 30)."""
        return super().call_kwargs(settings, batch_size)

    def draw_noise(self, pipeline: Any, batch_size: int, settings: SamplingSettings,
                   generator: torch.Generator | list[torch.Generator], device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
        """The pipeline's own draw (`prepare_latents`: one randn of [B, 128, H/16, W/16]), returned unpacked: its
        call takes `latents=` in that form and packs them itself."""
        channels = pipeline.transformer.config.in_channels // 4  # prepare_latents multiplies by 4 (2x2 patches)
        packed, _ids = pipeline.prepare_latents(batch_size, channels, settings.height, settings.width, dtype, device,
                                               generator)
        step = pipeline.vae_scale_factor * 2  # as prepare_latents sizes them
        rows, columns = int(settings.height) // step, int(settings.width) // step
        return packed.permute(0, 2, 1).reshape(batch_size, packed.shape[-1], rows, columns)  # _pack_latents undone

    def encode_prompts(self, pipeline: Any, prompts: list[str], max_sequence_length: int | None,
                       device: torch.device | str) -> tuple[torch.Tensor, None]:
        embeds, _text_ids = pipeline.encode_prompt(
            prompt=prompts, device=device, max_sequence_length=max_sequence_length or self.default_max_sequence_length)
        return embeds, None  # FLUX.2 has no pooled embedding

    def text_tokens(self, sampling: SamplingSettings, components: dict[str, Any]) -> int:
        """The chat-templated prompt, padded (or truncated) to max_sequence_length tokens."""
        return sampling.max_sequence_length or self.default_max_sequence_length

    # -- bare transformer forwards ---------------------------------------------------------------------------------

    def transformer_inputs(self, transformer: torch.nn.Module, batch_size: int, height: int, width: int,
                           text_tokens: int, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                           generator: torch.Generator | None = None) -> dict[str, Any]:
        """Packed latent tokens [B, H/16 * W/16, 128] with their (t, h, w, l) ids, text tokens with theirs
        (0, 0, 0, l), at t = 0.5 (the transformer scales by 1000), plus guidance when the model embeds it; ids
        as the pipeline builds them (int64, batched)."""
        import torch

        dtype = dtype or torch.float32
        config, draw = transformer.config, draw_tensor(device, dtype, generator)
        rows, columns = height // 16, width // 16
        inputs: dict[str, Any] = {
            "hidden_states": draw(batch_size, rows * columns, config.in_channels),
            "encoder_hidden_states": draw(batch_size, text_tokens, config.joint_attention_dim),
            "timestep": torch.full((batch_size,), 0.5, device=device, dtype=dtype),
            "img_ids": _latent_ids(rows, columns).expand(batch_size, -1, -1).to(device),
            "txt_ids": _text_ids(text_tokens).expand(batch_size, -1, -1).to(device),
            "return_dict": False,
        }
        if config.guidance_embeds:
            inputs["guidance"] = torch.full((batch_size,), _GUIDANCE, device=device, dtype=torch.float32)
        return inputs

    # -- training (distillation) -----------------------------------------------------------------------------------

    def training_latents(self, pipeline: Any, images: Any) -> torch.Tensor:
        """Packed, normalised latents [B, H/16 * W/16, 128] as the pipeline denoises them: the VAE posterior's
        sample, patchified 2x2 and normalised by the VAE's BatchNorm running statistics (the inverse of what the
        pipeline does before decoding; FLUX.2's VAE has no scaling/shift factors), then packed.

        `images`: uint8 images [B, H, W, 3] (numpy)."""
        import torch

        from harness.models.vae import to_model_range

        vae = pipeline.vae
        with torch.no_grad():
            latents = vae.encode(to_model_range(images, vae.device).to(vae.dtype)).latent_dist.sample()
        latents = pipeline._patchify_latents(latents)
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latents.device,
                                                                                               latents.dtype)
        return pipeline._pack_latents((latents - mean) / std)

    def training_inputs(self, pipeline: Any, x_t: torch.Tensor, sigma: torch.Tensor, image_size: tuple[int, int],
                        prompts: list[str], sampling: SamplingSettings, device: torch.device,
                        dtype: torch.dtype) -> dict[str, Any]:
        import torch

        embeds, text_ids = pipeline.encode_prompt(
            prompt=prompts, device=device,
            max_sequence_length=sampling.max_sequence_length or self.default_max_sequence_length)
        height, width = image_size
        scale = pipeline.vae_scale_factor * 2  # 2x2 latent patches per token
        inputs: dict[str, Any] = {
            "hidden_states": x_t,
            "encoder_hidden_states": embeds.to(dtype),
            "timestep": sigma.to(dtype),  # the pipeline passes timestep / 1000 = sigma; the transformer scales it
            "img_ids": _latent_ids(height // scale, width // scale).expand(x_t.shape[0], -1, -1).to(device),
            "txt_ids": text_ids.to(device),
            "return_dict": False,
        }
        if pipeline.transformer.config.guidance_embeds:
            inputs["guidance"] = torch.full((x_t.shape[0],), sampling.guidance_scale, device=device,
                                            dtype=torch.float32)
        return inputs

    # -- block structure -------------------------------------------------------------------------------------------

    def block_lists(self) -> list[tuple[str, type]]:
        from diffusers.models.transformers.transformer_flux2 import Flux2SingleTransformerBlock, Flux2TransformerBlock

        return [("transformer_blocks", Flux2TransformerBlock),
                ("single_transformer_blocks", Flux2SingleTransformerBlock)]

    def block_kind(self, block: torch.nn.Module) -> str:
        from diffusers.models.transformers.transformer_flux2 import Flux2SingleTransformerBlock

        return "flux2-single" if isinstance(block, Flux2SingleTransformerBlock) else "flux2-double"

    def block_stand_in(self, block: torch.nn.Module) -> torch.nn.Module:
        """Double-stream blocks: the default (encoder_hidden_states, hidden_states). Single-stream blocks return
        the joint stream as one tensor (or, with split_hidden_states, split as the block splits it)."""
        from diffusers.models.transformers.transformer_flux2 import Flux2SingleTransformerBlock

        if isinstance(block, Flux2SingleTransformerBlock):
            return _pass_through_single_block()()
        return super().block_stand_in(block)

    def caches_block(self, block: torch.nn.Module) -> bool:
        """Only the single-stream blocks. diffusers' First-Block Cache takes the first hooked block's output as the
        head of a residual that the last hooked block's output is compared with, in one return form: a double block
        returns (text, image), a single block the joint stream, so a set spanning both kinds fails (as diffusers' own
        `enable_cache` does on Flux2). The double blocks (8 of 56, a quarter of the block parameters) always compute;
        the one set serves every step cache (TaylorSeer and PAB would take all blocks)."""
        from diffusers.models.transformers.transformer_flux2 import Flux2SingleTransformerBlock

        return isinstance(block, Flux2SingleTransformerBlock)

    # -- weight-free builds -----------------------------------------------------------------------------------------

    def stand_in_tokenizers(self, spec: Any) -> dict[str, Any]:
        """The processor with the released vocabulary (131072 ids) and FLUX.2's chat template."""
        from harness.models.tiny.flux2 import released_processor

        return {"tokenizer": released_processor(max_length=spec.sampling.max_sequence_length
                                                 or self.default_max_sequence_length)}

    def config_after_removal(self, transformer: torch.nn.Module) -> dict[str, Any]:
        return {"num_layers": len(transformer.transformer_blocks),
                "num_single_layers": len(transformer.single_transformer_blocks)}


def _latent_ids(rows: int, columns: int) -> torch.Tensor:
    """Position ids (t=0, h, w, l=0) [1, rows * columns, 4] of the packed latent tokens, row by row, as
    Flux2Pipeline._prepare_latent_ids builds them (int64)."""
    import torch

    return torch.cartesian_prod(torch.arange(1), torch.arange(rows), torch.arange(columns),
                                torch.arange(1)).unsqueeze(0)


def _text_ids(tokens: int) -> torch.Tensor:
    """Position ids (0, 0, 0, l) [1, tokens, 4] of the text tokens, as Flux2Pipeline._prepare_text_ids builds them."""
    import torch

    return torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(tokens)).unsqueeze(0)


@lru_cache(maxsize=1)
def _pass_through_single_block() -> type:
    """The stand-in class for a skipped single-stream block (defined on first use: torch stays unimported)."""
    import torch

    from harness.models.stand_ins import StandIn

    class PassThroughSingleBlock(StandIn):
        """A skipped Flux2SingleTransformerBlock: the joint stream unchanged, in the block's return form."""

        def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                    *args: Any, split_hidden_states: bool = False, text_seq_len: int | None = None,
                    **kwargs: Any) -> Any:
            if encoder_hidden_states is not None:  # as the block: the text stream goes first
                text_seq_len = encoder_hidden_states.shape[1]
                hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
            if split_hidden_states:
                return hidden_states[:, :text_seq_len], hidden_states[:, text_seq_len:]
            return hidden_states

    return PassThroughSingleBlock

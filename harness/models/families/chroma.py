"""Chroma (ChromaPipeline, ChromaTransformer2DModel): FLUX.1-schnell pruned to 8.9 B parameters, 19 double-stream
then 38 single-stream blocks on 2x2-packed latent tokens with position ids, one T5 text encoder (no CLIP, no pooled
embedding), and true classifier-free guidance: with guidance_scale > 1 the pipeline runs the transformer twice per
step, on the prompt and on the negative prompt ("" when none is given), each on the batch itself (never a doubled
batch). The pipeline masks the T5 padding (all but the first padding token) in the encoder and in the transformer's
attention.

Modulation. FLUX's per-block AdaLN Linear layers are gone: one small network outside the blocks, the approximator
(`distilled_guidance_layer`), maps (timestep, a sinusoidal embedding of the modulation's index) to one vector per
modulation, once per forward, and the transformer's loop hands each block its slice (3 vectors for a single block,
6 + 6 for a double block, 2 for the final norm), chosen by the block's POSITION in its ModuleList. The blocks' norm
layers (ChromaAdaLayerNormZeroPruned, ChromaAdaLayerNormZeroSinglePruned) own no weights: the blocks have no
modulation of their own, so this family has no `w_norm1` / `w_norm1_context` / `w_norm` components. A double block's
components are `attn`, `ff` (with the parameter-free norm2) and `ff_context`; a single block's `attn` and
`proj_mlp_out` (proj_mlp zeroed, proj_out kept for the attention branch), as FLUX.1's; diffusers' FluxAttention,
FeedForward and Linear layers take the default stand-ins. A single block returns the joint stream alone (one tensor,
not FLUX's pair), so its whole-block stand-in returns hidden_states alone.

Blocks keep their positions when removed (`keeps_block_positions`). Each block's modulation is picked by its
position: offsets are 3 x (single blocks) and 6 x (double blocks), the final norm takes the last two rows, and the
rows' index embeddings are rebuilt from the block counts in the config (`time_text_embed.mod_proj`, a non-persistent
buffer). Deleting a block would shift the modulation of every block after it and of the final norm, which no weight
change can restore (one approximator serves all rows). So a removed block is replaced by a weightless pass-through
in its place, the config keeps the released counts, and a saved model records the removal; the pruned model is
exactly the model with that block skipped.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from harness.models.families.base import Family, draw_tensor, vae_scale_factor
from harness.models.spec import SamplingSettings

if TYPE_CHECKING:
    import torch

# ChromaPipeline.__call__ defaults (diffusers pipelines/chroma/pipeline_chroma.py): 35 steps, guidance 5.0, T5
# length 512, height = width = default_sample_size (128) x the VAE's scale (8) = 1024, negative prompt "" when none
_DEFAULT_SAMPLE_SIZE = 128  # ChromaPipeline.default_sample_size, in latent positions


class ChromaFamily(Family):
    name = "chroma"
    pipeline_class_name = "ChromaPipeline"
    transformer_class_name = "ChromaTransformer2DModel"
    default_sampling = SamplingSettings(num_inference_steps=35, guidance_scale=5.0, max_sequence_length=512,
                                        negative_prompt="")
    default_max_sequence_length = 512
    takes_negative_prompt = True
    keeps_block_positions = True  # modulation rows are picked by block position (module docstring)
    kind_components = {
        "chroma-double": ("attn", "ff", "ff_context"),  # no w_norm1 / w_norm1_context: the blocks own no modulation
        "chroma-single": ("attn", "proj_mlp_out"),  # no w_norm, for the same reason
    }

    # -- sampling --------------------------------------------------------------------------------------------------

    def native_size(self, transformer_config: dict[str, Any], vae_config: dict[str, Any]) -> int | None:
        return _DEFAULT_SAMPLE_SIZE * vae_scale_factor(vae_config)  # as ChromaPipeline.__call__ derives it

    def size_problem(self, transformer_config: dict[str, Any], vae_config: dict[str, Any], height: int,
                     width: int) -> str | None:
        step = vae_scale_factor(vae_config) * 2  # latents are packed in 2x2 patches
        if height % step or width % step:
            return f"height and width must be multiples of {step} (the VAE's scale x Chroma's 2x2 latent packing)"
        return None

    def doubles_batch(self, sampling: SamplingSettings) -> bool:
        return False  # CFG is a second forward on the negative prompt, never a doubled batch

    def forwards_per_step(self, sampling: SamplingSettings) -> int:
        # ChromaPipeline.do_classifier_free_guidance: guidance_scale > 1, with the negative prompt or "" when none
        return 2 if sampling.guidance_scale > 1 else 1

    def call_kwargs(self, settings: SamplingSettings, batch_size: int) -> dict[str, Any]:
        """ChromaPipeline's own guidance argument is `guidance_scale` (true CFG, no embedded guidance), so the
        base mapping holds: steps, guidance_scale, size, T5 length and the negative prompt per image."""
        return super().call_kwargs(settings, batch_size)

    def draw_noise(self, pipeline: Any, batch_size: int, settings: SamplingSettings,
                   generator: torch.Generator | list[torch.Generator], device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
        channels = pipeline.transformer.config.in_channels // 4  # 2x2 patches packed into channels
        latents, _image_ids = pipeline.prepare_latents(batch_size, channels, settings.height, settings.width, dtype,
                                                       device, generator)
        return latents

    def encode_prompts(self, pipeline: Any, prompts: list[str], max_sequence_length: int | None,
                       device: torch.device | str) -> tuple[torch.Tensor, None]:
        embeds, _mask = self._encode(pipeline, prompts, max_sequence_length, device)
        return embeds, None  # T5 only: no pooled embedding

    def _encode(self, pipeline: Any, prompts: list[str], max_sequence_length: int | None,
                device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(T5 embeddings [B, T, D], the pipeline's text attention mask [B, T]: 1 for the tokens and the first
        padding token, 0 for the rest)."""
        embeds, _text_ids, mask, *_negative = pipeline.encode_prompt(
            prompt=prompts, device=device, do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length or self.default_max_sequence_length)
        return embeds, mask

    def text_tokens(self, sampling: SamplingSettings, components: dict[str, Any]) -> int:
        """The T5 tokens: every prompt is padded to max_sequence_length."""
        return sampling.max_sequence_length or self.default_max_sequence_length

    # -- bare transformer forwards ---------------------------------------------------------------------------------

    def transformer_inputs(self, transformer: torch.nn.Module, batch_size: int, height: int, width: int,
                           text_tokens: int, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                           generator: torch.Generator | None = None) -> dict[str, Any]:
        """2x2-packed latent tokens [B, H/16 * W/16, C] with their position ids at t = 0.5 (the pipeline passes the
        scheduler's timestep / 1000), T5 embeddings, and the attention mask over text then image tokens, as the
        pipeline builds it (here every text token is attended: a prompt filling the T5 length)."""
        import torch

        from harness.models.families.flux import _image_ids

        dtype = dtype or torch.float32
        config, draw = transformer.config, draw_tensor(device, dtype, generator)
        rows, columns = height // 16, width // 16
        return {
            "hidden_states": draw(batch_size, rows * columns, config.in_channels),
            "encoder_hidden_states": draw(batch_size, text_tokens, config.joint_attention_dim),
            "timestep": torch.full((batch_size,), 0.5, device=device, dtype=dtype),
            "img_ids": _image_ids(rows, columns).to(device, dtype),
            "txt_ids": torch.zeros(text_tokens, 3, device=device, dtype=dtype),
            "attention_mask": torch.ones(batch_size, text_tokens + rows * columns, device=device, dtype=dtype),
            "return_dict": False,
        }

    # -- training (distillation) -----------------------------------------------------------------------------------

    def training_latents(self, pipeline: Any, images: Any) -> torch.Tensor:
        latents = super().training_latents(pipeline, images)  # the VAE's, shifted and scaled, [B, C, H, W]
        b, c, h, w = latents.shape
        return pipeline._pack_latents(latents, b, c, h, w)  # 2x2 latent patches per token

    def training_inputs(self, pipeline: Any, x_t: torch.Tensor, sigma: torch.Tensor, image_size: tuple[int, int],
                        prompts: list[str], sampling: SamplingSettings, device: torch.device,
                        dtype: torch.dtype) -> dict[str, Any]:
        import torch

        embeds, text_mask = self._encode(pipeline, prompts, sampling.max_sequence_length, device)
        height, width = image_size
        scale = pipeline.vae_scale_factor * 2  # 2x2 latent patches per token
        return {
            "hidden_states": x_t,
            "encoder_hidden_states": embeds.to(dtype),
            "timestep": sigma.to(dtype),  # the pipeline passes t / 1000 = sigma; the transformer scales by 1000
            "img_ids": pipeline._prepare_latent_image_ids(x_t.shape[0], height // scale, width // scale, device,
                                                          dtype),
            "txt_ids": torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype),
            # text mask, then the image tokens, as ChromaPipeline._prepare_attention_mask extends it
            "attention_mask": pipeline._prepare_attention_mask(x_t.shape[0], x_t.shape[1], dtype,
                                                               text_mask.to(device, dtype)),
            "return_dict": False,
        }

    # -- block structure -------------------------------------------------------------------------------------------

    def block_lists(self) -> list[tuple[str, type]]:
        from diffusers.models.transformers.transformer_chroma import (
            ChromaSingleTransformerBlock,
            ChromaTransformerBlock,
        )

        return [("transformer_blocks", ChromaTransformerBlock),
                ("single_transformer_blocks", ChromaSingleTransformerBlock)]

    def block_kind(self, block: torch.nn.Module) -> str:
        from diffusers.models.transformers.transformer_chroma import ChromaSingleTransformerBlock

        return "chroma-single" if isinstance(block, ChromaSingleTransformerBlock) else "chroma-double"

    def block_stand_in(self, block: torch.nn.Module) -> torch.nn.Module:
        """A double block returns (encoder_hidden_states, hidden_states), as FLUX's; a single block returns the
        joint stream alone."""
        from diffusers.models.transformers.transformer_chroma import ChromaSingleTransformerBlock

        if isinstance(block, ChromaSingleTransformerBlock):
            from harness.models.stand_ins import PassThroughStream

            return PassThroughStream()
        return super().block_stand_in(block)

    def config_after_removal(self, transformer: torch.nn.Module) -> dict[str, Any]:
        # never needed while blocks keep their positions (removal leaves the config as released); kept consistent
        return {"num_layers": len(transformer.transformer_blocks),
                "num_single_layers": len(transformer.single_transformer_blocks)}

    # -- step caching ----------------------------------------------------------------------------------------------

    def caches_block(self, block: torch.nn.Module) -> bool:
        """Only the single-stream blocks: First-Block Cache compares the first hooked block's output with the last
        one's in one return form, and a double block returns (text, image) where a single block returns the joint
        stream (FLUX.2's blocks differ the same way). The 19 double blocks always compute."""
        from diffusers.models.transformers.transformer_chroma import ChromaSingleTransformerBlock

        return isinstance(block, ChromaSingleTransformerBlock)

    def step_cache_blocks(self, transformer: torch.nn.Module) -> torch.nn.Module:
        """The blocks, as the base gives them, after telling diffusers' block registry (which First-Block Cache
        reads) where Chroma's blocks return their streams: diffusers registers FLUX's blocks, not Chroma's."""
        _register_block_metadata()
        return super().step_cache_blocks(transformer)


@lru_cache(maxsize=1)
def _register_block_metadata() -> None:
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.models.transformers.transformer_chroma import ChromaSingleTransformerBlock, ChromaTransformerBlock

    for block_class, metadata in (
        (ChromaTransformerBlock, TransformerBlockMetadata(return_hidden_states_index=1,
                                                          return_encoder_hidden_states_index=0)),
        (ChromaSingleTransformerBlock, TransformerBlockMetadata(return_hidden_states_index=0,
                                                                return_encoder_hidden_states_index=None)),
    ):
        try:
            TransformerBlockRegistry.get(block_class)
        except ValueError:  # not registered by this diffusers
            TransformerBlockRegistry.register(model_class=block_class, metadata=metadata)

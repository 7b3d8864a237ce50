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

from harness.models.families.base import vae_scale_factor
from harness.models.families.flux import PackedLatentFamily
from harness.models.spec import SamplingSettings

if TYPE_CHECKING:
    import torch

# ChromaPipeline.__call__ defaults (diffusers pipelines/chroma/pipeline_chroma.py): 35 steps, guidance 5.0, T5
# length 512, height = width = default_sample_size (128) x the VAE's scale (8) = 1024, negative prompt "" when none
_DEFAULT_SAMPLE_SIZE = 128  # ChromaPipeline.default_sample_size, in latent positions


class ChromaFamily(PackedLatentFamily):
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

    def forwards_per_step(self, sampling: SamplingSettings) -> int:
        # ChromaPipeline.do_classifier_free_guidance: guidance_scale > 1, with the negative prompt or "" when none
        return 2 if sampling.guidance_scale > 1 else 1

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
        """The packed inputs and the attention mask over text then image tokens, as the pipeline builds it (here
        every text token is attended: a prompt filling the T5 length)."""
        import torch

        dtype = dtype or torch.float32
        inputs = self.packed_inputs(transformer, batch_size, height, width, text_tokens, device, dtype, generator)
        inputs["attention_mask"] = torch.ones(batch_size, text_tokens + inputs["hidden_states"].shape[1],
                                              device=device, dtype=dtype)
        return inputs

    # -- training (distillation) -----------------------------------------------------------------------------------

    def training_inputs(self, pipeline: Any, x_t: torch.Tensor, sigma: torch.Tensor, image_size: tuple[int, int],
                        prompts: list[str], sampling: SamplingSettings, device: torch.device,
                        dtype: torch.dtype) -> dict[str, Any]:
        embeds, text_mask = self._encode(pipeline, prompts, sampling.max_sequence_length, device)
        inputs = self.packed_training_inputs(pipeline, x_t, sigma, embeds, image_size, device, dtype)
        # text mask, then the image tokens, as ChromaPipeline._prepare_attention_mask extends it
        inputs["attention_mask"] = pipeline._prepare_attention_mask(x_t.shape[0], x_t.shape[1], dtype,
                                                                    text_mask.to(device, dtype))
        return inputs

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

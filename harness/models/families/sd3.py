"""Stable Diffusion 3 and 3.5 (StableDiffusion3Pipeline, SD3Transformer2DModel): MMDiT joint blocks on unpacked
latents, three text encoders (two CLIP, T5), classifier-free guidance with a negative prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.models.families.base import Family, draw_tensor, vae_scale_factor
from harness.models.spec import SamplingSettings

if TYPE_CHECKING:
    import torch

_JOINT = ("w_norm1", "w_norm1_context", "attn", "ff", "ff_context")
_CLIP_TOKENS = 77  # CLIP's context length, when the components do not say


class SD3Family(Family):
    name = "sd3"
    pipeline_class_name = "StableDiffusion3Pipeline"
    transformer_class_name = "SD3Transformer2DModel"
    default_sampling = SamplingSettings(num_inference_steps=28, guidance_scale=7.0, max_sequence_length=256)
    default_max_sequence_length = 256
    takes_negative_prompt = True
    kind_components = {
        "joint": _JOINT,
        "joint-dual": _JOINT,  # SD3.5 Medium's blocks with a second, image-only attention (attn2)
        "joint-last": _JOINT[:-1],  # context_pre_only: the text stream ends here, so there is no ff_context
    }

    def native_size(self, transformer_config: dict[str, Any], vae_config: dict[str, Any]) -> int | None:
        if "sample_size" not in transformer_config:
            return None
        return int(transformer_config["sample_size"]) * vae_scale_factor(vae_config)

    def size_problem(self, transformer_config: dict[str, Any], vae_config: dict[str, Any], height: int,
                     width: int) -> str | None:
        step = vae_scale_factor(vae_config) * int(transformer_config.get("patch_size", 2))
        if height % step or width % step:
            return f"height and width must be multiples of {step} (the VAE's scale x the transformer's patch size)"
        table = transformer_config.get("pos_embed_max_size")
        if table is not None and max(height, width) // step > int(table):
            return (f"the transformer's positional table (pos_embed_max_size {table}) covers images up to "
                    f"{int(table) * step} px a side")
        return None

    def doubles_batch(self, sampling: SamplingSettings) -> bool:
        return sampling.guidance_scale > 1  # as StableDiffusion3Pipeline.do_classifier_free_guidance

    def draw_noise(self, pipeline: Any, batch_size: int, settings: SamplingSettings,
                   generator: torch.Generator | list[torch.Generator], device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
        return pipeline.prepare_latents(batch_size, pipeline.transformer.config.in_channels, settings.height,
                                        settings.width, dtype, device, generator)

    def encode_prompts(self, pipeline: Any, prompts: list[str], max_sequence_length: int | None,
                       device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, _, pooled, _ = pipeline.encode_prompt(
            prompt=prompts, prompt_2=prompts, prompt_3=prompts, device=device, do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length or self.default_max_sequence_length)
        return embeds, pooled

    def text_tokens(self, sampling: SamplingSettings, components: dict[str, Any]) -> int:
        """The CLIP tokens followed by the T5 tokens."""
        clip = components["text_encoder"].config.max_position_embeddings if "text_encoder" in components \
            else _CLIP_TOKENS
        return clip + (sampling.max_sequence_length or self.default_max_sequence_length)

    def transformer_inputs(self, transformer: torch.nn.Module, batch_size: int, height: int, width: int,
                           text_tokens: int, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                           generator: torch.Generator | None = None) -> dict[str, Any]:
        """Latents [B, C, H/8, W/8] at the mid timestep 500."""
        import torch

        dtype = dtype or torch.float32
        config, draw = transformer.config, draw_tensor(device, dtype, generator)
        return {
            "encoder_hidden_states": draw(batch_size, text_tokens, config.joint_attention_dim),
            "pooled_projections": draw(batch_size, config.pooled_projection_dim),
            "return_dict": False,
            "hidden_states": draw(batch_size, config.in_channels, height // 8, width // 8),
            "timestep": torch.full((batch_size,), 500.0, device=device, dtype=dtype),
        }

    def training_inputs(self, pipeline: Any, x_t: torch.Tensor, sigma: torch.Tensor, image_size: tuple[int, int],
                        prompts: list[str], sampling: SamplingSettings, device: torch.device,
                        dtype: torch.dtype) -> dict[str, Any]:
        embeds, pooled = self.encode_prompts(pipeline, prompts, sampling.max_sequence_length, device)
        return {"hidden_states": x_t, "encoder_hidden_states": embeds, "pooled_projections": pooled,
                "return_dict": False,
                "timestep": sigma * 1000}  # SD3's transformer takes the scheduler's timestep, sigma * 1000

    def block_lists(self) -> list[tuple[str, type]]:
        from diffusers.models.attention import JointTransformerBlock

        return [("transformer_blocks", JointTransformerBlock)]

    def block_kind(self, block: torch.nn.Module) -> str:
        if block.context_pre_only:
            return "joint-last"
        return "joint-dual" if block.attn2 is not None else "joint"

    def unremovable_reason(self, kind: str) -> str | None:
        # deleting it leaves a block whose weights no longer match a last block's shape (FACTS section 4)
        if kind == "joint-last":
            return "SD3's final context_pre_only block, which ends the text stream and cannot be removed"
        return None

    def caches_block(self, block: torch.nn.Module) -> bool:
        # the final context_pre_only block returns no text stream (None), which diffusers' block-cache hooks cannot
        # carry as a residual: it always computes
        return not block.context_pre_only

    def config_after_removal(self, transformer: torch.nn.Module) -> dict[str, Any]:
        config: dict[str, Any] = {"num_layers": len(transformer.transformer_blocks)}
        if getattr(transformer.config, "dual_attention_layers", None):  # SD3.5 Medium: where dual attention is now
            config["dual_attention_layers"] = tuple(
                position for position, block in enumerate(transformer.transformer_blocks)
                if getattr(block, "attn2", None) is not None
            )
        return config

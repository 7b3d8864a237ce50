"""FLUX.1 (FluxPipeline, FluxTransformer2DModel): double-stream then single-stream blocks on 2x2-packed latent
tokens with position ids, CLIP + T5 text encoders; guidance-distilled (guidance is an embedded input, never a second
batch), and no negative prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.models.families.base import Family, draw_tensor, vae_scale_factor
from harness.models.spec import SamplingSettings

if TYPE_CHECKING:
    import torch


class PackedLatentFamily(Family):
    """What FLUX.1 and the families derived from it (Chroma) share: latents packed in 2x2 patches per token, with
    (0, row, column) position ids for the image tokens and zeros for the text tokens, and a transformer that takes
    t in [0, 1] (it scales by 1000 itself)."""

    def size_problem(self, transformer_config: dict[str, Any], vae_config: dict[str, Any], height: int,
                     width: int) -> str | None:
        step = vae_scale_factor(vae_config) * 2  # latents are packed in 2x2 patches
        if height % step or width % step:
            return f"height and width must be multiples of {step} (the VAE's scale x the 2x2 latent packing)"
        return None

    def doubles_batch(self, sampling: SamplingSettings) -> bool:
        return False  # guidance is embedded (FLUX.1) or a second forward (Chroma), never a doubled batch

    def draw_noise(self, pipeline: Any, batch_size: int, settings: SamplingSettings,
                   generator: torch.Generator | list[torch.Generator], device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
        channels = pipeline.transformer.config.in_channels // 4  # 2x2 patches packed into channels
        latents, _image_ids = pipeline.prepare_latents(batch_size, channels, settings.height, settings.width, dtype,
                                                       device, generator)
        return latents

    def packed_inputs(self, transformer: torch.nn.Module, batch_size: int, height: int, width: int, text_tokens: int,
                      device: torch.device | str, dtype: torch.dtype,
                      generator: torch.Generator | None) -> dict[str, Any]:
        """The inputs every packed-latent transformer takes: latent tokens [B, H/16 * W/16, C] with their position
        ids at t = 0.5, text embeddings [B, T, joint_attention_dim] with zero ids."""
        import torch

        config, draw = transformer.config, draw_tensor(device, dtype, generator)
        rows, columns = height // 16, width // 16
        return {
            "hidden_states": draw(batch_size, rows * columns, config.in_channels),
            "encoder_hidden_states": draw(batch_size, text_tokens, config.joint_attention_dim),
            "timestep": torch.full((batch_size,), 0.5, device=device, dtype=dtype),
            "img_ids": _image_ids(rows, columns).to(device, dtype),
            "txt_ids": torch.zeros(text_tokens, 3, device=device, dtype=dtype),
            "return_dict": False,
        }

    def training_latents(self, pipeline: Any, images: Any) -> torch.Tensor:
        latents = super().training_latents(pipeline, images)  # the VAE's, shifted and scaled, [B, C, H, W]
        b, c, h, w = latents.shape
        return pipeline._pack_latents(latents, b, c, h, w)  # 2x2 latent patches per token

    def packed_training_inputs(self, pipeline: Any, x_t: torch.Tensor, sigma: torch.Tensor, embeds: torch.Tensor,
                               image_size: tuple[int, int], device: torch.device,
                               dtype: torch.dtype) -> dict[str, Any]:
        """The noisy latent tokens at sigma (the pipelines pass t / 1000 = sigma) with the pipeline's position ids,
        and the prompts' text embeddings."""
        import torch

        height, width = image_size
        scale = pipeline.vae_scale_factor * 2  # 2x2 latent patches per token
        return {
            "hidden_states": x_t, "encoder_hidden_states": embeds.to(dtype), "timestep": sigma.to(dtype),
            "img_ids": pipeline._prepare_latent_image_ids(x_t.shape[0], height // scale, width // scale, device,
                                                          dtype),
            "txt_ids": torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype),
            "return_dict": False,
        }


class FluxFamily(PackedLatentFamily):
    name = "flux"
    pipeline_class_name = "FluxPipeline"
    transformer_class_name = "FluxTransformer2DModel"
    default_sampling = SamplingSettings(num_inference_steps=28, guidance_scale=3.5, max_sequence_length=512,
                                        negative_prompt=None)
    default_max_sequence_length = 512
    takes_negative_prompt = False
    kind_components = {
        "flux-double": ("w_norm1", "w_norm1_context", "attn", "ff", "ff_context"),
        "flux-single": ("w_norm", "attn", "proj_mlp_out"),
    }

    def encode_prompts(self, pipeline: Any, prompts: list[str], max_sequence_length: int | None,
                       device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, pooled, _text_ids = pipeline.encode_prompt(
            prompt=prompts, prompt_2=prompts, device=device,
            max_sequence_length=max_sequence_length or self.default_max_sequence_length)
        return embeds, pooled

    def text_tokens(self, sampling: SamplingSettings, components: dict[str, Any]) -> int:
        """The T5 tokens (CLIP gives only the pooled embedding)."""
        return sampling.max_sequence_length or self.default_max_sequence_length

    def transformer_inputs(self, transformer: torch.nn.Module, batch_size: int, height: int, width: int,
                           text_tokens: int, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                           generator: torch.Generator | None = None) -> dict[str, Any]:
        """The packed inputs, the pooled CLIP embedding, and guidance when the model embeds it."""
        import torch

        dtype = dtype or torch.float32
        inputs = self.packed_inputs(transformer, batch_size, height, width, text_tokens, device, dtype, generator)
        inputs["pooled_projections"] = draw_tensor(device, dtype, generator)(batch_size,
                                                                             transformer.config.pooled_projection_dim)
        if transformer.config.guidance_embeds:
            inputs["guidance"] = torch.full((batch_size,), 3.5, device=device, dtype=dtype)
        return inputs

    def training_inputs(self, pipeline: Any, x_t: torch.Tensor, sigma: torch.Tensor, image_size: tuple[int, int],
                        prompts: list[str], sampling: SamplingSettings, device: torch.device,
                        dtype: torch.dtype) -> dict[str, Any]:
        import torch

        embeds, pooled = self.encode_prompts(pipeline, prompts, sampling.max_sequence_length, device)
        inputs = self.packed_training_inputs(pipeline, x_t, sigma, embeds, image_size, device, dtype)
        inputs["pooled_projections"] = pooled.to(dtype)
        if pipeline.transformer.config.guidance_embeds:
            inputs["guidance"] = torch.full((x_t.shape[0],), sampling.guidance_scale, device=device,
                                            dtype=torch.float32)
        return inputs

    def block_lists(self) -> list[tuple[str, type]]:
        from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

        return [("transformer_blocks", FluxTransformerBlock), ("single_transformer_blocks", FluxSingleTransformerBlock)]

    def block_kind(self, block: torch.nn.Module) -> str:
        from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock

        return "flux-single" if isinstance(block, FluxSingleTransformerBlock) else "flux-double"

    def config_after_removal(self, transformer: torch.nn.Module) -> dict[str, Any]:
        return {"num_layers": len(transformer.transformer_blocks),
                "num_single_layers": len(transformer.single_transformer_blocks)}


def _image_ids(rows: int, columns: int) -> torch.Tensor:
    """Position ids (0, row, column) of the packed latent tokens, row by row, as FluxPipeline builds them."""
    import torch

    grid_rows, grid_columns = torch.meshgrid(torch.arange(rows), torch.arange(columns), indexing="ij")
    return torch.stack([torch.zeros_like(grid_rows), grid_rows, grid_columns], dim=-1).reshape(rows * columns, 3)

"""Qwen-Image (QwenImagePipeline, QwenImageTransformer2DModel): 60 dual-stream MMDiT blocks of hidden 3072 on
2x2-packed latent tokens (16-channel latents of AutoencoderKLQwenImage, 8x spatial compression) with 3D RoPE over
(frame, row, column); one text encoder, Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration, Qwen2 tokenizer), whose
last hidden state is the text stream after the pipeline drops its prompt template's 34-token system prefix. Text
tokens are as many as the longest prompt of a batch has (zero-padded and masked, never padded to a fixed length),
at most `max_sequence_length`. True classifier-free guidance: with `true_cfg_scale` > 1 and a negative prompt the
pipeline runs the transformer twice per step (conditional, then unconditional, each in its own cache context) and
rescales the combination to the conditional prediction's norm; nothing doubles the batch, and there is no pooled
embedding.

A block (QwenImageTransformerBlock) computes its own modulation from the timestep embedding: `img_mod` and
`txt_mod` (SiLU + Linear to 6 x hidden) give, per stream, shift, scale and gate of the attention sub-layer and then
of the MLP sub-layer; the LayerNorms (`img_norm1`, `img_norm2`, `txt_norm1`, `txt_norm2`) have no parameters. The
sub-components are `w_norm1` = `img_mod`, `w_norm1_context` = `txt_mod` (a skip gives shift 0, scale 0, gate 1 for
both sub-layers), `attn` (the joint attention of both streams; a skip returns its normalised, modulated inputs),
`ff` = `img_mlp` and `ff_context` = `txt_mlp` (a skip returns its input). Every block is prunable: all 60 are the
same dual-stream block and each returns both streams (no final text-ending block, as SD3's context_pre_only one;
`norm_out` / `proj_out` after the blocks read the image stream only), so deleting any of them leaves a transformer
whose config differs only in `num_layers`. The last block's `ff_context` (and the MLP half of its `txt_mod`) is
dead computation: the text stream it updates is discarded after the blocks, so ablating it changes nothing and it
ranks as free to remove.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.models.families.base import Family, draw_tensor
from harness.models.spec import SamplingSettings

if TYPE_CHECKING:
    import torch

_DUAL = ("w_norm1", "w_norm1_context", "attn", "ff", "ff_context")
_PACKING = 2  # the pipeline packs 2x2 latent patches into one token (QwenImagePipeline._pack_latents)
_MAX_TEXT_TOKENS = 1024  # QwenImagePipeline.check_inputs refuses a longer max_sequence_length
_ROPE_POSITIONS = 4096  # QwenEmbedRope's table: image rows/columns (centred, halved) then text positions


def vae_scale_factor(vae_config: dict[str, Any]) -> int:
    """Pixels per latent position of AutoencoderKLQwenImage: 2 per (spatial) downsampling, as the pipeline's
    `vae_scale_factor = 2 ** len(vae.temperal_downsample)`."""
    return 2 ** len(vae_config.get("temperal_downsample", (False, True, True)))


class QwenImageFamily(Family):
    name = "qwenimage"
    pipeline_class_name = "QwenImagePipeline"
    transformer_class_name = "QwenImageTransformer2DModel"
    # the model card's (https://huggingface.co/Qwen/Qwen-Image): 50 steps, true_cfg_scale 4, negative prompt " ",
    # 1328x1328 for 1:1; max_sequence_length is QwenImagePipeline.__call__'s default
    default_sampling = SamplingSettings(num_inference_steps=50, guidance_scale=4.0, height=1328, width=1328,
                                        max_sequence_length=512, negative_prompt=" ")
    default_max_sequence_length = 512  # QwenImagePipeline.__call__'s default
    takes_negative_prompt = True
    kind_components = {"qwen-dual": _DUAL}
    component_attributes = {
        "w_norm1": ("img_mod",),
        "w_norm1_context": ("txt_mod",),
        "attn": ("attn",),
        "ff": ("img_mlp",),
        "ff_context": ("txt_mlp",),
    }

    # -- sampling --------------------------------------------------------------------------------------------------

    def native_size(self, transformer_config: dict[str, Any], vae_config: dict[str, Any]) -> int | None:
        """None: no config carries a sample size (QwenImagePipeline draws default_sample_size 128 latents, 1024 px,
        whatever the model), so `default_sampling`'s model-card size holds."""
        return None

    def size_problem(self, transformer_config: dict[str, Any], vae_config: dict[str, Any], height: int,
                     width: int) -> str | None:
        step = vae_scale_factor(vae_config) * _PACKING
        if height % step or width % step:
            return f"height and width must be multiples of {step} (the VAE's scale x the 2x2 latent packing)"
        # the text's RoPE positions start after the largest (halved, centred) image index
        if max(height, width) // step // 2 + _MAX_TEXT_TOKENS > _ROPE_POSITIONS:
            side = (_ROPE_POSITIONS - _MAX_TEXT_TOKENS) * 2 * step
            return f"the transformer's RoPE table ({_ROPE_POSITIONS} positions) covers images up to {side} px a side"
        return None

    def doubles_batch(self, sampling: SamplingSettings) -> bool:
        return False  # true CFG is a second forward, never a doubled batch

    def forwards_per_step(self, sampling: SamplingSettings) -> int:
        return 2 if self._true_cfg(sampling) else 1

    @staticmethod
    def _true_cfg(sampling: SamplingSettings) -> bool:
        # as QwenImagePipeline.__call__'s do_true_cfg: true_cfg_scale > 1 and a negative prompt (even " " or "")
        return sampling.guidance_scale > 1 and sampling.negative_prompt is not None

    def call_kwargs(self, settings: SamplingSettings, batch_size: int) -> dict[str, Any]:
        """The harness's guidance scale is the pipeline's `true_cfg_scale` (its `guidance_scale` is for
        guidance-distilled transformers, which Qwen-Image's is not); the negative prompt goes only where guidance
        is on, and true_cfg_scale is 1 where it is off, so the pipeline warns about neither."""
        kwargs: dict[str, Any] = {
            "num_inference_steps": settings.num_inference_steps,
            "true_cfg_scale": settings.guidance_scale if self._true_cfg(settings) else 1.0,
            "height": settings.height,
            "width": settings.width,
            "max_sequence_length": settings.max_sequence_length or self.default_max_sequence_length,
        }
        if self._true_cfg(settings):
            kwargs["negative_prompt"] = [settings.negative_prompt] * batch_size
        return kwargs

    def draw_noise(self, pipeline: Any, batch_size: int, settings: SamplingSettings,
                   generator: torch.Generator | list[torch.Generator], device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
        """Packed latents [B, H/16 * W/16, 64], drawn as [B, 1, 16, H/8, W/8] (one frame) by the pipeline's own
        `prepare_latents`."""
        channels = pipeline.transformer.config.in_channels // (_PACKING * _PACKING)
        return pipeline.prepare_latents(batch_size, channels, settings.height, settings.width, dtype, device,
                                        generator)

    def encode_prompts(self, pipeline: Any, prompts: list[str], max_sequence_length: int | None,
                       device: torch.device | str) -> tuple[torch.Tensor, None]:
        """The last hidden state of Qwen2.5-VL after the template's prefix, zero-padded to the batch's longest
        prompt (at most `max_sequence_length` tokens); Qwen-Image has no pooled embedding."""
        embeds, _mask = pipeline.encode_prompt(
            prompt=prompts, device=device, max_sequence_length=max_sequence_length or self.default_max_sequence_length)
        return embeds, None

    def text_tokens(self, sampling: SamplingSettings, components: dict[str, Any]) -> int:
        """An upper bound: the pipeline feeds as many tokens as the batch's longest prompt has (prompt plus the
        template's 5 closing tokens), cut at max_sequence_length; this counts a prompt that fills it."""
        return min(sampling.max_sequence_length or self.default_max_sequence_length, _MAX_TEXT_TOKENS)

    # -- bare transformer forwards (latency, memory, FLOPs) --------------------------------------------------------

    def transformer_inputs(self, transformer: torch.nn.Module, batch_size: int, height: int, width: int,
                           text_tokens: int, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                           generator: torch.Generator | None = None) -> dict[str, Any]:
        """Packed latent tokens [B, H/16 * W/16, C] with their image shape for RoPE, every text token valid (the
        pipeline passes no mask then), at t = 0.5 (the transformer takes t in [0, 1] and scales it by 1000)."""
        import torch

        dtype = dtype or torch.float32
        config, draw = transformer.config, draw_tensor(device, dtype, generator)
        step = 8 * _PACKING  # the released VAE's scale x the packing, as FLUX's and SD3's inputs assume 8
        rows, columns = height // step, width // step
        return {
            "hidden_states": draw(batch_size, rows * columns, config.in_channels),
            "encoder_hidden_states": draw(batch_size, text_tokens, config.joint_attention_dim),
            "encoder_hidden_states_mask": None,
            "timestep": torch.full((batch_size,), 0.5, device=device, dtype=dtype),
            "img_shapes": [[(1, rows, columns)]] * batch_size,
            "return_dict": False,
        }

    # -- training (distillation) -----------------------------------------------------------------------------------

    def encode_images(self, pipeline: Any, images: Any, sample: bool = True) -> torch.Tensor:
        """uint8 images [B, H, W, 3] as clean latents [B, 16, H/8, W/8] in the transformer's normalisation: the
        VAE's posterior (a sample, or its mode) of each image as a one-frame video, minus the VAE's per-channel
        latents_mean, over its latents_std (the inverse of what the pipeline does before decoding)."""
        import torch

        from harness.models.vae import to_model_range

        vae = pipeline.vae
        with torch.no_grad():
            x = to_model_range(images, vae.device).to(vae.dtype).unsqueeze(2)  # [B, 3, 1, H, W]
            posterior = vae.encode(x).latent_dist
            latents = (posterior.sample() if sample else posterior.mode())[:, :, 0]
        mean = torch.tensor(vae.config.latents_mean, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
        return (latents - mean) / std

    def training_latents(self, pipeline: Any, images: Any) -> torch.Tensor:
        """Packed clean latents [B, H/16 * W/16, 64] of uint8 images [B, H, W, 3]."""
        latents = self.encode_images(pipeline, images)
        b, c, h, w = latents.shape
        return pipeline._pack_latents(latents, b, c, h, w)

    def training_inputs(self, pipeline: Any, x_t: torch.Tensor, sigma: torch.Tensor, image_size: tuple[int, int],
                        prompts: list[str], sampling: SamplingSettings, device: torch.device,
                        dtype: torch.dtype) -> dict[str, Any]:
        embeds, mask = pipeline.encode_prompt(
            prompt=prompts, device=device,
            max_sequence_length=sampling.max_sequence_length or self.default_max_sequence_length)
        height, width = image_size
        step = pipeline.vae_scale_factor * _PACKING
        return {
            "hidden_states": x_t,
            "encoder_hidden_states": embeds.to(dtype),
            "encoder_hidden_states_mask": mask,  # None when no prompt is padded, as the pipeline passes it
            "timestep": sigma.to(dtype),  # the pipeline passes t / 1000 = sigma; the transformer scales by 1000
            "img_shapes": [[(1, height // step, width // step)]] * x_t.shape[0],
            "return_dict": False,
        }

    # -- block structure (topology, surgery) -----------------------------------------------------------------------

    def block_lists(self) -> list[tuple[str, type]]:
        from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformerBlock

        return [("transformer_blocks", QwenImageTransformerBlock)]

    def block_kind(self, block: torch.nn.Module) -> str:
        return "qwen-dual"

    def stand_in(self, component: str, module: torch.nn.Module) -> torch.nn.Module | None:
        """`img_mod` / `txt_mod` (SiLU + Linear, no diffusers AdaLN class) become constant modulation parameters:
        shift 0, scale 0, gate 1 for the attention and the MLP sub-layer."""
        if component in ("w_norm1", "w_norm1_context"):
            from harness.models.stand_ins import ConstantModulation

            # nn.Sequential(SiLU, Linear(hidden, 6 * hidden)), the Linear maybe quantised; (shift, scale, gate) of
            # the attention, then of the MLP
            return ConstantModulation(module[-1].out_features, (0.0, 0.0, 1.0, 0.0, 0.0, 1.0))
        return None

    def stand_in_tokenizers(self, spec: Any) -> dict[str, Any]:
        """The Qwen tokenizer stand-in with the released vocabulary and special-token ids."""
        from harness.models.tiny.qwenimage import stand_in_qwen2_tokenizer

        return {"tokenizer": stand_in_qwen2_tokenizer()}

    def config_after_removal(self, transformer: torch.nn.Module) -> dict[str, Any]:
        return {"num_layers": len(transformer.transformer_blocks)}

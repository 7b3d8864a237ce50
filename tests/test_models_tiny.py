"""The tiny offline pipelines and the model presets (what every family's tiny pipeline must do is in
test_families.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

from harness.models.families import family_of
from harness.models.presets import PRESETS
from harness.registry import DEFAULT_MODEL

TINY = ["tiny-sd3", "tiny-sd3.5-medium", "tiny-flux"]


@pytest.fixture(scope="module", params=TINY)
def tiny(request):
    pipe = PRESETS[request.param].build()
    return request.param, pipe


def test_transformer_matches_its_spec(tiny):
    name, pipe = tiny
    spec = PRESETS[name]
    config = pipe.transformer.config
    for key, value in spec.transformer_config.items():
        assert config[key] == value, key
    assert sum(p.numel() for p in pipe.transformer.parameters()) < 1_000_000
    # 64x64 images must fit the VAE x patch grid.
    grid = pipe.vae_scale_factor * (2 if spec.family == "flux" else pipe.patch_size)
    assert pipe.vae_scale_factor == 8 and 64 % grid == 0


def test_architecture_mirrors_the_real_model(tiny):
    name, pipe = tiny
    transformer = pipe.transformer
    if name == "tiny-flux":
        assert isinstance(transformer, FluxTransformer2DModel)
        assert len(transformer.transformer_blocks) == 2 and len(transformer.single_transformer_blocks) == 2
        assert transformer.config.guidance_embeds
        return
    assert isinstance(transformer, SD3Transformer2DModel)
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None
    blocks = transformer.transformer_blocks
    assert [b.context_pre_only for b in blocks] == [False, False, False, True]
    dual = [b.attn2 is not None for b in blocks]
    assert dual == ([True, True, False, False] if name == "tiny-sd3.5-medium" else [False] * 4)
    clip_widths = pipe.text_encoder.config.projection_dim + pipe.text_encoder_2.config.projection_dim
    assert transformer.config.pooled_projection_dim == clip_widths
    assert transformer.config.joint_attention_dim >= pipe.text_encoder.config.hidden_size + (
        pipe.text_encoder_2.config.hidden_size
    )  # CLIP features are zero-padded up to the T5 width, never truncated


def test_clip_tokenizer_gives_words_and_covers_any_text():
    pipe = PRESETS["tiny-sd3"].build()
    tokenizer = pipe.tokenizer
    words = ["a</w>", "red</w>", "cu", "be</w>", "and</w>", "two</w>", "cats</w>"]
    assert tokenizer.tokenize("a red cube and two cats") == words
    ids = tokenizer("Ünïcödé 🐱 at sunset, 4k!").input_ids
    assert tokenizer.unk_token_id not in ids[1:-1]  # byte-level: every character has tokens
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.model_max_length == 77


def test_t5_tokenizer_gives_words():
    pipe = PRESETS["tiny-flux"].build()
    tokenizer = pipe.tokenizer_2
    assert tokenizer.tokenize("a red sunset") == ["▁a", "▁red", "▁sunset"]
    ids = tokenizer("two cats", padding="max_length", max_length=8).input_ids
    assert ids[2] == tokenizer.eos_token_id and ids[3:] == [tokenizer.pad_token_id] * 5
    assert pipe.text_encoder_2.config.d_model == pipe.transformer.config.joint_attention_dim


# Presets -------------------------------------------------------------------------------------------------------

# Parameter counts of the released transformers, counted on the meta device (FACTS section 1).
RELEASED_PARAMETERS = {
    "sd3.5-large": 8.0566e9,
    "sd3.5-large-turbo": 8.0566e9,
    "sd3.5-medium": 2.2432e9,
    "flux.1-schnell": 11.8912e9,
    # issue 20's meta-device counts of each transformer class's default config (the released architectures)
    "qwen-image": 20.43e9,
    "flux.2-dev": 32.22e9,
    "z-image-turbo": 6.16e9,
    "chroma1-hd": 8.90e9,
}


@pytest.mark.parametrize("name", sorted(RELEASED_PARAMETERS))
def test_real_preset_configs_give_the_released_parameter_counts(name):
    spec = PRESETS[name]
    with torch.device("meta"):
        transformer = family_of(spec.family).transformer_class()(**spec.transformer_config)
    count = sum(p.numel() for p in transformer.parameters())
    assert count == pytest.approx(RELEASED_PARAMETERS[name], rel=1e-3)


def test_flux_dev_differs_from_schnell_only_by_the_guidance_embedder():
    dev, schnell = PRESETS["flux.1-dev"].transformer_config, PRESETS["flux.1-schnell"].transformer_config
    assert dev["guidance_embeds"] and not schnell["guidance_embeds"]
    assert {k: v for k, v in dev.items() if k != "guidance_embeds"} == {
        k: v for k, v in schnell.items() if k != "guidance_embeds"
    }


@pytest.mark.parametrize(
    ("name", "steps", "guidance", "max_sequence_length", "negative_prompt", "repo_id"),
    [
        ("sd3.5-large", 28, 3.5, 512, "", "stabilityai/stable-diffusion-3.5-large"),
        ("sd3.5-large-turbo", 4, 0.0, 512, "", "stabilityai/stable-diffusion-3.5-large-turbo"),
        ("sd3.5-medium", 28, 7.0, 256, "", "stabilityai/stable-diffusion-3.5-medium"),
        ("flux.1-dev", 50, 3.5, 512, None, "black-forest-labs/FLUX.1-dev"),
        ("flux.1-schnell", 4, 0.0, 256, None, "black-forest-labs/FLUX.1-schnell"),
    ],
)
def test_real_presets_carry_the_official_sampling(name, steps, guidance, max_sequence_length, negative_prompt, repo_id):
    spec = PRESETS[name]
    assert spec.repo_id == repo_id and spec.build is None and spec.dtype == "bfloat16"
    assert spec.sampling.num_inference_steps == steps and spec.sampling.guidance_scale == guidance
    assert spec.sampling.max_sequence_length == max_sequence_length
    assert spec.sampling.negative_prompt == negative_prompt
    assert (spec.sampling.height, spec.sampling.width) == (1024, 1024)


def test_tiny_presets_and_default():
    assert DEFAULT_MODEL == "reference" and PRESETS[DEFAULT_MODEL].repo_id is not None  # shipped trained weights
    for name in TINY:
        spec = PRESETS[name]
        assert spec.build is not None and spec.repo_id is None and spec.dtype == "float32"
        assert (spec.sampling.height, spec.sampling.width, spec.sampling.num_inference_steps) == (64, 64, 4)
    assert PRESETS["tiny-sd3"].sampling.guidance_scale > 1.0  # CFG on: both batch halves are exercised
    assert PRESETS["tiny-flux"].sampling.negative_prompt is None


def test_importing_presets_does_not_import_torch():
    code = "import sys, harness.models.presets; sys.exit('torch' in sys.modules or 'diffusers' in sys.modules)"
    repo_root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=repo_root, check=False).returncode == 0

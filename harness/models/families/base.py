"""`Family`: everything that differs between pipeline families (SD3, FLUX.1, ...), and the registry of families.

A family is one subclass of `Family` in its own module of this package with one instance registered in the package's
`__init__.py`. Code outside this package never compares family names or diffusers classes: it asks the family object
(`family_of(spec.family)`, `LoadedModel.family`, `family_of_transformer(transformer)`). torch and diffusers are
imported inside the hooks, so importing the package stays light (`harness --help` must not import torch).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.errors import unknown_name_error

if TYPE_CHECKING:
    import torch

    from harness.models.spec import SamplingSettings

# The sub-component vocabulary of HierarchicalPrune (what rankings and `--set ...blocks` name) -> the block attributes
# each covers. Attributes that are None or absent in a block are skipped (`attn2` outside dual-attention blocks).
COMPONENT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "w_norm1": ("norm1",),
    "w_norm1_context": ("norm1_context",),
    "attn": ("attn", "attn2"),
    "ff": ("ff", "norm2"),
    "ff_context": ("ff_context", "norm2_context"),
    "w_norm": ("norm",),
    "proj_mlp_out": ("proj_mlp", "proj_out"),
}


class Family(abc.ABC):
    """What the harness needs to know about one family of diffusers pipelines.

    Class attributes name the family and its diffusers classes; methods are the hooks where the families differ.
    Tensor shapes below use B for the batch size.
    """

    name: str  # as written in ModelSpec.family, provenance files and results
    pipeline_class_name: str  # the diffusers pipeline class, as model_index.json's "_class_name" names it
    transformer_class_name: str  # the diffusers transformer class of the pipeline
    default_sampling: SamplingSettings  # for a folder or repo id that is not a registered preset
    default_max_sequence_length: int  # text (T5) tokens the pipeline encodes when sampling leaves it None
    takes_negative_prompt: bool  # whether the pipeline call gets SamplingSettings.negative_prompt
    # block kind (as `block_kind` returns it) -> the names of its sub-components, in the order rankings list them
    kind_components: dict[str, tuple[str, ...]]
    # sub-component name -> block attributes; override where the family's blocks name their submodules differently
    component_attributes: dict[str, tuple[str, ...]] = COMPONENT_ATTRIBUTES
    # True where the transformer gives each block something by its position in its list (Chroma's modulation rows):
    # a removed block is then replaced by its weightless stand-in (`block_stand_in`) instead of deleted, the config
    # is left as it is, and a saved model records the removal (`harness.models.saving`)
    keeps_block_positions: bool = False
    # TaylorSeer's patterns of the attention modules it caches, under `step_cache_blocks`' list names; None:
    # diffusers' defaults, which find `attn` modules under `transformer_blocks` and `single_transformer_blocks`
    taylorseer_identifiers: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    # -- classes ---------------------------------------------------------------------------------------------------

    def pipeline_class(self) -> type:
        """The diffusers pipeline class (imports diffusers)."""
        import diffusers

        return getattr(diffusers, self.pipeline_class_name)

    def transformer_class(self) -> type:
        """The diffusers transformer class (imports diffusers)."""
        import diffusers

        return getattr(diffusers, self.transformer_class_name)

    # -- sampling --------------------------------------------------------------------------------------------------

    def native_size(self, transformer_config: dict[str, Any], vae_config: dict[str, Any]) -> int | None:
        """The image side the pipeline draws by default for these component configs (as diffusers' pipeline
        derives it), or None when the configs do not say (then `default_sampling`'s size holds)."""
        return None

    def size_problem(self, transformer_config: dict[str, Any], vae_config: dict[str, Any], height: int,
                     width: int) -> str | None:
        """Why a transformer of this config cannot draw height x width images, or None when it can."""
        return None

    def check_size(self, pipeline: Any, sampling: SamplingSettings) -> None:
        """A UsageError naming `--set sampling.height/width` when the loaded pipeline cannot draw the sampling's
        size: before any image is generated, instead of the pipeline's own error mid-run."""
        from harness.errors import UsageError

        problem = self.size_problem(dict(pipeline.transformer.config), dict(pipeline.vae.config), sampling.height,
                                    sampling.width)
        if problem is not None:
            native = self.native_size(dict(pipeline.transformer.config), dict(pipeline.vae.config))
            hint = f" (this model's own size is {native}x{native})" if native else ""
            raise UsageError(f"{sampling.height}x{sampling.width} images: {problem}. Pass --set sampling.height=H "
                             f"--set sampling.width=W with a size it can draw{hint}")

    @abc.abstractmethod
    def doubles_batch(self, sampling: SamplingSettings) -> bool:
        """Whether the pipeline runs each transformer forward on twice the batch (classifier-free guidance)."""

    def forward_batch_size(self, sampling: SamplingSettings, batch_size: int) -> int:
        """The transformer's batch in one forward of a pipeline call on `batch_size` images."""
        return batch_size * (2 if self.doubles_batch(sampling) else 1)

    def forwards_per_step(self, sampling: SamplingSettings) -> int:
        """How many transformer forwards one denoising step makes: 2 where the pipeline runs classifier-free
        guidance as a conditional and an unconditional forward (Qwen-Image, Chroma), else 1."""
        return 1

    def call_kwargs(self, settings: SamplingSettings, batch_size: int) -> dict[str, Any]:
        """Keyword arguments of a pipeline call on `batch_size` prompts (besides prompt, latents or generator and
        output_type)."""
        kwargs: dict[str, Any] = {
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "height": settings.height,
            "width": settings.width,
        }
        if settings.max_sequence_length is not None:
            kwargs["max_sequence_length"] = settings.max_sequence_length
        if self.takes_negative_prompt and settings.negative_prompt is not None:
            kwargs["negative_prompt"] = [settings.negative_prompt] * batch_size
        return kwargs

    @abc.abstractmethod
    def draw_noise(self, pipeline: Any, batch_size: int, settings: SamplingSettings,
                   generator: torch.Generator | list[torch.Generator], device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
        """The initial latents exactly as the pipeline itself would draw them from `generator` (same draws, same
        order), in the form its call takes as `latents=`. Drawing them here lets the harness control and replay
        the generator's state."""

    @abc.abstractmethod
    def encode_prompts(self, pipeline: Any, prompts: list[str], max_sequence_length: int | None,
                       device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(token embeddings [B, tokens, width], pooled embedding [B, width] or None where the family has none) of
        the prompts as the pipeline feeds its transformer, without classifier-free guidance; None length:
        `default_max_sequence_length`."""

    @abc.abstractmethod
    def text_tokens(self, sampling: SamplingSettings, components: dict[str, Any]) -> int:
        """How many text tokens the transformer sees under `sampling`, given the pipeline's components (name ->
        module; meta-device ones do)."""

    def stand_in_tokenizers(self, spec: Any) -> dict[str, Any]:
        """Offline stand-ins for the released tokenizers of a preset (pipeline component name -> tokenizer), with
        the released vocabulary sizes, for pipelines built from configs without a download (`--weights random`,
        pre-flight). Default: by each text encoder's class in `spec.component_configs`, T5's unigram stand-in or
        CLIP's full BPE."""
        from harness.models.tiny import CLIP_ALL_MERGES, clip_tokenizer, t5_tokenizer

        tokenizers: dict[str, Any] = {}
        for name, (path, config) in spec.component_configs.items():
            if name.startswith("text_encoder"):
                tokenizer = "tokenizer" + name.removeprefix("text_encoder")
                if "T5" in path:
                    tokenizers[tokenizer] = t5_tokenizer(max_length=spec.sampling.max_sequence_length or 512)
                else:
                    tokenizers[tokenizer] = clip_tokenizer(config["max_position_embeddings"], CLIP_ALL_MERGES)
        return tokenizers

    # -- bare transformer forwards (latency, memory, FLOPs) --------------------------------------------------------

    @abc.abstractmethod
    def transformer_inputs(self, transformer: torch.nn.Module, batch_size: int, height: int, width: int,
                           text_tokens: int, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                           generator: torch.Generator | None = None) -> dict[str, Any]:
        """Random keyword arguments for one forward of `transformer` at an image size (pixels), shaped as the
        pipeline passes them, with `return_dict=False`, in `dtype` (None: float32). Random tensors come from
        `draw_tensor` (nothing is drawn on the meta device)."""

    # -- training (distillation) -----------------------------------------------------------------------------------

    def training_latents(self, pipeline: Any, images: Any) -> torch.Tensor:
        """The clean latents of uint8 images [B, H, W, 3] (numpy) in the form the transformer takes as
        hidden_states; noise is added in that form. Default: the VAE's posterior sample, shifted and scaled by its
        config (`harness.models.vae.encode_images`), unpacked [B, C, H, W]."""
        from harness.models.vae import encode_images

        return encode_images(pipeline, images)

    @abc.abstractmethod
    def training_inputs(self, pipeline: Any, x_t: torch.Tensor, sigma: torch.Tensor, image_size: tuple[int, int],
                        prompts: list[str], sampling: SamplingSettings, device: torch.device,
                        dtype: torch.dtype) -> dict[str, Any]:
        """Keyword arguments of one forward of `pipeline.transformer` on noisy latents x_t (as `training_latents`
        shapes them) at flow-matching noise level `sigma` [B] in [0, 1], for images of `image_size` (height,
        width) captioned `prompts`, with `return_dict=False`; the transformer's output is the velocity."""

    def velocity(self, output: Any) -> torch.Tensor:
        """The flow-matching velocity (noise - clean latents), shaped as `training_latents`, from the transformer's
        output with `return_dict=False`. Default: its first element, as SD3's and FLUX's transformers return it."""
        return output[0]

    # -- block structure (topology, surgery) -----------------------------------------------------------------------

    @abc.abstractmethod
    def block_lists(self) -> list[tuple[str, type]]:
        """(ModuleList attribute of the transformer, block class it holds), in execution order."""

    @abc.abstractmethod
    def block_kind(self, block: torch.nn.Module) -> str:
        """The kind of one block (a key of `kind_components`)."""

    def unremovable_reason(self, kind: str) -> str | None:
        """Why blocks of `kind` cannot be deleted (completing "block N is ..."), or None when they can."""
        return None

    def block_stand_in(self, block: torch.nn.Module) -> torch.nn.Module:
        """What replaces a whole skipped block: a `harness.models.stand_ins.StandIn` that returns the block's
        streams unchanged, in the form the transformer's loop expects of that block. Default: (encoder_hidden_states,
        hidden_states), as diffusers' SD3 and FLUX.1 blocks return them."""
        from harness.models.stand_ins import PassThroughBlock

        return PassThroughBlock(bool(getattr(block, "context_pre_only", False)))

    def stand_in(self, component: str, module: torch.nn.Module) -> torch.nn.Module | None:
        """What replaces `module`, one of the modules of sub-component `component`, when it is skipped or removed:
        a `harness.models.stand_ins.StandIn`; None where the default stand-in (`default_stand_in`: diffusers' AdaLN
        and attention layers, Linear layers, else a feed-forward's identity) is right."""
        return None

    @abc.abstractmethod
    def config_after_removal(self, transformer: torch.nn.Module) -> dict[str, Any]:
        """The config entries to register after blocks were deleted from the block lists, so the transformer
        round-trips through save_pretrained / from_pretrained."""

    # -- step caching (compressors/caching.py) ---------------------------------------------------------------------

    def step_cache_blocks(self, transformer: torch.nn.Module) -> torch.nn.Module:
        """A module holding, under the transformer's block-list names, the blocks a step cache may hook (the same
        module objects), for diffusers' `apply_*` cache functions, which find blocks by those names. Default: every
        block that `caches_block` accepts."""
        import torch

        holder = torch.nn.Module()
        for list_name, _ in self.block_lists():
            holder.add_module(list_name, torch.nn.ModuleList(
                block for block in getattr(transformer, list_name) if self.caches_block(block)))
        return holder

    def caches_block(self, block: torch.nn.Module) -> bool:
        """Whether a step cache may hook this block (else it always computes)."""
        return True


def vae_scale_factor(vae_config: dict[str, Any]) -> int:
    """Pixels per latent position: 2 per downsampling block of the VAE (diffusers' `vae_scale_factor`)."""
    return 2 ** (len(vae_config.get("block_out_channels", (0, 0, 0, 0))) - 1)


def draw_tensor(device: torch.device | str, dtype: torch.dtype,
                generator: torch.Generator | None) -> Callable[..., torch.Tensor]:
    """A function drawing standard-normal tensors of a shape from `generator` (on the CPU, in float32, so the
    values do not depend on the device) moved to `device` and `dtype`; empty tensors on the meta device."""
    import torch

    def draw(*shape: int) -> torch.Tensor:
        if torch.device(device).type == "meta":
            return torch.empty(*shape, device=device, dtype=dtype)
        return torch.randn(*shape, generator=generator, dtype=torch.float32).to(device, dtype)

    return draw


_REGISTERED: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Make `family` known under its name and its pipeline class."""
    for other in _REGISTERED.values():
        if family.name == other.name or family.pipeline_class_name == other.pipeline_class_name:
            raise ValueError(f"family '{family.name}' clashes with the registered family '{other.name}'")
    _REGISTERED[family.name] = family
    return family


def registered_families() -> list[Family]:
    return list(_REGISTERED.values())


def family_of(name: str) -> Family:
    """The family registered under `name` (ModelSpec.family)."""
    if name not in _REGISTERED:
        raise unknown_name_error("family", name, _REGISTERED)
    return _REGISTERED[name]


def family_of_pipeline_class(class_name: str) -> Family | None:
    """The family whose pipeline class is `class_name` (model_index.json's "_class_name"), or None."""
    return next((f for f in _REGISTERED.values() if f.pipeline_class_name == class_name), None)


def family_of_transformer(transformer: Any) -> Family:
    """The family whose transformer class `transformer` is an instance of (meta-device ones too); the first
    registered one where families share a transformer class."""
    for family in _REGISTERED.values():
        if isinstance(transformer, family.transformer_class()):
            return family
    supported = ", ".join(f.transformer_class_name for f in _REGISTERED.values())
    raise ValueError(f"unsupported transformer type {type(transformer).__name__}; supported: {supported}")

"""The Wan2.1 DiT (`diffusers.WanTransformer3DModel`): loading from every layout users have.

Layouts: a diffusers folder; a single file with original Wan keys (`blocks.N.self_attn.q.weight`),
bare or with ComfyUI's `model.diffusion_model.` prefix; the diffusers keys in one file; and the DiT part
(`wan_model.*`) of an Omni-Video checkpoint. Storage may be fp32/fp16/bf16 or fp8 (plain e4m3fn/e5m2 or
ComfyUI scaled fp8); weights are cast to the compute dtype on load.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

import torch
from torch import nn

from . import checkpoints as ckpt
from . import wan_keys
from .component_loading import ComponentSpec, SingleFileLayout, load_component
from .variants import KNOWN_VARIANTS, ConfigSpec, Variant

logger = logging.getLogger(__name__)


def _model_class() -> type[nn.Module]:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel


DIT_LAYOUTS = (
    SingleFileLayout(
        ckpt.Layout(
            "omnivideo", "Omni-Video transformer checkpoint, DiT under 'wan_model.' (original Wan keys)",
            ("wan_model.head.modulation",), prefix="wan_model.",
        ),
        wan_keys.dit_original_to_diffusers,
    ),
    SingleFileLayout(
        ckpt.Layout(
            "wan-comfyui", "original Wan keys with ComfyUI's 'model.diffusion_model.' prefix",
            ("model.diffusion_model.head.modulation",), prefix=wan_keys.COMFYUI_DIT_PREFIX,
        ),
        wan_keys.dit_original_to_diffusers,
    ),
    SingleFileLayout(
        ckpt.Layout("wan", "original Wan keys (blocks.N.self_attn.q.weight, head.modulation)", ("head.modulation",)),
        wan_keys.dit_original_to_diffusers,
    ),
    SingleFileLayout(
        ckpt.Layout(
            "diffusers", "diffusers WanTransformer3DModel keys in one file (blocks.N.attn1.to_q.weight)",
            ("scale_shift_table", "proj_out.weight", "condition_embedder.time_proj.weight"),
        ),
        dict,
    ),
)

DIT_SPEC = ComponentSpec("dit", _model_class, DIT_LAYOUTS)


def load_dit(
    path: str | os.PathLike,
    *,
    config: ConfigSpec = None,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    variants: tuple[Variant, ...] = KNOWN_VARIANTS,
) -> nn.Module:
    """Load a Wan2.1 DiT from a diffusers folder or a single file in any supported layout.

    `config` may be a variant name ("wan2.1-t2v-1.3b"), a config.json path/folder or a dict; without it
    the config comes from the file (metadata / folder) or an exact match against `variants`.
    """
    return load_component(DIT_SPEC, path, config=config, dtype=dtype, device=device, variants=variants)


def save_dit(dit: nn.Module, path: str | os.PathLike, *, comfyui_prefix: bool = False,
             dtype: torch.dtype | None = None) -> os.PathLike:
    """Write a DiT as original-Wan-key safetensors (loads in ComfyUI's native Wan nodes too), every floating
    tensor in `dtype` if given (the file's dtype only; the model is not cast).

    The diffusers config is embedded in the metadata, so our loaders need no config for it.
    """
    tensors = wan_keys.dit_diffusers_to_original(dit.state_dict())
    if dtype is not None:
        tensors = ckpt.cast_floating(tensors, dtype)
    if comfyui_prefix:
        tensors = {wan_keys.COMFYUI_DIT_PREFIX + k: v for k, v in tensors.items()}
    config = {k: v for k, v in dict(dit.config).items() if not k.startswith("_")}
    return ckpt.save_safetensors(tensors, path, format_name="revise.dit.wan", config=config)


def check_compiler(device: torch.device | str) -> None:
    """torch.compile on a CPU writes C++ and needs a compiler: refuse at once, in one sentence, when none is on PATH
    (instead of failing inside the first sampling step)."""
    if torch.device(device).type == "cpu" and not shutil.which(os.environ.get("CXX", "c++")) \
            and not shutil.which("g++") and not shutil.which("clang++"):
        raise ValueError("--compile on a CPU needs a C++ compiler (g++ or clang++) on PATH, and none was found")


def check_compile_beside(device: torch.device | str, *, cache: str = "none", dit_storage: str = "compute",
                         dit_placement: str | None = None) -> None:
    """Regional compile beside the other hooks on the DiT's blocks (docs/performance.md, "Hooks together"):
    - a step cache: refused (its hooks decide per call which blocks run, which a compiled block cannot follow);
    - fp8 storage: refused (diffusers' layerwise casting builds Parameters inside the block, which Dynamo cannot
      trace);
    - a streamed DiT (group offloading): verified on a CPU only, so refused on a GPU, where the next block is
      prefetched on a side CUDA stream;
    - LoRAs (fused before compiling), temporal windows, any attention backend: supported."""
    problems = []
    if cache != "none":
        problems.append("a step cache (--cache): both rewrite the DiT's blocks, use one")
    if dit_storage == "fp8":
        problems.append("fp8 storage (--dit-storage fp8): its casting hooks cannot be compiled, use one")
    if dit_placement == "stream" and torch.device(device).type == "cuda":
        problems.append("a streamed DiT (--placement stream) on a GPU: not verified there; use resident or "
                        "sequential placement with --compile")
    if problems:
        raise ValueError("--compile is not supported with " + "; nor with ".join(problems))


def compile_repeated_blocks(dit: nn.Module) -> int:
    """Regional compile: torch.compile each repeated block of the DiT (diffusers' `compile_repeated_blocks`, Wan's
    WanTransformerBlock), in place. The first call compiles, which takes seconds on a tiny model and minutes at real
    size; its time is logged once. Outputs agree with eager within float rounding (1e-5 on the tiny models, fp32),
    not bit for bit. Returns the number of blocks compiled."""
    dit.compile_repeated_blocks(fullgraph=True)
    blocks = sum(type(module).__name__ in dit._repeated_blocks for module in dit.modules())
    handles: list = []
    started: list[float] = []

    def before(module: nn.Module, args: tuple) -> None:
        started.append(time.perf_counter())

    def after(module: nn.Module, args: tuple, output) -> None:
        logger.info("compiled %d DiT blocks: the first call took %.1f s", blocks, time.perf_counter() - started[0])
        for handle in handles:
            handle.remove()

    handles += [dit.register_forward_pre_hook(before), dit.register_forward_hook(after)]
    return blocks

"""Shared pieces of the nodes: wire types, input specs with tooltips, type checks, gradient context."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from revise_core.checkpoints import DTYPE_CHOICES

CATEGORY = "ReViSE"
PRECISIONS = list(DTYPE_CHOICES)
DEVICES = ["auto", "cpu", "cuda"]

# Wire types: the values travelling on them are revise_core objects.
DIT, VAE, T5, VLM, CONNECTOR = "REVISE_DIT", "REVISE_VAE", "REVISE_T5", "REVISE_VLM", "REVISE_CONNECTOR"
COND, VLM_COND = "REVISE_COND", "REVISE_VLM_COND"
CONTEXT_OPTIONS = "REVISE_CONTEXT_OPTIONS"
LORAS = "REVISE_LORAS"  # a tuple of revise_core.lora.LoraChoice, applied by the Sampler


def precision_input(tooltip: str = "Compute dtype the weights are cast to (fp8 files are upcast). auto: bf16 on a "
                                   "GPU, fp32 on the CPU (half precision is very slow there).") -> tuple:
    return (PRECISIONS, {"default": "auto", "tooltip": tooltip})


def fps_input() -> tuple:
    """The source's frame rate (Get Video Components' fps): Qwen3-VL writes each frame's time from it."""
    return ("FLOAT", {"default": 16.0, "min": 0.01, "max": 1000.0, "step": 0.01,
                      "tooltip": "Frame rate of the source video (wire Get Video Components' fps): a Qwen3-VL writes "
                                 "each frame's time into its prompt, as the command line does from the file."})


def clip_size_inputs(what: str = "keep") -> dict[str, tuple]:
    """num_frames / width / height widgets of the nodes that fit a clip to Wan's shape (0 = from the source)."""
    from revise_core.video import MAX_FRAMES, MAX_SIDE

    return {
        "num_frames": ("INT", {"default": 0, "min": 0, "max": MAX_FRAMES, "step": 1,
                               "tooltip": f"Frames to {what}, 4k+1 (e.g. 33, 81); 0 = the source's count made 4k+1."}),
        "width": ("INT", {"default": 0, "min": 0, "max": MAX_SIDE, "step": 32,
                          "tooltip": "Output width, multiple of 32; 0 = the source's width rounded down."}),
        "height": ("INT", {"default": 0, "min": 0, "max": MAX_SIDE, "step": 32,
                           "tooltip": "Output height, multiple of 32; 0 = the source's height rounded down."}),
    }


def storage_input(kind: str) -> tuple:
    """How a loader stores a model's weights (revise_core/placement.py), with what each choice costs: int8 for
    the VLM and umT5, fp8 for the DiT. ComfyUI then counts the smaller size."""
    from revise_core import placement

    if kind == "dit":
        return (list(placement.DIT_STORAGES), {"default": "compute", "tooltip": placement.DIT_STORAGE_HELP})
    return (list(placement.ENCODER_STORAGES), {"default": "compute", "tooltip": placement.ENCODER_HELP})


def store(module, kind: str, storage: str):
    """Apply a loader's storage choice to the model it loaded (before ComfyUI registers it)."""
    from revise_core import placement

    if storage == "compute":
        return module
    allowed = placement.DIT_STORAGES if kind == "dit" else placement.ENCODER_STORAGES
    if storage not in allowed:
        raise ValueError(f"storage '{storage}' is not available for the {kind}; choose one of {allowed}")
    if kind == "dit":
        placement.store_fp8(module)
    else:
        placement.quantize_int8(getattr(module, "model", module))
    return module


def safe_name(name: str, *, what: str) -> str:
    """A free-text name that becomes a path under one of ComfyUI's folders: relative, without `..` parts (a
    workflow from the internet is untrusted input; dropdown values are checked by ComfyUI itself)."""
    from pathlib import PurePosixPath, PureWindowsPath

    text = str(name).strip()
    parts = set(PurePosixPath(text).parts) | set(PureWindowsPath(text).parts)
    if not text or ".." in parts or PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() \
            or PureWindowsPath(text).drive:
        raise ValueError(f"{what} '{name}' must be a relative name inside its folder (no absolute path, no '..')")
    return text


def device_input() -> tuple:
    return (DEVICES, {"default": "auto", "tooltip": "Where the model computes; 'auto' follows ComfyUI's device for this "
                                                    "kind of model (its text-encoder device for the VLM and umT5, its "
                                                    "VAE device for the VAE), and ComfyUI moves it there and back."})


def expect(value: object, expected: type | tuple[type, ...], what: str, wire: str) -> None:
    """Clear error when a wrong object arrives (e.g. a ComfyUI MODEL plugged into a ReViSE socket)."""
    if value is None:
        hint = (" (a ReViSE Load Model Set with load_dit off gives no DiT: turn load_dit on for this node; "
                "sampling alone can use ComfyUI's UNETLoader and KSampler instead)") if wire == DIT else ""
        raise TypeError(f"{what}: nothing arrived on the {wire} input{hint}")
    if not isinstance(value, expected):
        raise TypeError(
            f"{what}: expected a {wire} from a ReViSE loader, got {type(value).__name__}. Connect the output of "
            f"the matching ReViSE loader node."
        )


def expect_loras(value: object) -> tuple:
    """The LoRA choices on a REVISE_LORAS input (empty when nothing is wired), or a clear error."""
    from revise_core.lora import LoraChoice

    chosen = tuple(value or ())
    if not all(isinstance(choice, LoraChoice) for choice in chosen):
        raise TypeError(f"loras: expected the output of a ReViSE LoRA node ({LORAS})")
    return chosen


def expect_dit(value: object) -> None:
    from diffusers import WanTransformer3DModel

    expect(value, WanTransformer3DModel, "dit", DIT)


def expect_vae(value: object) -> None:
    from diffusers import AutoencoderKLWan

    expect(value, AutoencoderKLWan, "vae", VAE)


def dtype_of(name: str, device_choice: str = "auto", kind: str = "dit") -> torch.dtype:
    """A precision widget's value as a dtype; "auto" follows the device the model will compute on (in
    ComfyUI its device for the kind: e.g. the CPU for the encoders under --lowvram)."""
    from revise_core.checkpoints import auto_dtype, resolve_dtype

    from . import comfy_bridge as bridge

    return resolve_dtype(auto_dtype(name, bridge.compute_device(device_choice, kind)))


@contextlib.contextmanager
def weights_outside_inference_mode() -> Iterator[None]:
    """ComfyUI runs nodes under torch.inference_mode(); weights created there can never be saved for
    backward, which the trainer and the critic's gradient path need. Loaders therefore create them in
    normal mode (no memory cost, just ordinary tensors)."""
    with torch.inference_mode(False):
        yield


@contextlib.contextmanager
def training_mode() -> Iterator[None]:
    """Leave ComfyUI's inference mode and turn gradients back on (the trainer node)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextlib.contextmanager
def using(*objects, memory_required: int = 0) -> Iterator[None]:
    """The models (or the `.model` of a bundle: VLM, umT5) a node uses together, on their compute devices
    for the block; None entries (an unconnected optional input) are skipped.

    In ComfyUI: one request to its memory manager for all of them, with `memory_required` bytes of
    activations (the estimates below), after which they stay loaded until ComfyUI needs the memory;
    outside ComfyUI: moved there for the block and back (comfy_bridge.models_on_device)."""
    from . import comfy_bridge as bridge

    with bridge.models_on_device([getattr(obj, "model", obj) for obj in objects if obj is not None],
                                 memory_required=memory_required):
        yield


# Activation estimates, in bytes, given to ComfyUI as `memory_required`: what a node needs on the device
# besides the weights (ComfyUI frees max(estimate, 0.8 GiB) plus its 400 MB reserve / --reserve-vram before
# it loads). They are ComfyUI's own numbers for the same networks (v0.8.0), so our models and ComfyUI's
# are weighed alike:
# - Wan 2.1 VAE (comfy/sd.py, VAE.__init__, the Wan 2.1 branch): encode 1400 * min(9, T) * H * W, decode
#   2800 * min(8, 4 (t - 1) + 1) * h * w * 64, times the element size; pixels [B, 3, T, H, W], latents
#   [B, 16, t, h, w]. Tiled decoding needs less; the estimate does not shrink for it.
# - Wan 2.1 DiT (comfy/model_base.py, BaseModel.memory_required with SDPA attention; the WAN21 memory factor
#   dim / 2222 of comfy/supported_models.py): t * h * w * element size * 0.01 MiB * dim / 2222 for one
#   latent, our sampler calling the DiT once per guidance branch.
# - VLM, umT5, connector: 0, i.e. ComfyUI's minimum, as it asks for its own text encoders.
MIB = 2**20


def _element_size(module) -> int:
    from revise_core.checkpoints import compute_dtype

    return compute_dtype(module).itemsize


def vae_encode_memory(vae, pixel_shape) -> int:
    frames, height, width = pixel_shape[-3:]
    return int(1400 * min(9, frames) * height * width * _element_size(vae))


def vae_decode_memory(vae, latent_shape) -> int:
    frames, height, width = latent_shape[-3:]
    return int(2800 * min(8, 4 * (frames - 1) + 1) * height * width * 64 * _element_size(vae))


def dit_memory(dit, latent_shape) -> int:
    frames, height, width = latent_shape[-3:]
    dim = dit.config.num_attention_heads * dit.config.attention_head_dim
    return int(frames * height * width * _element_size(dit) * 0.01 * MIB * dim / 2222)


def clip_memory(dit, vae, frames: int, height: int, width: int) -> int:
    """The largest estimate of a whole edit of a clip (encode, sampling, decode): best-of-N and training."""
    latent = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    return max(vae_encode_memory(vae, (1, 3, frames, height, width)), vae_decode_memory(vae, latent),
               dit_memory(dit, latent))

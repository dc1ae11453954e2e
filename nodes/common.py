"""Shared pieces of the nodes: wire types, input specs with tooltips, type checks, gradient context."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

CATEGORY = "ReViSE"
PRECISIONS = ["auto", "bf16", "fp16", "fp32"]
DEVICES = ["auto", "cpu", "cuda"]

# Wire types: the values travelling on them are revise_core objects.
DIT, VAE, T5, VLM, CONNECTOR = "REVISE_DIT", "REVISE_VAE", "REVISE_T5", "REVISE_VLM", "REVISE_CONNECTOR"
COND, VLM_COND = "REVISE_COND", "REVISE_VLM_COND"


def precision_input(tooltip: str = "Compute dtype the weights are cast to (fp8 files are upcast). auto: bf16 on a "
                                   "GPU, fp32 on the CPU (half precision is very slow there).") -> tuple:
    return (PRECISIONS, {"default": "auto", "tooltip": tooltip})


def clip_size_inputs(what: str = "keep") -> dict[str, tuple]:
    """num_frames / width / height widgets of the nodes that fit a clip to Wan's shape (0 = from the source)."""
    return {
        "num_frames": ("INT", {"default": 0, "min": 0, "max": 1025, "step": 1,
                               "tooltip": f"Frames to {what}, 4k+1 (e.g. 33, 81); 0 = the source's count made 4k+1."}),
        "width": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 32,
                          "tooltip": "Output width, multiple of 32; 0 = the source's width rounded down."}),
        "height": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 32,
                           "tooltip": "Output height, multiple of 32; 0 = the source's height rounded down."}),
    }


def device_input() -> tuple:
    return (DEVICES, {"default": "auto", "tooltip": "Where the model computes; 'auto' follows ComfyUI's device."})


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


def expect_dit(value: object) -> None:
    from diffusers import WanTransformer3DModel

    expect(value, WanTransformer3DModel, "dit", DIT)


def expect_vae(value: object) -> None:
    from diffusers import AutoencoderKLWan

    expect(value, AutoencoderKLWan, "vae", VAE)


def dtype_of(name: str, device_choice: str = "auto") -> torch.dtype:
    """A precision widget's value as a dtype; "auto" follows the device the model will compute on."""
    from revise_core.checkpoints import auto_dtype, resolve_dtype

    from . import comfy_bridge as bridge

    return resolve_dtype(auto_dtype(name, bridge.compute_device(device_choice)))


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
def using(*objects) -> Iterator[None]:
    """Move each model (or the `.model` of a bundle) to its compute device for the block, then back."""
    from . import comfy_bridge as bridge

    with contextlib.ExitStack() as stack:
        for obj in objects:
            module = getattr(obj, "model", obj)
            stack.enter_context(bridge.on_device(module, bridge.compute_device_of(module)))
        yield

"""The DiT of a release as one original-Wan-key file that ComfyUI's own `UNETLoader` loads as Wan2.1.

The source may be a ReViSE release folder (`revise_ckpt/`: Wan's folder with `transformer/model.pt`'s
`wan_model.*` on top, the official load order), a folder with a `models.json`, or any single DiT file the
loaders read (an Omni-Video 2 `pytorch_model.pt`, whose `wan_model.*` part is the DiT; diffusers keys;
ComfyUI files). The DiT is loaded strictly into diffusers' Wan model (so a missing or mis-shaped tensor is an
error here, not a silent random weight in ComfyUI), then written in original Wan keys. ComfyUI detects
Wan2.1 by `head.modulation` and reads most sizes from the tensors, but fixes four (`COMFYUI_WAN_FIXED`):
a DiT that differs there would load wrongly without an error in ComfyUI, so it is refused here
(`--skip-comfyui-check` writes it anyway, for our own loaders). Nothing but the DiT is written: the
connector's tensors stay in the source.

`--dtype fp32` (the default) keeps the weights exact; ComfyUI casts them to its own compute dtype when it
loads them. bf16 / fp16 halve the file.

The command line is `python -m revise_core.convert` (convert.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from . import checkpoints as ckpt
from . import model_sets
from .dit import load_dit, save_dit
from .models_file import MODELS_FILE
from .output_paths import refuse_overwriting_inputs, writable_output

logger = logging.getLogger(__name__)

OUTPUT_DTYPES = ("fp32", "bf16", "fp16")
# What ComfyUI 0.8.0's Wan2.1 detection (comfy/model_detection.py) fixes instead of reading from the tensors:
# num_heads = dim // 128, freq_dim 256, patch (1, 2, 2), and text_dim 4096 (WanModel's default, never set).
COMFYUI_WAN_FIXED = {"attention_head_dim": 128, "freq_dim": 256, "patch_size": [1, 2, 2], "text_dim": 4096}


def check_comfyui_compatible(config: dict, *, source: Path) -> None:
    """Refuse a DiT whose sizes ComfyUI's Wan detection would get wrong (it assumes COMFYUI_WAN_FIXED)."""
    def value(key: str):
        found = config.get(key)
        return list(found) if isinstance(found, (list, tuple)) else found

    wrong = {key: value(key) for key, expected in COMFYUI_WAN_FIXED.items() if value(key) != expected}
    if wrong:
        raise ValueError(f"{source}: ComfyUI's Wan loader assumes {COMFYUI_WAN_FIXED} but this DiT has {wrong}; "
                         "the file would load wrongly in ComfyUI (use --skip-comfyui-check to write it for ReViSE's "
                         "own loaders)")


def load_release_or_set_dit(source: str | os.PathLike, *, config: str | None = None) -> nn.Module:
    """The DiT of `source` in fp32 on the CPU: a release folder, a models.json folder, or a DiT file."""
    source = Path(source)
    if not source.exists():
        raise ckpt.ModelFileNotFoundError(f"convert: source not found: {source}")
    if source.is_file():
        return load_dit(source, config=config, dtype=torch.float32)
    kind = model_sets.detect(source)
    if kind in ("revise release", "omnivideo2 release") and config is not None:
        raise ValueError(f"{source}: a release folder's DiT config comes from the release itself; --config applies "
                         "to single files only")
    if kind == "revise release":
        transformer_state = dict(ckpt.read_state_dict(source / model_sets.TRANSFORMER_FILE).tensors)
        return model_sets.load_release_dit(source, transformer_state, dtype=torch.float32, device="cpu")
    if kind == "omnivideo2 release":
        path = source / model_sets.OMNIVIDEO2_FILE
        return model_sets.load_omnivideo2_dit(path, ckpt.read_state_dict(path).tensors, dtype=torch.float32,
                                              device="cpu")
    spec = ckpt.read_json(source / MODELS_FILE, what="model set description (models.json)")
    if not spec.get("dit"):
        raise ValueError(f"{source / MODELS_FILE}: no 'dit' entry to convert")
    return load_dit(source / spec["dit"], config=config or spec.get("dit_config"), dtype=torch.float32)


def count_in_units(count: int) -> str:
    """A parameter count for people: 1.42 B, 3.1 M, 9.6 K, 812 (a tiny test model is not "0.00 B")."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        shown = float(f"{count / scale:.3g}")  # rounded before the unit is chosen: 999,600 is "1 M", not "1e+03 K"
        if shown >= 1:
            return f"{shown:g} {unit}"
    return str(count)


def convert(source: str | os.PathLike, output: str | os.PathLike, *, dtype: str = "fp32",
            config: str | None = None, comfyui_prefix: bool = False, check_comfyui: bool = True) -> Path:
    """Load the DiT of `source` and write it to `output` (safetensors, original Wan keys) in `dtype`;
    `check_comfyui` refuses a DiT ComfyUI's Wan loader would read wrongly."""
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"--dtype must be one of {OUTPUT_DTYPES}, got {dtype!r}")
    output = Path(output)
    if output.suffix not in (".safetensors", ".sft"):
        raise ValueError(f"{output}: the output must be a .safetensors file (ComfyUI's UNETLoader lists those)")
    if not Path(source).exists():  # before the output folder is created
        raise ckpt.ModelFileNotFoundError(f"convert: source not found: {source}")
    refuse_overwriting_inputs(output, [source, config if config and Path(str(config)).exists() else None],
                              what="convert: the output")
    writable_output(output, what="converted DiT")
    dit = load_release_or_set_dit(source, config=config)
    if check_comfyui:
        check_comfyui_compatible(dict(dit.config), source=Path(source))
    save_dit(dit, output, comfyui_prefix=comfyui_prefix, dtype=ckpt.resolve_dtype(dtype))
    logger.info("wrote %s: %s parameters in %s", output, count_in_units(sum(p.numel() for p in dit.parameters())),
                dtype)
    return output

"""Write the DiT of a release as one original-Wan-key file that ComfyUI's own `UNETLoader` loads as Wan2.1.

    python -m revise_core.convert models/revise/revise_ckpt models/diffusion_models/revise_dit.safetensors
    python -m revise_core.convert omnivideo2/transformer/pytorch_model.pt ov2_dit.safetensors --dtype bf16
    python -m revise_core.convert OMNIVIDEO2_1.3B_FOLDER ov2_dit.safetensors  # the Omni-Video 2 release folder
    python -m revise_core.convert MODEL_SET_FOLDER out.safetensors          # a folder with a models.json

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
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch
from torch import nn

from . import checkpoints as ckpt
from .cli import add_debug_flag, refuse_overwriting_inputs, run, writable_output

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
    from . import model_sets
    from .dit import load_dit

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
    from .models_file import MODELS_FILE

    spec = ckpt.read_json(source / MODELS_FILE, what="model set description (models.json)")
    if not spec.get("dit"):
        raise ValueError(f"{source / MODELS_FILE}: no 'dit' entry to convert")
    return load_dit(source / spec["dit"], config=config or spec.get("dit_config"), dtype=torch.float32)


def convert(source: str | os.PathLike, output: str | os.PathLike, *, dtype: str = "fp32",
            config: str | None = None, comfyui_prefix: bool = False, check_comfyui: bool = True) -> Path:
    """Load the DiT of `source` and write it to `output` (safetensors, original Wan keys) in `dtype`;
    `check_comfyui` refuses a DiT ComfyUI's Wan loader would read wrongly."""
    from .dit import save_dit

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
    count = sum(p.numel() for p in dit.parameters())
    logger.info("wrote %s: %d parameters (%.2f B) in %s", output, count, count / 1e9, dtype)
    return output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m revise_core.convert",
        description="Write a release's DiT as one original-Wan-key .safetensors for ComfyUI's UNETLoader.")
    parser.add_argument("source", help="a ReViSE release folder (revise_ckpt/), a models.json folder, or a DiT file "
                                       "(e.g. Omni-Video 2's transformer/pytorch_model.pt)")
    parser.add_argument("output", help="the .safetensors to write, e.g. ComfyUI/models/diffusion_models/revise_dit.safetensors")
    parser.add_argument("--dtype", choices=OUTPUT_DTYPES, default="fp32",
                        help="stored precision (default fp32: the weights exactly; ComfyUI casts on load)")
    parser.add_argument("--config", default=None,
                        help="DiT variant or config.json, for a file that carries no config and matches no known "
                             "variant (default: from the file)")
    parser.add_argument("--skip-comfyui-check", action="store_true",
                        help="write a DiT whose head width, text width, freq_dim or patch ComfyUI's Wan loader would "
                             "assume wrongly (the file is then for ReViSE's own loaders only)")
    parser.add_argument("--comfyui-prefix", action="store_true",
                        help="prefix the keys with 'model.diffusion_model.' as Comfy-Org's repackaged files do "
                             "(UNETLoader reads both)")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = convert(args.source, args.output, dtype=args.dtype, config=args.config, comfyui_prefix=args.comfyui_prefix,
                   check_comfyui=not args.skip_comfyui_check)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))

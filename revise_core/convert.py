"""Write the DiT of a release as one original-Wan-key file that ComfyUI's own `UNETLoader` loads as Wan2.1.

    python -m revise_core.convert models/revise/revise_ckpt models/diffusion_models/revise_dit.safetensors
    python -m revise_core.convert omnivideo2/transformer/pytorch_model.pt ov2_dit.safetensors --dtype bf16
    python -m revise_core.convert OMNIVIDEO2_1.3B_FOLDER ov2_dit.safetensors  # the Omni-Video 2 release folder
    python -m revise_core.convert MODEL_SET_FOLDER out.safetensors          # a folder with a models.json

The source is a ReViSE release folder, an Omni-Video 2 release folder, a folder with a `models.json`, or
one DiT file; what is checked and written is described in conversion.py (the library this command calls).
`--dtype fp32` (the default) keeps the weights exact; ComfyUI casts them to its own compute dtype when it
loads them. bf16 / fp16 halve the file.
"""

from __future__ import annotations

import argparse
import logging

from .cli import add_debug_flag, run
from .conversion import OUTPUT_DTYPES, convert


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

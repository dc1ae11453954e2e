"""Runs inside a ComfyUI checkout's Python (tests/test_real_comfyui.py starts it; not a test module itself).

    python comfy_write_taehv.py COMFYUI_PATH OUTPUT.safetensors

Writes a randomly initialised `lighttaew2_1` (ComfyUI's own TAEHV class for Wan2.1 latents, fp32, which is
how ComfyUI tells it from the fp16 taehv), so that the real-server test can check that previews switch to
TAEHV when the file is in models/vae_approx. Random weights: the previews are noise of the right size.
"""

from __future__ import annotations

import sys


def main(comfyui: str, output: str) -> None:
    sys.path.insert(0, comfyui)
    from comfy.cli_args import args

    args.cpu = True
    import torch
    from comfy.taesd.taehv import TAEHV
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = TAEHV(latent_channels=16, latent_format=None)
    save_file({k: v.float().contiguous() for k, v in model.state_dict().items()}, output)


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Measures the CPU figure the templates' "on a CPU" notes quote: one sampling step of Wan2.1-1.3B at the
templates' size (33 frames 640x352, the release's 2560 context rows), fp32, extrapolated from whole blocks.

    python workflows/cpu_step_time.py            # prints seconds per block, per step, and 40 steps

A full-size forward takes minutes on a small CPU, so this times random-init models of 1 and 2 of the
30 identical blocks (same embeddings and head) and extrapolates: step = 2 passes (guidance) x (base + 30 x
block). Random weights cost the same as trained ones. The number depends on the machine: the nodes
themselves measure the first step on the user's machine and say what the rest will take
(nodes/run_time.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: the checkout's packages

FRAMES, HEIGHT, WIDTH, CONTEXT, STEPS, BLOCKS = 33, 352, 640, 2560, 40, 30
TOKENS = ((FRAMES - 1) // 4 + 1) * (HEIGHT // 16) * (WIDTH // 16)  # latent frames x (1, 2, 2) patches: 7920


def build(layers: int) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    from revise_core.variants import get_variant

    config = get_variant("wan2.1-t2v-1.3b").load_config()
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    return WanTransformer3DModel.from_config({**config, "num_layers": layers}).eval()


def forward_seconds(layers: int, repeats: int) -> float:
    """Best of `repeats` timed forwards (after one warm-up) at the templates' size."""
    model = build(layers)
    latents = torch.randn(1, 16, (FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8)
    context = torch.randn(1, CONTEXT, 4096)
    timestep = torch.tensor([500.0])
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            started = time.perf_counter()
            model(hidden_states=latents, timestep=timestep, encoder_hidden_states=context, return_dict=False)
            times.append(time.perf_counter() - started)
    return min(times[1:])


def block_flops(tokens: int, context: int, width: int = 1536, ffn: int = 8960) -> float:
    """Multiply-adds x 2 of one Wan block: self-attention (projections, scores and values), cross-attention
    over the context, feed-forward. About 1.19e12 at the templates' size (7920 video tokens)."""
    self_attention = 4 * 2 * tokens * width**2 + 2 * 2 * tokens**2 * width
    cross_attention = 2 * 2 * tokens * width**2 + 2 * 2 * context * width**2 + 2 * 2 * tokens * context * width
    return self_attention + cross_attention + 2 * 2 * tokens * width * ffn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    one, two = forward_seconds(1, args.repeats), forward_seconds(2, args.repeats)
    block = two - one
    step = 2 * (one - block + BLOCKS * block)
    print(json.dumps({
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads ({os.cpu_count()} CPUs), "
                   f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}",
        "size": f"{FRAMES} frames {WIDTH}x{HEIGHT}, context {CONTEXT}, fp32",
        "forward_1_block_s": round(one, 2), "forward_2_blocks_s": round(two, 2), "block_s": round(block, 2),
        "step_s": round(step, 1), "sustained_gflops": round(block_flops(TOKENS, CONTEXT) / block / 1e9, 1),
        f"{STEPS}_steps_h": round(STEPS * step / 3600, 2),
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

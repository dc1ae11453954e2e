"""DiT calls and FLOPs per edit for the fixed-schedule sampler settings, at real size, without a GPU.

    python -m bench.schedule_cost

One Wan2.1-1.3B DiT call is measured with fake tensors (bench.fake_measure: FlopCounterMode, attention counted
as FlashAttention's) at the release's context of 2,560 rows, for each clip size; an edit's sampling is that call
times the DiT calls its schedule makes: steps x 2 with guidance (cond and uncond), steps x 1 without. Only fixed
schedules are modelled (steps, guidance on or off, the few-step preset): adaptive step caches skip what the
model's own activations decide, which fake tensors cannot predict (bench.sampler_settings measures them on the
tiny models). The VAE, VLM and umT5 run once per edit whatever the schedule and are left out. Results:
bench/results/schedule_cost.{json,md}.
"""

from __future__ import annotations

import platform
import sys

import torch

from bench.common import write_results
from bench.cost_model import H100_BF16_FLOPS
from bench.whole_edit import CONSUMER_BF16_FLOPS

CONTEXT_ROWS = 2560  # the ReViSE release's connector context (max_context_len)
SIZES = ((17, 352, 640), (33, 352, 640), (81, 480, 832))  # frames, height, width


def schedules() -> list[tuple[str, int, bool]]:
    """(setting, steps, guided) of every fixed schedule a user can pick."""
    from revise_core.presets import FEW_STEP, get_preset

    release = get_preset("revise-official").sampler
    return [
        (f"the release preset: {release['steps']} UniPC steps, guidance", release["steps"], True),
        ("20 steps, guidance (--steps 20)", 20, True),
        ("40 steps, guidance off (--guidance 1)", 40, False),
        (f"few-step preset: {FEW_STEP['steps']} Euler steps, guidance off (--few-step, a step-distilled LoRA)",
         FEW_STEP["steps"], False),
        ("8 steps, guidance off (--few-step --steps 8)", 8, False),
    ]


def dit_call_flops(frames: int, height: int, width: int) -> float:
    """FLOPs of one bf16 Wan2.1-1.3B DiT call on a clip of this size with the release's context."""
    from diffusers import WanTransformer3DModel

    from bench.fake_measure import default_dtype, measure
    from bench.project_composition import _config

    def setup() -> dict:
        with default_dtype(torch.bfloat16):
            dit = WanTransformer3DModel.from_config(_config("wan2.1-t2v-1.3b")).eval().requires_grad_(False)
        latents = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8, dtype=torch.bfloat16)
        context = torch.randn(1, CONTEXT_ROWS, dit.config.text_dim, dtype=torch.bfloat16)
        return {"dit": dit, "latents": latents, "context": context, "tracked": [dit]}

    def step(state: dict) -> None:
        with torch.no_grad():
            state["dit"](hidden_states=state["latents"], timestep=torch.tensor([500.0]),
                         encoder_hidden_states=state["context"], return_dict=False)

    return float(measure(setup, step).flops)


def main(argv: list[str] | None = None) -> int:
    results, rows = [], []
    for frames, height, width in SIZES:
        per_call = dit_call_flops(frames, height, width)
        for setting, steps, guided in schedules():
            calls = steps * (2 if guided else 1)
            flops = calls * per_call
            results.append({"frames": frames, "height": height, "width": width, "setting": setting, "steps": steps,
                            "guided": guided, "dit_calls": calls, "tflop_per_call": per_call / 1e12,
                            "tflop_per_edit": flops / 1e12, "h100_roofline_s": flops / H100_BF16_FLOPS,
                            "consumer_roofline_s": flops / CONSUMER_BF16_FLOPS})
            rows.append([f"{frames} ({height}x{width})", setting, calls, f"{flops / 1e12:.0f}",
                         f"{flops / H100_BF16_FLOPS:.1f}", f"{flops / CONSUMER_BF16_FLOPS:.1f}"])
    payload = {"device": f"fake tensors on a CPU ({platform.processor() or platform.machine()})",
               "command": "python -m bench.schedule_cost", "context_rows": CONTEXT_ROWS, "results": results}
    notes = (f"One DiT call at the release's {CONTEXT_ROWS} context rows, times the calls of each schedule. Roofline "
             f"seconds = FLOPs / {H100_BF16_FLOPS / 1e12:.0f} TFLOP/s (H100 dense bf16) and / "
             f"{CONSUMER_BF16_FLOPS / 1e12:.0f} TFLOP/s (RTX 4090-class): lower bounds of the sampling alone. "
             "Adaptive caches are not modelled here: their skips depend on real activations "
             "(bench/results/sampler_settings.md measures them on the tiny models). A step-distilled LoRA makes the "
             "few-step rows usable; its quality on ReViSE's context is not known.")
    path = write_results("schedule_cost", payload, ["clip", "setting", "DiT calls", "TFLOP per edit",
                                                     "H100 roofline s", "RTX 4090-class roofline s"], rows, notes)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

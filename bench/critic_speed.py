"""Forward + backward time and peak memory of the SelfCritic on (source, edit) pairs.

    python -m bench.critic_speed        # GPU: random-init Qwen2.5-VL-7B (bf16), 4 frames of 352x640 per video
                                        # CPU: the tiny VLM at 64x64 (timings only show overhead)

One step = the verdict on (source, edited) with gradients to the edited pixels, then backward; Δ_base
of (source, source) is measured separately (no gradient, paid once per sample and cached in training).
"""

from __future__ import annotations

import argparse
import sys

import torch

from bench.common import PeakMemory, device_name, timed, write_results


def build_vlm(device: torch.device):
    from revise_core.testing import tiny_vlm

    tiny = tiny_vlm()
    if device.type != "cuda":
        return tiny, (64, 64)
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from revise_core.variants import get_variant
    from revise_core.vlm.qwen2_vl import Qwen2VLModel, VisionPreprocessConfig

    data = get_variant("qwen2.5-vl-7b").load_config()
    # The real tokenizer cannot be downloaded here: the run-time tokenizer stands in, and the special token
    # ids are pointed at its ids (the vocabulary stays 152064 wide, the sequence lengths stay realistic).
    tok = tiny.tokenizer
    for key, token in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                       ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")):
        data[key] = tok.convert_tokens_to_ids(token)
    config = Qwen2_5_VLConfig(**{k: v for k, v in data.items() if k not in ("architectures", "model_type")})
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build directly in bf16: an fp32 7B would need 33 GB first
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval().requires_grad_(False)
    return Qwen2VLModel(model=model, tokenizer=tok, preprocess=VisionPreprocessConfig()), (352, 640)


def run(device: torch.device, repeats: int, gradient_checkpointing: bool) -> dict:
    from revise_core.critic import CriticConfig, SelfCritic
    from revise_core.losses import reason_loss

    vlm, (height, width) = build_vlm(device)
    if gradient_checkpointing:
        vlm.set_gradient_checkpointing(True)
    critic = SelfCritic(vlm, CriticConfig(num_frames=4))
    generator = torch.Generator("cpu").manual_seed(0)
    source = torch.rand(4, height, width, 3, generator=generator).to(device)
    edited = torch.rand(4, height, width, 3, generator=generator).to(device)

    def step():
        pixels = edited.clone().requires_grad_(True)
        verdict = critic.verdict(source, pixels, "make the square red")
        reason_loss(verdict.delta - critic.baseline(source, "make the square red")).backward()
        return pixels.grad

    critic.baseline(source, "make the square red")  # cached once, as in training
    _, baseline_s = timed(lambda: critic.verdict(source, source, "make the square red"), device)
    step()  # warm-up
    times = []
    with PeakMemory(device) as memory:
        for _ in range(repeats):
            grad, seconds = timed(step, device)
            times.append(seconds)
    assert grad is not None and torch.isfinite(grad).all()
    return {"height": height, "width": width, "frames_per_video": 4, "gradient_checkpointing": gradient_checkpointing,
            "fwd_bwd_s": min(times), "baseline_fwd_s": baseline_s, "peak_mib": memory.peak_bytes / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.critic_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (best is reported)")
    parser.add_argument("--cpu", action="store_true", help="force the CPU tiny run")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    records = [run(device, args.repeats, checkpointing) for checkpointing in (False, True)]
    rows = [[f"{r['frames_per_video']}f {r['height']}x{r['width']} x2 videos", r["gradient_checkpointing"],
             f"{r['fwd_bwd_s']:.3f}", f"{r['baseline_fwd_s']:.3f}", f"{r['peak_mib']:.0f}"] for r in records]
    size = "random-init Qwen2.5-VL-7B, bf16" if device.type == "cuda" else "tiny Qwen2.5-VL, fp32"
    name = "critic_speed_gpu" if device.type == "cuda" else "critic_speed_cpu"
    payload = {"device": device_name(device), "models": size,
               "command": "python -m bench.critic_speed" + (" --cpu" if args.cpu else ""), "cases": records}
    notes = (f"Models: {size}. One step: verdict on (source, edited) with gradients to the edited pixels, then "
             "backward of -log σ(Δ − Δ_base); Δ_base is cached (its one-off cost is the baseline column). Reference: "
             "a naive composition needed 1.39 s and 74 GiB on an H100 for a whole USO step with the critic.")
    path = write_results(name, payload, ["case", "grad. checkpointing", "fwd+bwd s", "Δ_base fwd s", "peak MiB"], rows,
                         notes)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

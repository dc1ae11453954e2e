"""Peak device memory and time of a whole ReViSE edit per placement, on a real GPU, emulating smaller cards.

    python -m bench.placement_gpu                 # GPU: the ReViSE release's shapes at real size, random bf16 weights
    python -m bench.placement_gpu --tiny          # any machine: the test kit's tiny release folder (a plumbing check)

Each case runs `ReviseEditor.edit` (VLM pass, umT5, connector, VAE encode, 2 x steps DiT calls, VAE decode) on
a synthetic 17-frame 352x640 clip with the release's preset, after `torch.cuda.set_per_process_memory_fraction`
has capped the process at the card size (8, 12, 24 GiB, or the whole device). The models are built once on
the host with random weights (meta construction, then filled: a real-size random init of 17B parameters is
minutes) and copied for each case. Reports `torch.cuda.max_memory_allocated`, the edit's wall time, the
placement's recorded weight transfers, or "out of memory". Results: bench/results/placement_gpu.{json,md},
beside the cost model's figures (bench/results/cost_model.md).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

from bench.common import device_name, write_results

GIB = 2**30
CARDS_GIB = (8, 12, 24, 0)  # 0: the whole device
CASES = (  # (label, PlacementConfig fields)
    ("resident", {"placement": "resident"}),
    ("sequential", {"placement": "sequential"}),
    ("stream", {"placement": "stream"}),
    ("sequential + int8 encoders + fp8 DiT", {"placement": "sequential", "encoders": "int8", "dit_storage": "fp8"}),
    ("stream + int8 encoders + fp8 DiT", {"placement": "stream", "encoders": "int8", "dit_storage": "fp8"}),
)
FRAMES, HEIGHT, WIDTH, STEPS = 17, 352, 640, 40


def real_size_models(dtype: torch.dtype):
    """The ReViSE release's five models at real size (Wan2.1-1.3B, its VAE, umT5-XXL, VILA-8B, the VisionHead +
    DM_Adapter connector) with random weights, on the host."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from bench.project_composition import _config, build_connector, build_vlm, u_length
    from revise_core.model_sets import EditModels
    from revise_core.testing import train_tokenizer
    from revise_core.text import TextEncoder

    with torch.device("meta"):
        vlm = build_vlm("revise-vila-8b", dtype)
        dit = WanTransformer3DModel.from_config(_config("wan2.1-t2v-1.3b")).to(dtype)
        t5 = UMT5EncoderModel(UMT5Config(**_config("umt5-xxl"))).to(dtype)
    video_tokens = ((FRAMES - 1) // 4 + 1) * (HEIGHT // 32) * (WIDTH // 32)
    u_len = u_length(vlm, FRAMES, HEIGHT, WIDTH)  # runs the VLM's preprocessing: on real tensors
    with torch.device("meta"):
        connector = build_connector("revise-vila-8b", vlm.hidden_size, video_tokens, u_len).to(dtype)
    vae = AutoencoderKLWan.from_config(_config("wan2.1-vae")).to(dtype)  # small: a real init
    for module in (vlm.model, dit, t5, connector):
        _fill(module)
    models = EditModels(dit=dit.eval(), vae=vae.eval(), text=TextEncoder(t5.eval(), train_tokenizer("t5")),
                        vlm=vlm, connector=connector.eval())
    models.check()
    return models


def _fill(module: torch.nn.Module) -> None:
    """Materialise a meta-built module on the host with N(0, 0.02) weights (norm scales 1, biases 0)."""
    module.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if not tensor.is_floating_point():
                continue
            if tensor.ndim <= 1:
                tensor.fill_(1.0 if "norm" in name or "scale" in name else 0.0)
            else:
                tensor.normal_(0.0, 0.02, generator=generator)
    for sub in module.modules():  # non-persistent buffers (rotary tables) are rebuilt by their modules
        reset = getattr(sub, "reset_parameters", None)
        if reset is not None and not list(sub.parameters(recurse=False)) and list(sub.buffers(recurse=False)):
            reset()


def tiny_models():
    import tempfile
    from pathlib import Path

    from revise_core.model_sets import EditModels
    from revise_core.testing import write_tiny_models

    folder = Path(tempfile.mkdtemp(prefix="revise-placement-"))
    write_tiny_models(folder)
    return EditModels.load(folder / "revise_ckpt")


def run_case(models, fields: dict, device: torch.device, card_gib: int, tiny: bool) -> dict:
    from revise_core import presets
    from revise_core.editor import ReviseEditor
    from revise_core.placement import Placement, PlacementConfig
    from revise_core.video import synthetic_clip

    models = copy.deepcopy(models)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, card_gib * GIB / total) if card_gib else 1.0, device)
        torch.cuda.reset_peak_memory_stats(device)
    budget = card_gib - 0.5 if card_gib else 0.0  # the context and the allocator's own reserve
    placement = Placement(PlacementConfig(**fields, device_budget_gib=max(budget, 0.0)), device)
    frames, height, width, steps = (5, 32, 64, 2) if tiny else (FRAMES, HEIGHT, WIDTH, STEPS)
    settings = presets.edit_settings(presets.get_preset("revise-official"), steps=steps, num_frames=frames,
                                     height=height, width=width)
    clip = synthetic_clip(num_frames=frames + settings.skip_frames, height=height, width=width).frames
    row = {"card_gib": card_gib or "whole", "modes": {}, "peak_gib": None, "seconds": None, "transfer_gib": None}
    try:
        editor = ReviseEditor.placed(models, placement)
        row["modes"] = dict(placement.modes)
        start = time.perf_counter()
        editor.edit(clip, "what will the ice cube look like after an hour in the sun ?", settings)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        row["seconds"] = round(time.perf_counter() - start, 2)
        row["transfer_gib"] = round(placement.transfers.total_bytes / GIB, 2)
        if device.type == "cuda":
            row["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 2)
    except torch.cuda.OutOfMemoryError:
        row["error"] = "out of memory"
    finally:
        del models
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.placement_gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the test kit's tiny models (any machine)")
    parser.add_argument("--cards", default=",".join(map(str, CARDS_GIB)),
                        help="card sizes in GiB to emulate, 0 = the whole device (default 8,12,24,0)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.tiny:
        parser.error("no CUDA device: measure on a GPU, or check the plumbing with --tiny")
    cards = [int(c) for c in args.cards.split(",") if c.strip()]
    models = tiny_models() if args.tiny else real_size_models(torch.bfloat16)
    rows = []
    for label, fields in CASES:
        for card in cards if device.type == "cuda" else [0]:
            row = {"placement": label, **run_case(models, fields, device, card, args.tiny)}
            print(row, flush=True)
            rows.append(row)
    command = "python -m bench.placement_gpu" + (" --tiny" if args.tiny else "")
    payload = {"command": command, "device": device_name(device), "frames": FRAMES, "size": [HEIGHT, WIDTH],
               "steps": STEPS, "rows": rows}
    table = [[r["placement"], r["card_gib"], r.get("error") or r["peak_gib"], r["seconds"], r["transfer_gib"],
              ", ".join(f"{k} {v}" for k, v in r["modes"].items())] for r in rows]
    write_results("placement_gpu" + ("_tiny" if args.tiny else ""), payload,
                  ["placement", "card GiB", "peak GiB", "edit s", "weights moved GiB", "modes"], table,
                  "Whole edit (the revise-official preset, 40 steps) per placement; peak = "
                  "torch.cuda.max_memory_allocated under set_per_process_memory_fraction(card). Random weights.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

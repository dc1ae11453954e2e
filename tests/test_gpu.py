"""Checks only a CUDA device can make: placements that really move weights between host and device, peak device
memory per placement, and bf16 / fp8 numerics on the GPU. Marked `gpu` (excluded from the default run; run
with `python -m pytest -m gpu` on a machine with a GPU); each test also skips without CUDA."""

from __future__ import annotations

import pytest
import torch

from revise_core.editor import EditSettings, ReviseEditor
from revise_core.model_sets import EditModels
from revise_core.placement import Placement, PlacementConfig
from revise_core.sampler import SamplerConfig
from revise_core.video import synthetic_clip

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

INSTRUCTION = "make the ice cube melt"


def _edit(folder, config: PlacementConfig, dtype: str = "bf16"):
    """One guided step of the tiny release on the GPU; returns the frames and the peak device memory."""
    models = EditModels.load(folder, dtype=dtype, device="cpu")
    editor = ReviseEditor.placed(models, Placement(config, "cuda"))
    frames = synthetic_clip(num_frames=5, height=32, width=64).frames
    settings = EditSettings(sampler=SamplerConfig(steps=1, seed=3), caption_tokens=8)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    result = editor.edit(frames, INSTRUCTION, settings)
    torch.cuda.synchronize()
    return result.frames, torch.cuda.max_memory_allocated()


def test_every_placement_gives_the_same_bf16_edit_and_streaming_lowers_the_peak(tiny_dir):
    resident, resident_peak = _edit(tiny_dir / "revise_ckpt", PlacementConfig(placement="resident"))
    sequential, sequential_peak = _edit(tiny_dir / "revise_ckpt", PlacementConfig(placement="sequential"))
    stream, stream_peak = _edit(tiny_dir / "revise_ckpt", PlacementConfig(
        placement="stream", device_budget_gib=1e-6, activation_reserve_gib=0))
    # Moving weights changes no bit: the same kernels run on the same values.
    assert torch.equal(sequential, resident) and torch.equal(stream, resident)
    # resident keeps all five models on the device at every stage's peak; the others only the stage's own
    assert stream_peak <= sequential_peak <= resident_peak and stream_peak < resident_peak


def test_fp8_dit_storage_on_the_gpu_stays_close_to_bf16(tiny_dir):
    reference = EditModels.load(tiny_dir / "revise_ckpt", dtype="bf16", device="cuda")
    stored = EditModels.load(tiny_dir / "revise_ckpt", dtype="bf16", device="cpu")
    Placement(PlacementConfig(placement="resident", dit_storage="fp8"), "cuda").apply(stored.components())
    torch.manual_seed(0)
    latents = torch.randn(1, 16, 2, 8, 8, device="cuda", dtype=torch.bfloat16)
    context = torch.randn(1, 12, reference.dit.config.text_dim, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        out = [m.dit(latents, torch.tensor([500.0], device="cuda"), context, return_dict=False)[0].float()
               for m in (stored, reference)]
    relative = float((out[0] - out[1]).norm() / out[1].norm())
    assert 0 < relative < 0.08  # the CPU test's bound for fp8 (3 mantissa bits)

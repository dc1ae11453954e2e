"""Group offloading, fp8 storage, compile, step caches, LoRAs and temporal windows on the same DiT blocks: the
combinations that work give the plain result (exactly, or within fp8's rounding), the others are refused."""

from __future__ import annotations

import copy

import pytest
import torch

from revise_core.dit import check_compile_beside, compile_repeated_blocks
from revise_core.lora import LoraChoice, fuse_loras, load_loras
from revise_core.placement import Placement, PlacementConfig
from revise_core.sampler import SamplerConfig, WindowContext, sample
from revise_core.step_cache import StepCache
from revise_core.testing.loras import write_tiny_lora
from revise_core.windows import TemporalWindows, blend_weights

SHAPE = (1, 16, 5, 8, 8)  # 5 latent frames: windows (0, 3), (2, 5)
# a first-block threshold so small that no step is skipped: the hooks run, the result must not change
NO_SKIP = 1e-9


@pytest.fixture(scope="module")
def setting(tiny_models, tmp_path_factory):
    dit = tiny_models.dit
    lora = write_tiny_lora(tmp_path_factory.mktemp("lora") / "step.safetensors", dit, "step-distill")
    generator = torch.Generator().manual_seed(0)
    cond, uncond = (torch.randn(1, 12, dit.config.text_dim, generator=generator) for _ in range(2))
    return dit, lora, cond, uncond


def _windows(cond, uncond):
    spans = TemporalWindows(3, 1).spans(SHAPE[2])
    weights = blend_weights(spans, SHAPE[2])
    return [WindowContext(start, end, cond, uncond, weights[index, start:end])
            for index, (start, end) in enumerate(spans)]


def _edit(setting, *, lora=False, stream=False, fp8=False, cache="none", windows=False, compiled=False):
    dit, path, cond, uncond = setting
    dit = copy.deepcopy(dit)
    if lora:  # the command line's order: LoRAs fused at load, then storage and placement, then compile
        fuse_loras(dit, load_loras([LoraChoice(path, 0.7)], dit))
    if stream or fp8:
        Placement(PlacementConfig(placement="stream" if stream else "resident",
                                  dit_storage="fp8" if fp8 else "compute"), "cpu").apply({"dit": dit})
    if compiled:
        compile_repeated_blocks(dit)
    config = SamplerConfig(steps=3, guidance_scale=3.0, scheduler="euler", seed=0,
                           cache=StepCache(cache, threshold=NO_SKIP) if cache == "first-block" else StepCache(cache))
    if windows:
        return sample(dit, None, None, latent_shape=SHAPE, config=config, windows=_windows(cond, uncond))
    return sample(dit, cond, uncond, latent_shape=SHAPE, config=config)


def test_offloading_a_cache_a_lora_and_windows_together_give_the_plain_windowed_lora_edit_exactly(setting):
    reference = _edit(setting, lora=True, windows=True)
    assert not torch.equal(reference, _edit(setting, windows=True))  # the LoRA is in it
    assert torch.equal(_edit(setting, lora=True, windows=True, stream=True, cache="first-block"), reference)
    assert torch.equal(_edit(setting, lora=True, stream=True, cache="taylorseer"),
                       _edit(setting, lora=True, cache="taylorseer"))


def test_fp8_storage_with_a_fused_lora_and_a_cache_stays_within_fp8_rounding(setting):
    reference = _edit(setting, lora=True)
    stored = _edit(setting, lora=True, fp8=True, cache="first-block")
    assert (stored - reference).abs().max() / reference.abs().max() < 3e-2  # e4m3: 3 mantissa bits


def test_compile_is_refused_beside_the_hooks_it_cannot_follow():
    with pytest.raises(ValueError, match=r"not supported with a step cache \(--cache\).*nor with fp8 storage"):
        check_compile_beside("cpu", cache="first-block", dit_storage="fp8")
    with pytest.raises(ValueError, match="a streamed DiT .* on a GPU: not verified there"):
        check_compile_beside("cuda", dit_placement="stream")
    check_compile_beside("cpu", dit_placement="stream")  # verified below
    check_compile_beside("cuda", dit_placement="resident")


@pytest.mark.slow  # compiles (about 11 s on a tiny model on a CPU)
def test_a_compiled_streamed_dit_with_a_lora_and_windows_agrees_with_eager(setting):
    eager = _edit(setting, lora=True, windows=True)
    compiled = _edit(setting, lora=True, windows=True, stream=True, compiled=True)
    assert (compiled - eager).abs().max() / eager.abs().max() < 1e-5

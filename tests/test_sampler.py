"""The sampler reproduces diffusers.WanPipeline and behaves as a library loop should."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_close
from revise_core.sampler import SamplerConfig, SamplingCancelled, make_scheduler, sample
from revise_core.text import encode_text, pad_context

CONTEXT_LEN = 16


def _context(models, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        (tokens,) = encode_text(models.text, [prompt], max_length=CONTEXT_LEN)
    return pad_context(tokens, CONTEXT_LEN)[None]


@pytest.mark.parametrize("scheduler", ["unipc", "euler"])
def test_matches_wan_pipeline_with_plain_t5_context(tiny_models, scheduler):
    from diffusers import WanPipeline

    cond, uncond = _context(tiny_models, "the egg is fried"), _context(tiny_models, "blurry static")
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=tiny_models.vae, transformer=tiny_models.dit,
                       scheduler=make_scheduler(scheduler, 3.0))
    with torch.no_grad():
        expected = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, height=32, width=32, num_frames=9,
                        num_inference_steps=5, guidance_scale=5.0, generator=torch.Generator().manual_seed(11),
                        output_type="latent").frames
        ours = sample(tiny_models.dit, cond, uncond, latent_shape=tuple(expected.shape),
                      config=SamplerConfig(steps=5, guidance_scale=5.0, shift=3.0, scheduler=scheduler, seed=11))
    assert_close(ours, expected, atol=1e-5, what=scheduler)


def test_seed_determinism_and_callbacks(tiny_models):
    cond = _context(tiny_models, "make the car red")
    seen = []
    config = SamplerConfig(steps=3, guidance_scale=1.0, seed=4)
    with torch.no_grad():
        first = sample(tiny_models.dit, cond, None, latent_shape=(1, 16, 2, 4, 4), config=config, callback=seen.append)
        again = sample(tiny_models.dit, cond, None, latent_shape=(1, 16, 2, 4, 4), config=config)
        other = sample(tiny_models.dit, cond, None, latent_shape=(1, 16, 2, 4, 4),
                       config=SamplerConfig(steps=3, guidance_scale=1.0, seed=5))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert [info.step for info in seen] == [0, 1, 2] and all(info.total == 3 for info in seen)
    assert seen[0].sigma > seen[-1].sigma and seen[-1].denoised.shape == first.shape


def test_cancel_stops_between_steps(tiny_models):
    cond = _context(tiny_models, "make the car red")
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(SamplingCancelled, match="before step 3/4"), torch.no_grad():
        sample(tiny_models.dit, cond, None, latent_shape=(1, 16, 2, 4, 4),
               config=SamplerConfig(steps=4, guidance_scale=1.0), cancel=cancel)


def test_no_gradient_blocking_inside(tiny_models):
    import copy

    dit = copy.deepcopy(tiny_models.dit).requires_grad_(True)
    cond = _context(tiny_models, "make the car red")
    latents = sample(dit, cond, None, latent_shape=(1, 16, 2, 4, 4),
                     config=SamplerConfig(steps=1, guidance_scale=1.0, scheduler="euler"))
    latents.square().mean().backward()
    assert dit.proj_out.weight.grad is not None and dit.proj_out.weight.grad.abs().sum() > 0


def test_bad_configuration_is_explained(tiny_models):
    cond = _context(tiny_models, "make the car red")
    with pytest.raises(ValueError, match="needs an unconditional context"):
        sample(tiny_models.dit, cond, None, latent_shape=(1, 16, 2, 4, 4), config=SamplerConfig(guidance_scale=3.0))
    with pytest.raises(ValueError, match="scheduler must be one of"):
        SamplerConfig(scheduler="ddim")
    with pytest.raises(ValueError, match="either noise or latent_shape"):
        sample(tiny_models.dit, cond, cond)

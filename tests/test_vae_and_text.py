"""VAE encode/decode paths and umT5 encoding with Wan's trimming and padding."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import assert_close
from revise_core import vae as vae_ops
from revise_core.text import clean_prompt, encode_text, pad_context


@pytest.fixture(scope="module")
def video():
    return torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_normalisation_round_trip_uses_the_wan_constants(tiny_models):
    latents = torch.randn(1, 16, 2, 4, 4)
    normalized = vae_ops.normalize_latents(tiny_models.vae, latents)
    mean = torch.tensor(tiny_models.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(tiny_models.vae.config.latents_std).view(1, -1, 1, 1, 1)
    assert_close(normalized, (latents - mean) / std, atol=1e-6)
    assert_close(vae_ops.denormalize_latents(tiny_models.vae, normalized), latents, atol=1e-5)


def test_prefix_decode_equals_the_start_of_the_full_decode(tiny_models, video):
    with torch.no_grad():
        latents = vae_ops.encode(tiny_models.vae, video)
        full = vae_ops.decode(tiny_models.vae, latents)
        prefix = vae_ops.decode(tiny_models.vae, latents, num_latent_frames=2)
    assert latents.shape == (1, 16, 3, 4, 4) and full.shape == (1, 3, 9, 32, 32)
    assert prefix.shape[2] == 5
    assert_close(prefix, full[:, :, :5], atol=1e-6)
    with pytest.raises(ValueError, match="num_latent_frames must be in 1..3"):
        vae_ops.decode(tiny_models.vae, latents, num_latent_frames=4)


def test_unclamped_decode_matches_and_passes_gradient_at_saturated_pixels(tiny_models, video):
    latents = (vae_ops.encode(tiny_models.vae, video).detach() * 4).requires_grad_(True)  # push pixels out of range
    unclamped = vae_ops.decode(tiny_models.vae, latents, clamp=False)
    with torch.no_grad():
        clamped = vae_ops.decode(tiny_models.vae, latents)
    assert_close(unclamped.clamp(-1, 1), clamped, atol=1e-5)
    saturated = unclamped.detach().abs() > 1
    assert saturated.any()
    (unclamped * saturated).sum().backward()
    assert latents.grad.abs().sum() > 0  # the clamped decode would give exactly zero here
    with pytest.raises(ValueError, match="tiled decoding always clamps"):
        vae_ops.decode(tiny_models.vae, latents, tiled=True, clamp=False)


def test_checkpointed_unclamped_decode_gives_the_same_values_and_gradients(tiny_models):
    latents = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    results = []
    for checkpoint in (False, True):
        leaf = latents.clone().requires_grad_(True)
        out = vae_ops.decode(tiny_models.vae, leaf, clamp=False, checkpoint=checkpoint)
        out.square().sum().backward()
        results.append((out.detach(), leaf.grad))
    assert_close(results[1][0], results[0][0], atol=1e-6)
    assert_close(results[1][1], results[0][1], atol=1e-5)
    assert results[0][1].abs().sum() > 0


def test_tiled_decode_uses_diffusers_tiles_and_restores_the_setting(tiny_models):
    """Tiling is diffusers' own; we check it engages only when asked, and that the setting is restored.

    (With random tiny weights the receptive field spans whole 32-pixel tiles, so tiled and plain outputs
    differ visibly; their closeness on real weights is diffusers' business.)
    """
    vae = copy.deepcopy(tiny_models.vae)
    latents = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = vae_ops.decode(vae, latents)
        assert torch.equal(vae_ops.decode(vae, latents, tiled=True), plain)  # default tiles exceed 64x64
        vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=16,
                          tile_sample_stride_width=16)
        tiled = vae_ops.decode(vae, latents, tiled=True)
        assert torch.equal(vae_ops.decode(vae, latents, tiled=False), plain)
    assert vae.use_tiling  # what the caller had set is restored
    assert tiled.shape == plain.shape == (1, 3, 5, 64, 64)
    assert torch.isfinite(tiled).all() and not torch.equal(tiled, plain)


def test_t5_encoding_trims_to_the_true_length_like_wan_pipeline(tiny_models):
    from diffusers import WanPipeline

    prompts = ["the egg is fried", "a deep frost settles on the car after an hour"]
    ours = encode_text(tiny_models.text, prompts, max_length=16)
    lengths = [len(tiny_models.text.tokenizer(p)["input_ids"]) for p in prompts]
    assert [t.shape[0] for t in ours] == lengths  # words + </s>
    pipe = WanPipeline(tokenizer=tiny_models.text.tokenizer, text_encoder=tiny_models.text.model,
                       vae=tiny_models.vae, transformer=tiny_models.dit, scheduler=None)
    with torch.no_grad():
        expected = pipe._get_t5_prompt_embeds(prompts, max_sequence_length=16, device=torch.device("cpu"))
    padded = torch.stack([pad_context(t, 16) for t in ours])
    assert_close(padded, expected, atol=1e-5)


def test_t5_truncation_and_bad_prompts(tiny_models):
    long_prompt = " ".join(["red"] * 40)
    (tokens,) = encode_text(tiny_models.text, [long_prompt], max_length=8)
    assert tokens.shape[0] == 8
    with pytest.raises(ValueError, match="non-empty strings"):
        encode_text(tiny_models.text, ["  "])
    with pytest.raises(ValueError, match="exceeds the fixed length"):
        pad_context(torch.zeros(9, 4), 8)
    assert clean_prompt("a  &amp;amp; b\n") == "a & b"

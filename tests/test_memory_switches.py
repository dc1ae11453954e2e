"""Memory features of the critic path that the cost model relies on: VLM checkpointing must really drop the
saved activations (on the frozen, eval-mode VLM) without changing a number, and the paper's sampled-frame
decode must decode each chosen latent frame alone."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_close
from revise_core import vae as vae_ops
from revise_core.critic import SelfCritic

INSTRUCTION = "make the car red"


def _frames(seed: int, count: int = 5) -> torch.Tensor:
    return torch.rand(count, 48, 64, 3, generator=torch.Generator().manual_seed(seed))


def _saved_bytes_and_results(vlm, checkpointing: bool):
    """Bytes autograd keeps outside checkpointed regions for one verdict, the logits and the pixel gradient."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    edited = _frames(1).requires_grad_(True)
    vlm.set_gradient_checkpointing(checkpointing)
    try:
        critic = SelfCritic(vlm)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            verdict = critic.verdict(_frames(2), edited, INSTRUCTION)
        verdict.delta.backward()
    finally:
        vlm.set_gradient_checkpointing(False)
    return sum(saved), verdict.delta.detach(), edited.grad


@pytest.mark.parametrize("family", ["vlm", "vila"])
def test_vlm_checkpointing_saves_activations_on_the_frozen_model_and_changes_nothing(tiny_models, family):
    vlm = getattr(tiny_models, family)
    assert not vlm.model.training  # the critic's VLM is frozen in eval mode, where transformers skips checkpointing
    bytes_off, delta_off, grad_off = _saved_bytes_and_results(vlm, False)
    bytes_on, delta_on, grad_on = _saved_bytes_and_results(vlm, True)
    assert bytes_on < 0.6 * bytes_off, (bytes_on, bytes_off)
    assert_close(delta_on, delta_off, atol=1e-6)
    assert_close(grad_on, grad_off, atol=1e-6)
    assert grad_off.abs().sum() > 0
    assert not any(m.training for m in vlm.model.modules())  # the eval mode is restored after the call


def test_sampled_latent_frames_are_spread_over_the_clip():
    assert vae_ops.sampled_latent_frames(5, 4) == [0, 1, 3, 4]
    assert vae_ops.sampled_latent_frames(21, 4) == [0, 7, 13, 20]
    assert vae_ops.sampled_latent_frames(2, 4) == [0, 1]  # never more frames than the clip has
    assert vae_ops.sampled_latent_frames(3, 1) == [0]
    assert [vae_ops.pixel_frame_of(i) for i in (0, 1, 4)] == [0, 4, 16]
    with pytest.raises(ValueError, match="at least one"):
        vae_ops.sampled_latent_frames(0, 4)


def test_decode_frames_decodes_each_latent_frame_alone(tiny_models):
    vae = tiny_models.vae
    latents = torch.randn(1, 16, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    indices = [0, 2, 3]
    results = []
    for checkpoint in (False, True):
        leaf = latents.clone().requires_grad_(True)
        out = vae_ops.decode_frames(vae, leaf, indices, checkpoint=checkpoint)
        out.square().sum().backward()
        results.append((out.detach(), leaf.grad))
    (out, grad), (out_ckpt, grad_ckpt) = results
    assert out.shape == (1, 3, 3, 32, 32)
    with torch.no_grad():  # diffusers' own decode of each single latent frame (which clamps)
        expected = torch.cat([vae.decode(latents[:, :, i:i + 1]).sample for i in indices], dim=2)
    assert_close(out.clamp(-1, 1), expected, atol=1e-5)
    assert_close(out_ckpt, out, atol=1e-6)
    assert_close(grad_ckpt, grad, atol=1e-5)
    assert grad[:, :, 1].abs().sum() == 0 and grad[:, :, indices].abs().sum() > 0  # frame 1 was not decoded
    with pytest.raises(ValueError, match="latent frame indices must be in 0..3"):
        vae_ops.decode_frames(vae, latents, [4])

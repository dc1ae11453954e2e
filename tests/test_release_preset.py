"""The `revise-official` preset on a ReViSE release folder: the sigma schedule, the guidance formula, the
frame selection and the null branch of the release, and an edit equal to an independent composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_close
from revise_core import edit as edit_cli
from revise_core import presets
from revise_core import vae as vae_ops
from revise_core.editor import ReviseEditor
from revise_core.model_sets import EditModels
from revise_core.sampler import SamplerConfig, initial_noise, make_scheduler, sample
from revise_core.text import encode_text, pad_context
from revise_core.video import VideoClip, resize_frames, write_video

INSTRUCTION = "make the car red"


class RecordingDiT(nn.Module):
    """Returns `cond_value` for the conditional context and `uncond_value` for the other; records timesteps."""

    def __init__(self, cond_value: float, uncond_value: float) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.values = (cond_value, uncond_value)
        self.timesteps: list[int] = []

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False):
        self.timesteps.append(int(timestep[0]))
        value = self.values[0] if encoder_hidden_states[0, 0, 0] > 0 else self.values[1]
        return (torch.full_like(hidden_states, value),)


def _contexts():
    return torch.ones(1, 3, 4), -torch.ones(1, 3, 4)


def test_release_sigmas_give_the_releases_integer_timesteps():
    dit = RecordingDiT(0.0, 0.0)
    cond, uncond = _contexts()
    sample(dit, cond, uncond, noise=torch.zeros(1, 16, 1, 2, 2),
           config=SamplerConfig(**presets.get_preset("revise-official").sampler))
    # Wan's FlowUniPCMultistepScheduler: linspace(0.999, 0, 41)[:-1], shifted by 5, times 1000, truncated
    sigmas = np.linspace(0.999, 0, 41)[:-1]
    expected = (5.0 * sigmas / (1 + 4.0 * sigmas) * 1000).astype(np.int64).tolist()
    assert dit.timesteps[::2] == expected and dit.timesteps[1::2] == expected  # cond then uncond per step
    assert dit.timesteps[0] == 999


@pytest.mark.parametrize("mode, expected", [("official", 2.0 + 3.0 * (2.0 - 0.5)), ("standard", 0.5 + 3.0 * 1.5)])
def test_guidance_formula(mode, expected):
    dit = RecordingDiT(2.0, 0.5)
    cond, uncond = _contexts()
    noise = torch.zeros(1, 16, 1, 2, 2)
    latents = sample(dit, cond, uncond, noise=noise, config=SamplerConfig(steps=1, scheduler="euler", shift=1.0,
                                                                           guidance_scale=3.0, guidance_mode=mode))
    scheduler = make_scheduler("euler", 1.0)
    scheduler.set_timesteps(1)
    step = float(scheduler.sigmas[1] - scheduler.sigmas[0])  # Euler: x + (σ_next − σ)·v
    assert_close(latents, torch.full_like(noise, step * expected), atol=1e-6)


def test_official_guidance_is_computed_in_fp32_from_half_precision_predictions():
    """The release casts both predictions to fp32 before guiding; the standard mode keeps the model's dtype."""
    dit = RecordingDiT(1.01, 0.33).to(torch.bfloat16)
    cond, uncond = _contexts()
    noise = torch.zeros(1, 16, 1, 2, 2)
    config = SamplerConfig(steps=1, scheduler="euler", shift=1.0, guidance_scale=3.0, guidance_mode="official")
    latents = sample(dit, cond, uncond, noise=noise, config=config)
    c, u = torch.tensor(1.01).bfloat16().float(), torch.tensor(0.33).bfloat16().float()
    scheduler = make_scheduler("euler", 1.0)
    scheduler.set_timesteps(1)
    step = float(scheduler.sigmas[1] - scheduler.sigmas[0])
    assert_close(latents, torch.full_like(noise, step * float(c + 3.0 * (c - u))), atol=1e-6)


def _numbered_video(path, count=20, height=72, width=128):
    """Frame i is a flat grey of level i/40, so each frame is recognisable after compression."""
    frames = (torch.arange(count).view(count, 1, 1, 1) / 40.0).expand(count, height, width, 3).clone()
    write_video(path, frames, 24)
    return frames


def test_cli_preset_selects_frames_1_to_17_for_the_vae_and_native_frame_0_for_the_vlm(tiny_dir, tmp_path,
                                                                                     monkeypatch):
    source = tmp_path / "source.mp4"
    _numbered_video(source)
    seen = {}
    encode = vae_ops.encode

    def spy_vae(vae, video):
        seen["vae"] = video.detach().clone()
        return encode(vae, video)

    from revise_core.vlm.vila import VilaModel

    vila_encode = VilaModel.encode

    def spy_vlm(self, frames, instruction, **kwargs):
        seen["vlm"] = frames.detach().clone()
        return vila_encode(self, frames, instruction, **kwargs)

    monkeypatch.setattr(vae_ops, "encode", spy_vae)
    monkeypatch.setattr(VilaModel, "encode", spy_vlm)
    out = tmp_path / "edited.mp4"
    assert edit_cli.main(["--models", str(tiny_dir / "revise_ckpt"), "--video", str(source), "--instruction",
                          INSTRUCTION, "--out", str(out), "--preset", "revise-official", "--steps", "2",
                          "--frames", "17", "--height", "64", "--width", "96"]) == 0
    vae_frames = (seen["vae"][0].permute(1, 2, 3, 0) + 1) / 2  # [T, H, W, 3]
    assert vae_frames.shape == (17, 64, 96, 3)
    levels = vae_frames[:, 32, 48, 0] * 40  # the frame's level
    assert torch.allclose(levels, torch.arange(1, 18, dtype=torch.float32), atol=0.4)  # frames 1..17
    assert seen["vlm"].shape == (1, 72, 128, 3)  # frame 0 at the video's own size
    assert float(seen["vlm"][0, 36, 64, 0]) * 40 == pytest.approx(0.0, abs=0.4)
    from revise_core.video import read_video

    written = read_video(out)
    assert written.frames.shape[0] == 17 and float(written.fps) == 8.0


def test_preset_edit_equals_an_independent_composition(tiny_dir):
    """Context of both branches, one DiT call and a 4-step sample with the same noise, composed by hand from
    the same modules (fp32)."""
    models = EditModels.load(tiny_dir / "revise_ckpt")
    settings = presets.edit_settings("revise-official", steps=4, height=64, width=96)
    frames = torch.rand(18, 72, 128, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        result = ReviseEditor(models).edit(frames, INSTRUCTION, settings, vlm_source=frames[:1])

        # --- by hand ---
        connector, vae, dit = models.connector, models.vae, models.dit
        clip = resize_frames(frames[1:18], 64, 96, "official")
        mu = vae.encode((clip.permute(3, 0, 1, 2)[None] * 2 - 1)).latent_dist.mode()
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
        latents = (mu - mean) / std
        patches = connector.visual_context_adapter.patch_embedding(latents).flatten(2).transpose(1, 2)
        adapter = connector.visual_context_adapter
        video = adapter.norm2(adapter.projection(adapter.norm1(patches)))[0]

        def heads(u):
            head = connector.vision_head(u[None])
            return connector.dm_adapter(head.reshape(-1, 1, head.shape[-1])).reshape(-1, video.shape[-1])

        bound = connector.boundary
        u = models.vlm.encode(frames[:1], INSTRUCTION)
        text = encode_text(models.text, [INSTRUCTION], max_length=512)[0]

        def context(u_tokens, t5):
            parts = [bound.img_st, video, bound.img_ed, bound.ipl_st, u_tokens, bound.ipl_ed, bound.prp_st, t5,
                     bound.prp_ed]
            full = torch.cat(parts)[:2560]
            return torch.cat([full, full.new_zeros(2560 - full.shape[0], full.shape[1])])[None]

        cond = context(heads(u), text)
        uncond = context(heads(connector.null.vlm), connector.null.text)
        scheduler = make_scheduler("unipc", 5.0)
        scheduler.set_timesteps(sigmas=np.linspace(0.999, 0, 5)[:-1])
        x = initial_noise(tuple(latents.shape), 1818)
        first_call = None
        for t in scheduler.timesteps:
            c = dit(hidden_states=x, timestep=t.expand(1), encoder_hidden_states=cond, return_dict=False)[0]
            n = dit(hidden_states=x, timestep=t.expand(1), encoder_hidden_states=uncond, return_dict=False)[0]
            first_call = c if first_call is None else first_call
            x = scheduler.step(c + 3.0 * (c - n), t, x, return_dict=False)[0]
        expected = x * std + mean

        ours_condition = ReviseEditor(models).condition(clip, INSTRUCTION, settings, vlm_source=frames[:1])
    assert ours_condition.cond.shape == cond.shape == (1, 2560, video.shape[-1])
    assert_close(ours_condition.cond, cond, atol=1e-5)
    assert_close(ours_condition.uncond, uncond, atol=1e-5)
    assert_close(ours_condition.uncond[0, : 2 + video.shape[0] + 2], cond[0, : 2 + video.shape[0] + 2], atol=1e-6)
    assert_close(result.latents, expected, atol=1e-5)
    assert float(first_call.abs().sum()) > 0
    assert pad_context(torch.zeros(3, 4), 5).shape == (5, 4)


def test_unknown_preset_and_settings_are_named():
    with pytest.raises(ValueError, match="unknown preset 'nope'; known presets: revise-official"):
        presets.get_preset("nope")
    with pytest.raises(ValueError, match=r"unknown settings \['stepz'\]"):
        presets.edit_settings("revise-official", stepz=3)
    assert isinstance(VideoClip, type)

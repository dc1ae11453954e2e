"""The Omni-Video 2 release's inference settings: its null branch (negative prompt, u = 2 tokens of 1e-6, the
source kept), its frame stride, its context padding, and the preset that gathers them."""

from __future__ import annotations

import pytest
import torch

from revise_core import presets
from revise_core.editor import EditSettings, ReviseEditor, assemble_condition, clip_stride
from revise_core.model_sets import EditModels
from revise_core.text import encode_text, pad_context
from revise_core.video import synthetic_clip


def test_negative_context_is_the_releases_null_branch(tiny_models):
    """Written out as omnivideo/modules/unified_model.py composes it for the null pass."""
    connector = tiny_models.connector
    torch.manual_seed(0)
    text = torch.randn(5, connector.config.context_dim)
    video = torch.randn(7, connector.config.context_dim)
    with torch.no_grad():
        null_u = torch.zeros(2, connector.config.vlm_dim) + 1e-6
        u = connector.vlm_proj(connector.vlm_norm(null_u))
        token = connector.boundary_token
        expected = torch.cat([u, token("prp_st"), text, token("prp_ed"), token("img_st"), video, token("img_ed")])
        assert torch.equal(connector.negative_context(text, video), expected)


def test_a_fixed_null_branch_refuses_a_negative_prompt(tiny_models):
    with pytest.raises(ValueError, match="null branch is fixed by its release"):
        tiny_models.release_connector.negative_context(torch.zeros(2, 32), torch.zeros(3, 32))


def test_condition_with_a_negative_prompt_and_the_releases_padding(tiny_models):
    models = EditModels(dit=tiny_models.dit, vae=tiny_models.vae, text=tiny_models.text, vlm=tiny_models.vlm,
                        connector=tiny_models.connector)
    clip = synthetic_clip(num_frames=9, height=64, width=64).frames
    negative = "blurry static"
    with torch.no_grad():
        condition = ReviseEditor(models).condition(clip, "make it red",
                                                   EditSettings(negative_prompt=negative, context_len=300))
        source = models.vae.encode(clip.permute(3, 0, 1, 2)[None] * 2 - 1).latent_dist.mode()
        plain = assemble_condition(models.connector, models.text, models.vae, source,
                                   _vlm_condition(models, clip), context_len=300)
        video = models.connector.adapt_video(condition.source_latents)[0]
        negative_tokens = torch.cat(encode_text(models.text, [negative], max_length=512))
        expected = pad_context(models.connector.negative_context(negative_tokens, video), 300)
    assert condition.cond.shape == condition.uncond.shape == (1, 300, models.connector.config.context_dim)
    torch.testing.assert_close(condition.uncond[0], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(condition.cond, plain.cond, rtol=0, atol=1e-5)  # the negative prompt leaves cond alone
    assert not torch.allclose(plain.uncond, condition.uncond)  # and changes the null branch


def _vlm_condition(models, clip):
    from revise_core.editor import encode_instruction

    return encode_instruction(models.vlm, clip, "make it red", EditSettings())


@pytest.mark.parametrize("available, expected", [(130, 3), (123, 3), (122, 2), (82, 2), (81, 1), (30, 1)])
def test_frame_stride_is_lowered_for_short_videos_as_the_release_does(available, expected):
    # read_video_frames: while total < frame_num * sampling_rate + skip: sampling_rate -= 1
    assert clip_stride(available, 41, 3) == expected


def test_omnivideo2_official_preset_has_the_release_scripts_values():
    settings = presets.edit_settings("omnivideo2-official")
    sampler = settings.sampler
    assert (sampler.scheduler, sampler.steps, sampler.shift, sampler.guidance_scale, sampler.guidance_mode,
            sampler.sigma_schedule, sampler.seed) == ("unipc", 40, 5.0, 3.0, "standard", "official", 1818)
    assert (settings.num_frames, settings.height, settings.width, settings.frame_stride, settings.skip_frames) == (
        41, 480, 832, 3, 0)
    assert (settings.reasoning, settings.vlm_frames, settings.context_len) == ("caption", 6, 6272)
    assert settings.negative_prompt.startswith("overly vivid colors, overexposed, static")
    assert presets.get_preset("omnivideo2-official").output_fps == 8.0


def test_edit_demo_runs_the_omnivideo2_preset_with_a_qwen3_vl(tmp_path):
    from revise_core import edit
    from revise_core.video import read_video

    out = tmp_path / "edited.mp4"
    assert edit.main(["--demo", "qwen3", "--preset", "omnivideo2-official", "--out", str(out)]) == 0
    clip = read_video(out)
    assert clip.frames.shape[0] == 41 and float(clip.fps) == 8.0


# --- the Omni-Video 2 release folder -------------------------------------------------------------------

@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from revise_core.testing.omnivideo2 import write_native_models

    return write_native_models(tmp_path_factory.mktemp("ov2"))


def test_the_omnivideo2_release_folder_loads_as_downloaded(release):
    """transformer/pytorch_model.pt (DiT + connector), special_tokens.pkl, Wan's umT5 / tokenizer / VAE, and
    the one Qwen3-VL folder inside: no models.json; every size read off the tensors."""
    import json

    from revise_core import model_sets
    from revise_core.dit import load_dit

    assert model_sets.detect(release["release"]) == "omnivideo2 release"
    models = EditModels.load(release["release"])
    assert type(models.vlm).__name__ == "Qwen3VLModel"
    config = models.connector.config
    assert (config.max_context_len, config.boundary_token_len, config.vlm_dim) == (6272, 1, models.vlm.hidden_size)
    reference = load_dit(release["omnivideo2"], config=json.loads(release["dit_config"].read_text()))
    for key, value in reference.state_dict().items():
        assert torch.equal(models.dit.state_dict()[key], value), key
    encoders = EditModels.load(release["release"], with_dit=False)
    assert encoders.dit is None


def test_the_release_folders_vlm_must_be_unambiguous(release, tmp_path):
    import shutil

    from revise_core.checkpoints import ModelFileNotFoundError

    folder = tmp_path / "ov2"
    shutil.copytree(release["release"], folder)
    shutil.copytree(folder / "Qwen3-VL-tiny", folder / "Qwen3-VL-other")
    with pytest.raises(ModelFileNotFoundError, match="2 Qwen3-VL folders"):
        EditModels.load(folder, with_dit=False)
    models = EditModels.load(folder, with_dit=False, vlm=folder / "Qwen3-VL-other")  # named explicitly
    assert models.vlm.source.endswith("Qwen3-VL-other")
    shutil.rmtree(folder / "Qwen3-VL-tiny")
    shutil.rmtree(folder / "Qwen3-VL-other")
    with pytest.raises(ModelFileNotFoundError, match="no Qwen3-VL folder.*--vlm"):
        EditModels.load(folder, with_dit=False)
    (folder / "Wan2.1_VAE.pth").unlink()
    with pytest.raises(ModelFileNotFoundError, match="missing Wan2.1_VAE.pth"):
        EditModels.load(folder, with_dit=False, vlm=release["release"] / "Qwen3-VL-tiny")


def test_convert_reads_the_omnivideo2_release_folder(release, tmp_path):
    from safetensors import safe_open

    from revise_core import conversion

    out = conversion.convert(release["release"], tmp_path / "ov2.safetensors")
    reference = conversion.convert(release["omnivideo2"], tmp_path / "file.safetensors",
                                config=str(release["dit_config"]))
    with safe_open(str(out), "pt") as a, safe_open(str(reference), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_the_cli_runs_the_release_folder_with_its_preset_on_a_real_file(release, tmp_path, monkeypatch):
    """Not the demo path: a 130-frame file, the clip at a stride of 3 (41 x 3 <= 130), and the VLM's 6 frames
    sampled over the whole file at its own size and frame rate, as the release's processor reads the file."""
    from revise_core import edit, editor
    from revise_core.video import read_video, synthetic_clip, write_video
    from revise_core.vlm import qwen3_vl

    source = synthetic_clip(num_frames=130, height=48, width=80)
    write_video(tmp_path / "in.mp4", source.frames, source.fps)
    strides, videos = [], []
    original_stride, original_build = editor.clip_stride, qwen3_vl.Qwen3VLModel.build_inputs
    monkeypatch.setattr(editor, "clip_stride", lambda *a: strides.append(original_stride(*a)) or strides[-1])

    def build(self, messages, videos_=(), **kwargs):
        videos.extend(videos_)
        return original_build(self, messages, videos_, **kwargs)

    monkeypatch.setattr(qwen3_vl.Qwen3VLModel, "build_inputs", build)
    out = tmp_path / "out.mp4"
    assert edit.main(["--models", str(release["release"]), "--video", str(tmp_path / "in.mp4"), "--instruction",
                      "make it red", "--out", str(out), "--preset", "omnivideo2-official", "--height", "64",
                      "--width", "96", "--steps", "1", "--caption-tokens", "2"]) == 0
    assert strides and set(strides) == {3}  # the command line's early check and the edit fit the same clip
    expected = torch.linspace(0, 129, 6).round().long().tolist()
    assert videos and all(v.indices == expected for v in videos if v.frames.shape[0] == 6)
    assert any(v.frames.shape[0] == 6 and tuple(v.frames.shape[2:]) == (48, 80) for v in videos)  # native size
    assert all(v.fps == float(source.fps) for v in videos)
    clip = read_video(out)
    assert clip.frames.shape[0] == 41 and float(clip.fps) == 8.0


def test_mismatched_options_are_refused_clearly(tiny_dir, release, tmp_path, capsys):
    from revise_core import edit
    from revise_core.cli import run
    from revise_core.video import synthetic_clip, write_video

    with pytest.raises(ValueError, match="names the VLM of an Omni-Video 2 release folder"):
        EditModels.load(tiny_dir, vlm=release["release"] / "Qwen3-VL-tiny")
    source = synthetic_clip(num_frames=12, height=48, width=64)
    write_video(tmp_path / "in.mp4", source.frames, source.fps)
    argv = ["--models", str(tiny_dir / "revise_ckpt"), "--video", str(tmp_path / "in.mp4"), "--instruction", "red",
            "--out", str(tmp_path / "out.mp4"), "--preset", "omnivideo2-official", "--height", "64", "--width", "64",
            "--frames", "9"]
    assert run(edit.main, argv) == 2
    assert "does not take (its null branch is fixed by its release)" in capsys.readouterr().err

"""The whole edit on tiny models: shapes, determinism, reasoning modes, bad inputs, the CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from revise_core import edit as edit_cli
from revise_core.chat_text import EmptyInstructionError
from revise_core.editor import EditSettings, ReviseEditor
from revise_core.model_sets import EditModels
from revise_core.sampler import SamplerConfig
from revise_core.video import VideoError, read_video, synthetic_clip

INSTRUCTION = "what will the ice cube look like after an hour in the sun ?"


@pytest.fixture(scope="module")
def editor(tiny_dir) -> ReviseEditor:
    return ReviseEditor(EditModels.load(tiny_dir))


def _settings(seed: int = 0, **kwargs) -> EditSettings:
    return EditSettings(sampler=SamplerConfig(steps=3, seed=seed), caption_tokens=8, **kwargs)


def test_edit_returns_a_video_of_the_source_shape(editor):
    clip = synthetic_clip(num_frames=10, height=64, width=96)
    result = editor.edit(clip.frames, INSTRUCTION, _settings())
    assert result.frames.shape == (9, 64, 96, 3)  # 10 frames trimmed to 4k+1
    assert result.latents.shape == (1, 16, 3, 8, 12)
    assert 0 <= result.frames.min() and result.frames.max() <= 1
    assert {"vae_encode", "text_encode", "vlm_encode", "sample", "vae_decode", "total"} <= result.timings.keys()
    assert result.reasoning == ""


def test_same_seed_same_edit_other_seed_other_edit(editor):
    frames = synthetic_clip(9, 64, 64).frames
    first = editor.edit(frames, INSTRUCTION, _settings(seed=1))
    assert torch.equal(first.latents, editor.edit(frames, INSTRUCTION, _settings(seed=1)).latents)
    assert not torch.equal(first.latents, editor.edit(frames, INSTRUCTION, _settings(seed=2)).latents)


def test_instruction_and_source_change_the_condition(editor):
    frames = synthetic_clip(9, 64, 64).frames
    settings = _settings()
    a = editor.condition(frames, INSTRUCTION, settings)
    b = editor.condition(frames, "make the car red", settings)
    assert not torch.equal(a.cond, b.cond)
    assert torch.equal(a.uncond, b.uncond)  # the null condition keeps only the source
    c = editor.condition(synthetic_clip(9, 64, 64, seed=5).frames, INSTRUCTION, settings)
    assert not torch.equal(a.uncond, c.uncond)
    assert a.cond.shape == (1, editor.models.connector.config.max_context_len, 32)


def test_caption_reasoning_mode_reports_its_reasoning(editor):
    result = editor.edit(synthetic_clip(9, 64, 64).frames, INSTRUCTION, _settings(reasoning="caption"))
    assert result.reasoning.startswith("source:") and "\ntarget:" in result.reasoning


def test_bad_inputs(editor):
    frames = synthetic_clip(9, 64, 64).frames
    with pytest.raises(EmptyInstructionError, match="the edit instruction is empty"):
        editor.edit(frames, " ", _settings())
    with pytest.raises(VideoError, match="3 frames, at least 5"):
        editor.edit(frames[:3], INSTRUCTION, _settings())
    with pytest.raises(VideoError, match="0 frames"):
        editor.edit(frames[:0], INSTRUCTION, _settings())
    with pytest.raises(ValueError, match="reasoning must be one of"):
        EditSettings(reasoning="think")


def test_mismatched_model_set_is_refused(editor, tiny_dir):
    from revise_core.connector import Connector, ConnectorConfig

    models = copy.copy(editor.models)
    models.connector = Connector(ConnectorConfig(vlm_dim=48, context_dim=32, adapter_hidden_dim=64,
                                                 max_context_len=256))
    with pytest.raises(ValueError, match="mismatched model set: connector vlm_dim=48 but the VLM's hidden size is 64"):
        ReviseEditor(models)
    (tiny_dir / "broken").mkdir(exist_ok=True)
    (tiny_dir / "broken" / "models.json").write_text(json.dumps({"dit": "x"}))
    with pytest.raises(ValueError, match="missing entries"):
        EditModels.load(tiny_dir / "broken")


def test_cli_demo_writes_a_readable_video(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert edit_cli.main(["--demo", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == str(out) and "noise" in summary["note"]
    assert read_video(out).frames.shape == (9, 64, 64, 3)


def test_cli_edits_a_file(tiny_dir, tmp_path):
    source = tmp_path / "in.mp4"
    from revise_core.video import write_video

    write_video(source, synthetic_clip(13, 64, 64).frames, 8)
    out = tmp_path / "out.mp4"
    assert edit_cli.main(["--models", str(tiny_dir), "--video", str(source), "--instruction", INSTRUCTION,
                          "--out", str(out), "--steps", "2", "--frames", "9", "--scheduler", "euler"]) == 0
    assert read_video(out).num_frames == 9


def test_cli_window_streams_a_file_edit_and_refuses_what_needs_the_whole_clip(tiny_dir, tmp_path, capsys):
    from revise_core.video import write_video

    source = write_video(tmp_path / "in.mp4", synthetic_clip(14, 64, 64).frames, 8)  # 13 frames: 4 latent frames
    common = ["--models", str(tiny_dir), "--video", str(source), "--instruction", INSTRUCTION, "--steps", "1",
              "--scheduler", "euler", "--json"]
    # 3 windows, each with its own VLM pass; auto: the budget's
    for window in (["--window", "2", "--window-overlap", "1", "--window-vlm"], ["--window"]):
        out = tmp_path / f"out-{len(window)}.mp4"
        assert edit_cli.main([*common, "--out", str(out), *window]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["frames"] == [13, 64, 64, 3] and ("vlm_windows" in summary["timings_s"]) == (len(window) == 5)
        assert read_video(out).num_frames == 13
    with pytest.raises(ValueError, match="needs temporal windows"):
        edit_cli.main([*common, "--out", str(tmp_path / "x.mp4"), "--window-vlm"])
    with pytest.raises(ValueError, match="--best-of scores whole edits held in memory"):
        edit_cli.main([*common, "--out", str(tmp_path / "x.mp4"), "--window", "--best-of", "2"])


def test_cli_demo_revise_edits_the_release_folder_with_the_official_preset(capsys, monkeypatch):
    from revise_core import video

    written = []
    write = video.write_video
    monkeypatch.setattr(video, "write_video", lambda path, frames, fps, **kw: written.append(kw) or write(path, frames,
                                                                                                       fps, **kw))
    assert edit_cli.main(["--demo", "revise", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == [17, 64, 96, 3]  # the preset's 17 frames (a small frame on the CPU)
    assert written[-1] == {"quantization": "truncate"}  # the release's (x * 255).type(torch.uint8)


def test_cli_requires_inputs_without_demo(capsys):
    with pytest.raises(SystemExit):
        edit_cli.main(["--video", "x.mp4"])
    assert "--models" in capsys.readouterr().err

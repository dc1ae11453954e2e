"""Command lines: expected errors are one line naming the file or field, exit status 2, no traceback (unless
--debug), and the user's inputs are checked before any model is loaded (here the model folder does not
even exist, so reaching it would be a different error)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from revise_core import cli
from revise_core.video import synthetic_clip, write_video

NO_MODELS = "/nonexistent/models"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "clip.mp4"
    write_video(path, synthetic_clip(9, 64, 64).frames)
    return path


def _one_line_error(capsys, *expected: str) -> str:
    """The error is the last line of stderr and the only one starting with "error:"; no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1 and lines[-1] == errors[0], err[-2000:]
    for text in expected:
        assert text in errors[0], (text, errors[0])
    return errors[0]


def test_python_m_prints_one_line_and_exits_2_and_debug_shows_the_traceback(tmp_path):
    args = [sys.executable, "-m", "revise_core.edit", "--models", NO_MODELS, "--video", str(tmp_path / "missing.mp4"),
            "--instruction", "make it red", "--out", str(tmp_path / "out.mp4")]
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: video file not found: {tmp_path / 'missing.mp4'}"] or (
        len(lines) == 1 and "missing.mp4" in lines[0]), result.stderr
    debug = subprocess.run(args + ["--debug"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_edit_checks_instruction_output_and_clip_before_loading(clip, tmp_path, capsys):
    from revise_core import edit

    base = ["--models", NO_MODELS, "--video", str(clip), "--out", str(tmp_path / "out.mp4")]
    assert cli.run(edit.main, base + ["--instruction", "   "]) == 2
    _one_line_error(capsys, "--instruction is empty")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cli.run(edit.main, ["--models", NO_MODELS, "--video", str(clip), "--instruction", "red",
                               "--out", str(blocker / "out.mp4")]) == 2
    _one_line_error(capsys, str(blocker), "is a file")
    assert cli.run(edit.main, base + ["--instruction", "red", "--frames", "8"]) == 2
    _one_line_error(capsys, "4k+1")
    assert cli.run(edit.main, base + ["--instruction", "red", "--steps", "0"]) == 2
    _one_line_error(capsys, "steps must be >= 1")


def test_a_full_disk_is_one_line_naming_the_file(monkeypatch, tmp_path, capsys):
    from revise_core import edit, video

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(video, "write_video", full)
    assert cli.run(edit.main, ["--demo", "--out", str(tmp_path / "edited.mp4")]) == 2
    _one_line_error(capsys, "No space left on device", "free some space")


def test_critic_checks_videos_before_loading_the_vlm(clip, tmp_path, capsys):
    from revise_core.critic import __main__ as critic_cli

    base = ["--models", NO_MODELS, "--source", str(clip), "--instruction", "red"]
    assert cli.run(critic_cli.main, base + ["--edited", str(tmp_path / "nope.mp4")]) == 2
    _one_line_error(capsys, "nope.mp4")
    assert cli.run(critic_cli.main, base + ["--edited", str(clip)]) == 2
    _one_line_error(capsys, "model folder not found: /nonexistent/models")  # only now the model set is read


def test_trainer_validates_the_manifest_before_loading(tmp_path, capsys):
    from trainer import uso

    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"source": "a.mp4"}\nnot json\n')
    assert cli.run(uso.main, ["--manifest", str(manifest), "--models", NO_MODELS,
                              "--output-dir", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, str(manifest), "2 problem(s): - line 1: missing", "; - line 2: not JSON")


def test_rve_bench_and_dataset_commands(tmp_path, capsys):
    from revise_core.data.__main__ import main as data_main
    from revise_core.evaluation import rve

    assert cli.run(rve.main, ["--manifest", str(tmp_path / "none.jsonl"), "--predictions", str(tmp_path),
                              "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, "none.jsonl")
    assert cli.run(data_main, ["shots", "--video", str(tmp_path / "none.mp4")]) == 2
    _one_line_error(capsys, "none.mp4")
    (tmp_path / "ok.jsonl").write_text(json.dumps({"id": "a", "source": "a.mp4", "instruction": "x"}) + "\n")
    assert cli.run(rve.main, ["--manifest", str(tmp_path / "ok.jsonl"), "--predictions", str(tmp_path / "gone"),
                              "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys)


def test_an_output_that_is_an_input_file_is_refused_before_anything_is_written(tmp_path, capsys):
    """The user's source video, spelled the same, through `..`, or through a symlink; convert over its source."""
    from revise_core import convert, edit
    from revise_core.cli import run
    from revise_core.video import synthetic_clip, write_video

    video = write_video(tmp_path / "clip.mp4", synthetic_clip(9, 64, 64).frames, 8)
    before = video.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.mp4").symlink_to(video)
    for out in (video, tmp_path / "sub" / ".." / "clip.mp4", tmp_path / "link.mp4"):
        status = run(edit.main, ["--models", str(tmp_path), "--video", str(video), "--instruction", "make it red",
                                 "--out", str(out)])
        error = capsys.readouterr().err
        assert status == 2 and "is the input file" in error and error.count("\n") == 1, error
    assert video.read_bytes() == before
    weights = tmp_path / "dit.safetensors"
    weights.write_bytes(b"not really weights")
    assert run(convert.main, [str(weights), str(tmp_path / "sub" / ".." / "dit.safetensors")]) == 2
    assert "is the input file" in capsys.readouterr().err and weights.read_bytes() == b"not really weights"


@pytest.mark.parametrize("flags, message", [
    (["--height", "100000"], "height must be one of the multiples of 32 from 32 to 4096"),
    (["--frames", "-3"], "num_frames must be 4k+1"),
    (["--guidance", "nan"], "guidance_scale must be a finite number"),
    (["--guidance", "inf"], "guidance_scale must be a finite number"),
    (["--shift", "nan"], "shift must be a finite number"),
])
def test_sizes_and_numbers_out_of_range_are_one_line_errors(flags, message, tmp_path, capsys):
    from revise_core import edit
    from revise_core.cli import run
    from revise_core.video import synthetic_clip, write_video

    video = write_video(tmp_path / "clip.mp4", synthetic_clip(9, 64, 64).frames, 8)
    status = run(edit.main, ["--models", str(tmp_path), "--video", str(video), "--instruction", "make it red",
                             "--out", str(tmp_path / "out.mp4"), *flags])
    error = capsys.readouterr().err
    assert status == 2 and message in error and error.count("\n") == 1, error


def test_parameter_counts_read_in_human_units():
    from revise_core.conversion import count_in_units

    counts = (812, 999, 1_000, 9_600, 999_499, 999_600, 3_100_000, 999_999_999, 1_420_000_000)
    assert [count_in_units(n) for n in counts] == ["812", "999", "1 K", "9.6 K", "999 K", "1 M", "3.1 M", "1 B", "1.42 B"]

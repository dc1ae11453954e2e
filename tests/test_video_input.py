"""Video input: decode only what is needed, upright frames, one clear sentence for every unusable file;
manifests that validate every field and every frame; ids that can never write outside a folder."""

from __future__ import annotations

import json
import logging
import re
import wave
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from revise_core import video
from revise_core.manifest import ManifestError, read_manifest


def _write(path, frames: np.ndarray, *, rate=8, rotation=None, faststart=False, pts=None):
    """uint8 frames [T, H, W, 3] as H.264; optional display rotation, front-loaded index, explicit pts."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if pts is not None:
            stream.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[index], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _gradient_clip(count: int, height: int, width: int) -> np.ndarray:
    rows, cols = np.meshgrid(np.linspace(0, 255, height), np.linspace(0, 255, width), indexing="ij")
    base = np.stack([cols, rows, np.full_like(rows, 128)], axis=-1)
    return np.stack([np.roll(base, 3 * t, axis=1) for t in range(count)]).astype(np.uint8)


def test_decoding_stops_early_and_fits_each_frame_as_the_whole_clip_would(tmp_path):
    path = _write(tmp_path / "clip.mp4", _gradient_clip(12, 48, 80))
    whole = video.read_video(path)
    fitted = video.read_video(path, max_frames=5, size=(32, 32), resize="crop")
    expected = video.conform(whole.frames, num_frames=5, height=32, width=32, resize="crop")
    assert fitted.frames.shape == (5, 32, 32, 3) and torch.equal(fitted.frames, expected)
    strided = video.read_video(path, stride=3, size=(32, 64), resize="pad")
    assert torch.equal(strided.frames, video.resize_frames(whole.frames[::3], 32, 64, "pad"))


def test_reading_stops_before_a_damaged_tail(tmp_path):
    path = _write(tmp_path / "cut.mp4", _gradient_clip(40, 48, 64), faststart=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])  # the end of the file is lost
    assert video.read_video(path, max_frames=3).num_frames == 3  # never decoded what it did not need
    with pytest.raises(video.VideoError, match=f"{path}: truncated"):
        video.read_video(path)
    with pytest.raises(video.VideoError, match="truncated"):
        video.count_frames(path)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_rotation_is_applied(tmp_path, rotation):
    clip = _gradient_clip(3, 32, 64)
    clip[:, :, :16] = 255  # a white band on the left of the stored frame
    path = _write(tmp_path / "phone.mp4", clip, rotation=rotation)
    frames = video.read_video(path).frames
    stored = video.read_video(_write(tmp_path / "plain.mp4", clip)).frames
    turns = round(rotation / 90) % 4
    assert frames.shape[1:3] == ((64, 32) if turns % 2 else (32, 64))
    assert torch.equal(frames, torch.rot90(stored, turns, dims=(1, 2)))


def test_variable_frame_rate_is_reported(tmp_path, caplog):
    path = _write(tmp_path / "vfr.mp4", _gradient_clip(6, 32, 32), pts=[0, 100, 200, 600, 700, 800])
    with caplog.at_level(logging.WARNING, logger="revise_core.video"):
        video.read_video(path)
    assert "variable frame rate" in caplog.text


def test_every_unusable_file_gets_one_clear_sentence(tmp_path):
    folder = tmp_path / "a-folder.mp4"
    folder.mkdir()
    audio = tmp_path / "voice.wav"
    with wave.open(str(audio), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(b"\0\0" * 800)
    single = _write(tmp_path / "one.mp4", _gradient_clip(1, 32, 32))
    cases = {folder: "is a folder, not a video file", tmp_path / "absent.mp4": "video file not found",
             audio: "has no video stream (it holds audio)"}
    for path, message in cases.items():
        with pytest.raises(video.VideoError, match=re.escape(message)) as error:
            video.read_video(path)
        assert "\n" not in str(error.value)
    with pytest.raises(video.VideoError, match="has 1 frames, at least 5 are needed"):
        video.conform(video.read_video(single).frames)


def _manifest(tmp_path, rows: list) -> str:
    clip = _write(tmp_path / "a.mp4", _gradient_clip(6, 32, 32))
    _write(tmp_path / "b.mp4", _gradient_clip(6, 32, 32))
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    assert clip.is_file()
    return path


def test_manifest_validates_every_field_and_lists_every_problem(tmp_path):
    good = {"source": "a.mp4", "target": "b.mp4", "instruction": "make it red"}
    path = _manifest(tmp_path, [
        good,
        good,  # a repeated row without ids
        good | {"instruction": 5},
        good | {"instruction": "  "},
        good | {"id": "../../escape"},
        good | {"id": 7},
        good | {"source": ["a.mp4"]},
        good | {"id": "ok-1"},
        good | {"id": "ok-1", "instruction": "other"},
    ])
    with pytest.raises(ManifestError) as error:
        read_manifest(path)
    message = str(error.value)
    for expected in ("line 2: repeats line 1", "line 3: these fields must be strings: instruction (int)",
                     "line 4: missing or empty field(s) ['instruction']",
                     "line 5: id '../../escape' must be 1-128 letters", "line 6: these fields must be strings: id (int)",
                     "line 7: these fields must be strings: source (list)", "line 9: duplicate id 'ok-1'"):
        assert expected in message, expected
    assert "line 8" not in message and message.startswith(f"{path}: 7 problem(s)")


def test_manifest_checks_the_real_frame_count(tmp_path):
    path = _manifest(tmp_path, [{"source": "a.mp4", "target": "cut.mp4", "instruction": "make it red"}])
    cut = _write(tmp_path / "cut.mp4", _gradient_clip(40, 48, 64), faststart=True)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 2 // 3])
    with pytest.raises(ManifestError, match=r"line 1 \(target\): .*cut.mp4: truncated"):
        read_manifest(path, min_frames=5)


def test_a_sample_id_can_never_write_outside_the_output_folder(tmp_path):
    from revise_core.evaluation.protocol import prediction_path

    assert prediction_path(tmp_path, "rave-0001") == tmp_path / "rave-0001.mp4"
    for bad in ("../../x", "/etc/x", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="sample id"):
            prediction_path(tmp_path, bad)

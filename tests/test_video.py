"""Video files and the frame-count / size policy."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from revise_core import video


def test_write_then_read_round_trip(tmp_path):
    clip = video.synthetic_clip(num_frames=9, height=64, width=96)
    path = video.write_video(tmp_path / "clip.mp4", clip.frames, clip.fps)
    back = video.read_video(path)
    assert back.frames.shape == (9, 64, 96, 3) and back.fps == Fraction(16)
    assert (back.frames - clip.frames).abs().mean() < 0.02  # h264 at crf 19
    assert video.read_video(path, max_frames=4).num_frames == 4
    strided = video.read_video(path, stride=2)
    assert strided.num_frames == 5 and strided.fps == Fraction(8)


def test_unreadable_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    with pytest.raises(video.VideoError, match=f"{bad}: unreadable video"):
        video.read_video(bad)
    with pytest.raises(video.VideoError, match="not found"):
        video.read_video(tmp_path / "absent.mp4")


def test_video_without_frames_is_rejected(tmp_path):
    import av

    path = tmp_path / "empty.mkv"
    with av.open(str(path), mode="w") as container:  # a header, no frames
        stream = container.add_stream("mpeg4", rate=16)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    with pytest.raises(video.VideoError, match="no decodable frames|unreadable"):
        video.read_video(path)


def test_frame_counts():
    assert [video.valid_frame_count(n) for n in (1, 4, 5, 8, 9, 33)] == [1, 1, 5, 5, 9, 33]
    assert [video.valid_frame_count(n, "pad") for n in (1, 2, 5, 6)] == [1, 5, 5, 9]
    assert video.latent_frames(81) == 21
    with pytest.raises(video.VideoError, match="4k\\+1"):
        video.latent_frames(80)


def test_conform_rejects_empty_and_short_clips():
    with pytest.raises(video.VideoError, match="0 frames"):
        video.conform(torch.zeros(0, 64, 64, 3))
    with pytest.raises(video.VideoError, match="3 frames, at least 5"):
        video.conform(torch.zeros(3, 64, 64, 3))
    with pytest.raises(video.VideoError, match="frame_policy='pad'"):
        video.conform(torch.zeros(9, 64, 64, 3), num_frames=17)
    with pytest.raises(video.VideoError, match="\\[T, H, W, 3\\]"):
        video.conform(torch.zeros(9, 3, 64, 64))


def test_conform_frames_and_padding_by_repetition():
    frames = torch.rand(10, 64, 64, 3)
    assert video.conform(frames).shape[0] == 9
    padded = video.conform(frames, num_frames=13, frame_policy="pad")
    assert padded.shape[0] == 13 and torch.equal(padded[12], frames[9])
    with pytest.raises(video.VideoError, match="4k\\+1"):
        video.conform(frames, num_frames=8)


def test_size_policies_never_distort_unless_asked():
    frames = torch.zeros(5, 64, 128, 3)
    frames[:, :, 32:96] = 1.0  # a centred white square of 64x64 in a 64x128 frame
    cropped = video.conform(frames, height=64, width=64, resize="crop")
    assert cropped.shape == (5, 64, 64, 3) and cropped.mean() > 0.99  # the square fills the crop
    padded = video.conform(frames, height=64, width=64, resize="pad")
    assert padded.shape == (5, 64, 64, 3)
    assert padded[:, :16].max() == 0 and padded[:, 48:].max() == 0  # letterbox bars above and below
    stretched = video.conform(frames, height=64, width=64, resize="stretch")
    assert 0.4 < stretched.mean() < 0.6  # the square was squeezed to half the width
    assert video.conform(torch.rand(5, 70, 100, 3)).shape[1:3] == (64, 96)  # rounded down to 32
    with pytest.raises(video.VideoError, match="multiples of 32"):
        video.conform(frames, height=48, width=64)
    with pytest.raises(ValueError, match="resize policy"):
        video.conform(frames, resize="squash")


def test_model_space_round_trip():
    frames = torch.rand(5, 32, 32, 3)
    model = video.to_model_space(frames)
    assert model.shape == (1, 3, 5, 32, 32) and model.min() >= -1 and model.max() <= 1
    assert torch.allclose(video.from_model_space(model), frames, atol=1e-6)

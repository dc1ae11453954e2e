"""Video files and the frame-count / size policy."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
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


# --- the release's frame arithmetic ----------------------------------------------------------------

def _frames8(count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """8-bit frames as decoded from a video file: k / 255 in float32."""
    pixels = torch.randint(0, 256, (count, height, width, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return pixels.float() / 255


@pytest.mark.parametrize("size, target", [((90, 150), (64, 128)), ((150, 90), (64, 96)), ((64, 128), (64, 128)),
                                          ((40, 50), (64, 96))])
def test_official_resize_is_pil_on_8_bit_frames_bit_for_bit(size, target):
    """generative.py transform_image_to_tensor: CenterCrop((h, int(h * r)) or (int(w / r), w)) with torchvision's
    rounding of the offsets, PIL bilinear to the target, ToTensor. Written out with PIL calls here."""
    from PIL import Image

    frames = _frames8(2, *size)
    height, width = target
    ratio = width / height
    src_h, src_w = size
    crop_h, crop_w = (int(src_w / ratio), src_w) if src_w < src_h * ratio else (src_h, int(src_h * ratio))
    top, left = round((src_h - crop_h) / 2.0), round((src_w - crop_w) / 2.0)
    expected = []
    for frame in frames:
        image = Image.fromarray((frame * 255).round().to(torch.uint8).numpy()).crop((left, top, left + crop_w,
                                                                                     top + crop_h))
        expected.append(torch.from_numpy(np.array(image.resize((width, height), Image.BILINEAR))).float() / 255)
    ours = video.resize_frames(frames, height, width, "official")
    assert torch.equal(ours, torch.stack(expected))


def test_official_resize_of_frames_with_a_gradient_is_differentiable_and_close():
    rows, cols = torch.meshgrid(torch.linspace(0, 1, 90), torch.linspace(0, 1, 150), indexing="ij")
    smooth = ((torch.stack([cols, rows, (rows + cols) / 2], dim=-1) * 255).round() / 255)[None].repeat(2, 1, 1, 1)
    exact = video.resize_frames(smooth, 64, 128, "official")
    frames = smooth.clone().requires_grad_(True)
    differentiable = video.resize_frames(frames, 64, 128, "official")
    differentiable.sum().backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0
    assert 0 < (differentiable - exact).abs().max() <= 1.5 / 255  # PIL's 8-bit rounding, no more
    assert torch.equal(video.resize_frames(smooth, 64, 128, "official", preprocessing="differentiable"),
                       differentiable.detach())
    with pytest.raises(ValueError, match="cannot carry the gradient"):
        video.resize_frames(frames, 64, 128, "official", preprocessing="exact")
    assert video.preprocessing_for(smooth, frames) == "differentiable"
    with torch.no_grad():
        assert video.preprocessing_for(frames) == "exact"  # no gradient flows: data


def test_quantization_rounds_or_truncates_as_asked():
    frames = torch.tensor([0.0, 0.5, 254.6 / 255, 1.0, 1.3, -0.2]).view(1, 1, 6, 1).expand(1, 1, 6, 3)
    assert video.quantize(frames, "round")[0, 0, :, 0].tolist() == [0, 128, 255, 255, 255, 0]
    assert video.quantize(frames, "truncate")[0, 0, :, 0].tolist() == [0, 127, 254, 255, 255, 0]
    with pytest.raises(ValueError, match="quantization must be one of"):
        video.quantize(frames, "floor")


def test_write_video_is_atomic_and_keeps_an_existing_file_when_writing_fails(tmp_path, monkeypatch):
    """Written under a temporary name, then renamed: a failed write leaves the earlier file whole and no
    partial file behind."""
    import av

    from revise_core.video import read_video, synthetic_clip, write_video

    path = tmp_path / "edit.mp4"
    write_video(path, synthetic_clip(5, 32, 32).frames, 8)
    before = path.read_bytes()

    class Broken:
        def __init__(self, *args, **kwargs):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", Broken)
    with pytest.raises(OSError, match="No space"):
        write_video(path, synthetic_clip(5, 32, 32, seed=1).frames, 8)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["edit.mp4"]
    monkeypatch.undo()
    write_video(path, synthetic_clip(5, 32, 32, seed=1).frames, 8)
    assert read_video(path).frames.shape[0] == 5 and sorted(p.name for p in tmp_path.iterdir()) == ["edit.mp4"]

"""The long-clip path: frames read, VAE-encoded, decoded and written a chunk at a time, equal to the in-memory edit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from revise_core import vae as vae_ops
from revise_core import video as video_ops
from revise_core.edit_inputs import StreamedSource, read_edit_source
from revise_core.editor import EditSettings, ReviseEditor
from revise_core.model_sets import EditModels
from revise_core.presets import get_preset
from revise_core.sampler import SamplerConfig
from revise_core.streamed_edit import edit_streamed
from revise_core.windows import TemporalWindows


def test_streamed_vae_encode_and_decode_equal_the_whole_clip_ones_bit_for_bit(tiny_models):
    vae = tiny_models.vae
    frames = torch.rand(9, 32, 48, 3, generator=torch.Generator().manual_seed(0))
    whole = vae_ops.encode(vae, video_ops.to_model_space(frames))
    streamed = vae_ops.encode_stream(vae, iter(frames))
    assert torch.equal(streamed, whole)
    decoded = video_ops.from_model_space(vae_ops.decode(vae, whole).float())
    chunks = list(vae_ops.decode_stream(vae, whole))
    assert [c.shape[0] for c in chunks] == [1, 4, 4]
    assert torch.equal(torch.cat(chunks), decoded)
    with pytest.raises(ValueError, match="needs 4k\\+1 frames, got 7"):
        vae_ops.encode_stream(vae, iter(frames[:7]))


def test_frame_stream_keeps_the_frames_read_video_keeps_and_the_writer_is_atomic(tmp_path):
    clip = video_ops.synthetic_clip(num_frames=12, height=48, width=64)
    path = video_ops.write_video(tmp_path / "clip.mp4", clip.frames, clip.fps)
    whole = video_ops.read_video(path).frames
    stream = video_ops.FrameStream(path, skip=1, stride=3, size=(32, 32), max_frames=3)
    kept = torch.stack(list(stream))
    assert torch.equal(kept, video_ops.resize_frames(whole[1::3][:3], 32, 32))
    assert stream.fps == clip.fps / 3

    keep = tmp_path / "keep.mp4"
    keep.write_bytes(b"an earlier result")
    with pytest.raises(RuntimeError, match="disk full"), video_ops.VideoWriter(keep) as writer:
        writer.write(clip.frames[:4])
        raise RuntimeError("disk full")
    assert keep.read_bytes() == b"an earlier result" and sorted(p.name for p in tmp_path.iterdir()) == [
        "clip.mp4", "keep.mp4"]
    with video_ops.VideoWriter(tmp_path / "chunks.mp4", clip.fps) as writer:
        for start in range(0, 12, 5):
            writer.write(clip.frames[start:start + 5])
    assert video_ops.count_frames(tmp_path / "chunks.mp4") == writer.frames_written == 12


@pytest.fixture(scope="module")
def editor(tiny_dir):
    return ReviseEditor(EditModels.load(tiny_dir))


def _settings(**changes) -> EditSettings:
    return dataclasses.replace(EditSettings(sampler=SamplerConfig(steps=2, guidance_scale=3.0), num_frames=13,
                                            height=64, width=64, vlm_frames=4), **changes)


@pytest.mark.parametrize(("window", "window_vlm"), [pytest.param(None, False, marks=pytest.mark.slow),
                                                    (TemporalWindows(2, 1), False), (TemporalWindows(2, 1), True)],
                         ids=["whole clip", "three windows", "three windows, a VLM pass each"])
def test_the_streamed_edit_equals_the_in_memory_edit_of_the_same_file(editor, tmp_path, window, window_vlm):
    # whole clip: the release test below covers it
    clip = video_ops.synthetic_clip(num_frames=15, height=72, width=80)  # fitted: 13 frames, cropped to 64x64
    path = video_ops.write_video(tmp_path / "source.mp4", clip.frames, clip.fps)
    settings = _settings(window=window, window_vlm=window_vlm)
    expected = editor.edit(read_edit_source(path, settings).clip.frames, "make it snow", settings)

    source = StreamedSource.open(path, settings)
    assert (source.num_frames, source.size) == (13, (64, 64))
    written = []
    result = edit_streamed(editor, source, "make it snow", settings, written.append)
    assert torch.equal(result.latents, expected.latents)
    assert [w.shape[0] for w in written] == [1, 4, 4, 4] and result.frames_written == 13
    assert torch.equal(torch.cat(written), expected.frames)


def test_the_streamed_release_edit_skips_its_frame_and_shows_the_vlm_frame_zero(tmp_path):
    from revise_core.testing import write_tiny_models

    write_tiny_models(tmp_path / "models")
    editor = ReviseEditor(EditModels.load(tmp_path / "models" / "revise_ckpt"))
    preset = get_preset("revise-official")
    clip = video_ops.synthetic_clip(num_frames=10, height=64, width=96)
    path = video_ops.write_video(tmp_path / "source.mp4", clip.frames, clip.fps)
    from revise_core import presets

    settings = presets.edit_settings(preset, steps=2, num_frames=9, height=64, width=96)
    plain = read_edit_source(path, settings, preset)
    expected = editor.edit(plain.clip.frames, "make it snow", settings, vlm_source=plain.vlm_source)
    source = StreamedSource.open(path, settings, preset)
    assert torch.equal(source.vlm_view(), plain.vlm_source)  # frame 0 at the video's own size
    written = []
    result = edit_streamed(editor, source, "make it snow", settings, written.append)
    assert torch.equal(result.latents, expected.latents)
    assert torch.equal(torch.cat(written), expected.frames)


def test_a_source_that_cannot_make_the_clip_fails_before_any_model_loads(tmp_path):
    clip = video_ops.synthetic_clip(num_frames=8, height=64, width=64)
    path = video_ops.write_video(tmp_path / "short.mp4", clip.frames, clip.fps)
    with pytest.raises(video_ops.VideoError, match="source video has 8 frames but 13 were asked for"):
        StreamedSource.open(path, _settings())
    padded = StreamedSource.open(path, _settings(frame_policy="pad"))
    frames = list(padded.frames())
    assert len(frames) == 13 and all(torch.equal(f, frames[7]) for f in frames[8:])


def test_windowed_edits_may_be_longer_than_one_pass_holds():
    from revise_core.video import MAX_FRAMES, MAX_WINDOWED_FRAMES, VideoError

    assert EditSettings(num_frames=2049, window=TemporalWindows(5)).num_frames == 2049
    with pytest.raises(VideoError, match=f"between 1 and {MAX_FRAMES}"):
        EditSettings(num_frames=2049)
    with pytest.raises(VideoError, match=f"between 1 and {MAX_WINDOWED_FRAMES}"):
        EditSettings(num_frames=MAX_WINDOWED_FRAMES + 4, window=TemporalWindows(5))

"""Temporal context windows: spans, blending weights, windowed sampling, and the context budget of an edit."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from revise_core import vae as vae_ops
from revise_core.context_budget import ContextOverflowError
from revise_core.editor import EditSettings, ReviseEditor
from revise_core.model_sets import EditModels
from revise_core.sampler import SamplerConfig, WindowContext, sample
from revise_core.video import to_model_space
from revise_core.vlm.base import SampledFrames
from revise_core.window_vlm import window_vlm_conditions
from revise_core.windows import AUTO, TemporalWindows, blend_weights, pixel_frames, pixel_span


@pytest.mark.parametrize(("frames", "length", "overlap"), [(1, 5, 1), (5, 5, 1), (6, 5, 1), (65, 5, 1), (65, 8, 3),
                                                           (17, 4, 0), (20, 6, 5)])
def test_windows_cover_every_latent_frame_with_full_length_and_weights_that_sum_to_one(frames, length, overlap):
    spans = TemporalWindows(length, overlap).spans(frames)
    assert spans[0][0] == 0 and spans[-1][1] == frames
    assert all(end - start == min(length, frames) for start, end in spans)
    assert all(b[0] - a[0] <= length - overlap for a, b in zip(spans, spans[1:], strict=False))
    weights = blend_weights(spans, frames)
    assert torch.allclose(weights.sum(0), torch.ones(frames), atol=1e-6)
    assert (weights >= 0).all()
    for index, (start, end) in enumerate(spans):  # zero outside its window, positive inside
        assert (weights[index, :start] == 0).all() and (weights[index, end:] == 0).all()
        assert (weights[index, start:end] > 0).all()


def test_overlap_weights_ramp_linearly_between_neighbours():
    spans = TemporalWindows(4, 2).spans(6)  # [0, 4), [2, 6)
    weights = blend_weights(spans, 6)
    assert spans == [(0, 4), (2, 6)]
    assert weights[0].tolist() == pytest.approx([1, 1, 2 / 3, 1 / 3, 0, 0])
    assert weights[1].tolist() == pytest.approx([0, 0, 1 / 3, 2 / 3, 1, 1])


def test_bad_windows_are_refused_with_the_field_and_the_range():
    with pytest.raises(ValueError, match="window overlap must be in \\[0, 3\\]"):
        TemporalWindows(4, 4)
    with pytest.raises(ValueError, match="window length must be at least 1"):
        TemporalWindows(0)
    with pytest.raises(ValueError, match="window schedule must be one of"):
        TemporalWindows(4, 1, "looped")
    assert pixel_frames(65) == 257


class _SmoothingDiT(nn.Module):
    """A deterministic stand-in for the DiT (random tiny models are noise everywhere): the velocity pulls every
    latent frame toward half its 3-frame temporal average plus the context's mean, so a window's result depends
    on its neighbours' frames, and its edges (replicated) differ from the whole clip's."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the module a device and dtype

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False):
        x = hidden_states.float()
        padded = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)
        smooth = (padded[:, :, :-2] + padded[:, :, 1:-1] + padded[:, :, 2:]) / 3
        return (x - (0.5 * smooth + encoder_hidden_states.float().mean()),)


def _contexts(spans, frames, context):
    weights = blend_weights(spans, frames)
    return [WindowContext(start, end, context, None, weights[i, start:end]) for i, (start, end) in enumerate(spans)]


def test_a_clip_sampled_in_two_windows_matches_the_whole_clip_at_the_seam_without_a_jump():
    frames = 12
    noise = torch.randn(1, 4, frames, 6, 6, generator=torch.Generator().manual_seed(0))
    context = torch.full((1, 3, 8), 0.25)
    config = SamplerConfig(steps=6, guidance_scale=1.0, scheduler="euler", shift=3.0)
    dit = _SmoothingDiT()
    whole = sample(dit, context, None, noise=noise, config=config)
    spans = TemporalWindows(7, 2).spans(frames)
    assert spans == [(0, 7), (5, 12)]
    windowed = sample(dit, None, None, noise=noise, config=config, windows=_contexts(spans, frames, context))
    # The stated bound: at the seam (the overlap, frames 5 and 6, and one frame on each side) the windowed clip
    # stays within a third of the latents' std of the whole-clip result (measured: 0.124 against a std of 0.44;
    # this stand-in couples neighbouring frames at every step, more than a DiT's attention does per frame).
    seam = slice(4, 8)
    assert (windowed - whole)[:, :, seam].abs().max() < whole.std() / 3
    assert torch.allclose(windowed[:, :, :2], whole[:, :, :2], atol=1e-5)  # far from the seam: the same
    assert torch.allclose(windowed[:, :, -2:], whole[:, :, -2:], atol=1e-5)
    jumps = (windowed[:, :, 1:] - windowed[:, :, :-1]).abs().amax(dim=(0, 1, 3, 4))  # [frames - 1]
    inside = torch.cat([jumps[:4], jumps[8:]])
    assert jumps[4:7].max() <= inside.max()


def test_windowed_sampling_refuses_weights_that_do_not_sum_to_one():
    noise = torch.zeros(1, 4, 6, 2, 2)
    context = torch.zeros(1, 3, 8)
    bad = [WindowContext(0, 4, context, None, torch.ones(4)), WindowContext(2, 6, context, None, torch.ones(4))]
    with pytest.raises(ValueError, match="sum to one at every latent frame"):
        sample(_SmoothingDiT(), None, None, noise=noise, config=SamplerConfig(steps=1, guidance_scale=1.0),
               windows=bad)
    with pytest.raises(ValueError, match="either cond / uncond or windows"):
        sample(_SmoothingDiT(), context, None, noise=noise, config=SamplerConfig(steps=1, guidance_scale=1.0),
               windows=_contexts([(0, 6)], 6, context))


# --- the editor ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def editor(tiny_dir):
    return ReviseEditor(EditModels.load(tiny_dir))


def _settings(frames: int = 9, **extra) -> EditSettings:
    return EditSettings(sampler=SamplerConfig(steps=2, guidance_scale=2.0, scheduler="euler", seed=3),
                        num_frames=frames, height=64, width=64, max_text_len=16, vlm_frames=2, **extra)


def _clip(frames: int = 9) -> torch.Tensor:  # 9 frames: 3 latent frames
    return torch.rand(frames, 64, 64, 3, generator=torch.Generator().manual_seed(1))


def test_one_window_over_the_whole_clip_is_the_plain_edit_exactly(editor):
    plain = editor.edit(_clip(), "make it snow", _settings())
    one_window = editor.edit(_clip(), "make it snow", _settings(window=TemporalWindows(3, 1)))  # all 3 latent frames
    assert torch.equal(plain.latents, one_window.latents)


def test_a_windowed_edit_shares_the_vlm_and_instruction_rows_and_slices_the_source(editor):
    settings = _settings(window=TemporalWindows(2, 1))
    condition = editor.condition(_clip(), "make it snow", settings)
    assert condition.cond is None and [(w.start, w.end) for w in condition.windows] == [(0, 2), (1, 3)]
    assert all(w.cond is None and w.build is not None for w in condition.windows)  # built when denoised
    first, second = (w.contexts()[0][0] for w in condition.windows)
    video_rows = editor.models.connector.adapt_video(condition.source_latents[:, :, :2])[0].shape[0]
    differing = int((first != second).any(-1).sum())
    assert 0 < differing <= video_rows  # only the source-video rows differ between windows
    result = editor.edit(_clip(), "make it snow", settings)
    assert result.frames.shape[0] == 9


def test_an_edit_whose_context_would_cut_the_instruction_is_refused_naming_what_fits(editor):
    connector = editor.models.connector
    original = connector.config.max_context_len
    plain = editor.condition(_clip(17), "make it snow", _settings(17))
    rows = int(plain.cond[0].abs().sum(-1).gt(0).sum())  # assembled rows (the rest is zero padding)
    try:
        # 5 latent frames of 4 source rows each: 6 rows fewer leaves room for 3 latent frames (9 video frames)
        connector.config = dataclasses.replace(connector.config, max_context_len=rows - 6)
        with pytest.raises(ContextOverflowError, match=r"the instruction and then the VLM rows would be cut; at this "
                                                        r"size use at most 9 frames, or edit in windows \(--window 3\)"):
            editor.condition(_clip(17), "make it snow", _settings(17))
        with pytest.raises(ContextOverflowError, match="use windows of at most 3 latent frames"):
            editor.condition(_clip(17), "make it snow", _settings(17, window=TemporalWindows(4, 1)))
        cut = editor.condition(_clip(17), "make it snow", _settings(17, allow_context_cut=True))  # the release's cut
        assert cut.cond.shape[1] == rows - 6  # cut by the connector (its family decides which rows go)
        auto = editor.condition(_clip(17), "make it snow", _settings(17, window=TemporalWindows(AUTO, 1)))
        assert [(w.start, w.end) for w in auto.windows] == [(0, 3), (2, 5)]  # the 3 latent frames that fit
        with pytest.raises(ValueError, match="windows of 3 latent frames, not more than the overlap of 3"):
            editor.condition(_clip(17), "make it snow", _settings(17, window=TemporalWindows(AUTO, 3)))
    finally:
        connector.config = dataclasses.replace(connector.config, max_context_len=original)


class _CrossAttn:
    """The shape of ComfyUI's CONDCrossAttn as the context-window handler hands it to a RESIZE_COND_ITEM callback."""

    def __init__(self, cond):
        self.cond = cond

    def _copy_with(self, cond):
        return type(self)(cond)


class _Window:
    def __init__(self, index_list):
        self.index_list = index_list


def test_the_native_callback_rebuilds_our_contexts_for_comfyuis_windows_and_leaves_others_alone(editor):
    from nodes.native import window_context_callback

    condition = editor.condition(_clip(), "make it snow", _settings())
    callback = window_context_callback(condition)
    window = _Window([1, 2])
    x_in = torch.zeros(1, 16, 3, 8, 8)
    rebuilt = callback("c_crossattn", _CrossAttn(condition.cond.clone()), window, x_in, None, {})
    rebuilt_null = callback("c_crossattn", _CrossAttn(condition.uncond.clone()), window, x_in, None, {})
    cond, uncond = condition.window_context([1, 2])
    assert isinstance(rebuilt, _CrossAttn) and torch.equal(rebuilt.cond, cond) and torch.equal(rebuilt_null.cond, uncond)
    windowed = editor.condition(_clip(), "make it snow", _settings(window=TemporalWindows(2, 1)))
    assert torch.equal(windowed.windows[1].contexts()[0], cond)  # our own sampler's second window: frames 1-2
    assert not torch.equal(cond, condition.cond)
    assert callback("c_concat", _CrossAttn(condition.cond), window, x_in, None, {}) is None  # not a context
    assert callback("c_crossattn", _CrossAttn(torch.randn_like(condition.cond)), window, x_in, None, {}) is None
    with pytest.raises(ValueError, match="cannot be rebuilt per window"):
        window_context_callback(windowed)


# --- a VLM pass per window ---------------------------------------------------------------------------

def test_a_window_of_latent_frames_covers_its_pixel_frames():
    assert [pixel_span(k, k + 1) for k in range(3)] == [(0, 1), (1, 5), (5, 9)]  # the causal VAE's frames
    assert pixel_span(0, 3) == (0, pixel_frames(3)) and pixel_span(2, 4) == (5, 13)
    with pytest.raises(ValueError, match=r"0 <= start < end, got \[2, 2\)"):
        pixel_span(2, 2)


def test_each_window_vlm_pass_sees_its_own_frames_read_once_and_encoded_as_soon_as_they_went_by():
    consumed = []

    def frames():  # 17 frames (5 latent frames), each filled with its index
        for index in range(17):
            consumed.append(index)
            yield torch.full((2, 2, 3), float(index))

    seen = []

    def encode(sampled: SampledFrames) -> torch.Tensor:
        seen.append((sampled.frames[:, 0, 0, 0].int().tolist(), sampled.indices, len(consumed)))
        return torch.full((3, 4), float(len(seen)))

    spans = TemporalWindows(2, 1).spans(5)
    assert spans == [(0, 2), (1, 3), (2, 4), (3, 5)]
    conditions = window_vlm_conditions(frames(), spans, vlm_frames=2, fps=8.0, encode=encode)
    # window [start, end) of latent frames: pixels [4 start - 3, 4 end - 3), 2 frames spread over them, their
    # times counted from the window's first frame; encoded when its last frame was read, not after the clip
    assert seen == [([0, 4], [0, 4], 5), ([1, 8], [0, 7], 9), ([5, 12], [0, 7], 13), ([9, 16], [0, 7], 17)]
    assert [float(c[0, 0]) for c in conditions] == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="ended before frame 16"):
        window_vlm_conditions(iter(torch.zeros(12, 2, 2, 3)), spans, vlm_frames=2, fps=8.0, encode=encode)


def test_a_vlm_pass_per_window_conditions_each_window_on_its_frames(editor):
    clip = _clip(17)  # 5 latent frames: windows (0, 2), (1, 3), (2, 4), (3, 5)
    shared_settings = _settings(17, window=TemporalWindows(2, 1))
    own_settings = dataclasses.replace(shared_settings, window_vlm=True)
    raw = vae_ops.encode(editor.models.vae, to_model_space(clip))  # one VAE encode for both conditions

    def condition(frames, raw, settings):
        return editor.condition_from_latents(raw, frames, "make it snow", settings, clip_frames=lambda: iter(frames))

    shared, own = condition(clip, raw, shared_settings), condition(clip, raw, own_settings)
    vlm, connector = editor.models.vlm, editor.models.connector
    for window_shared, window_own in zip(shared.windows, own.windows, strict=True):
        first, stop = pixel_span(window_own.start, window_own.end)
        picked = [0, stop - first - 1]  # vlm_frames=2: the window's first and last frames
        u = vlm.encode(SampledFrames(clip[first:stop][picked], picked, own_settings.fps), "make it snow",
                       num_frames=2, fps=own_settings.fps)
        expected = shared.window_context(range(window_own.start, window_own.end), u)
        assert all(torch.equal(a, b) for a, b in zip(window_own.contexts(), expected, strict=True))
        rows = connector.project_vlm(u).shape[0]
        assert not torch.equal(window_own.contexts()[0], window_shared.contexts()[0])
        assert torch.equal(window_own.contexts()[1], window_shared.contexts()[1])  # the null branch has no u
        assert rows > 0
    # a still clip and one VLM frame: every window's pass sees what the shared one sees, and gives its contexts
    still = clip[:1].expand(13, -1, -1, -1).contiguous()
    one_frame = dict(num_frames=13, vlm_frames=1)
    raw = vae_ops.encode(editor.models.vae, to_model_space(still))
    shared = condition(still, raw, dataclasses.replace(shared_settings, **one_frame))
    own = condition(still, raw, dataclasses.replace(own_settings, **one_frame))
    assert len(own.windows) == 3
    pairs = [(a, b) for x, y in zip(own.windows, shared.windows, strict=True)
             for a, b in zip(x.contexts(), y.contexts(), strict=True)]
    assert all(torch.equal(a, b) for a, b in pairs)
    with pytest.raises(ValueError, match="window_vlm .* needs temporal windows"):
        _settings(17, window_vlm=True)

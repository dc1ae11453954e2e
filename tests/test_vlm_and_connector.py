"""VLM preprocessing parity and gradients; connector assembly, null condition and truncation."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import assert_close
from revise_core.chat_text import EmptyInstructionError
from revise_core.vlm import qwen2_vl, to_vlm_frames
from revise_core.testing import TINY_PREPROCESS


def test_patches_match_the_transformers_qwen2_vl_image_processor():
    """Same float frames, no resize needed: bit-identical to the processor (CPU backend)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(min_pixels=TINY_PREPROCESS.min_pixels, max_pixels=TINY_PREPROCESS.max_pixels,
                                         patch_size=14, merge_size=2, temporal_patch_size=2)
    image = torch.rand(3, 56, 84, generator=torch.Generator().manual_seed(0))
    expected = processor(images=[image.numpy()], do_rescale=False, do_resize=False, return_tensors="pt",
                         input_data_format="channels_first")
    for frames in (image[None], torch.stack([image, image])):  # one frame is repeated to the temporal patch
        patches, grid = qwen2_vl.frames_to_patches(frames, TINY_PREPROCESS)
        assert_close(patches, expected["pixel_values"], atol=1e-5)
        assert list(grid) == expected["image_grid_thw"][0].tolist()


@pytest.mark.parametrize("size", [(64, 64), (352, 640), (480, 832), (37, 301)])
def test_smart_resize_matches_transformers(size):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    for min_pixels, max_pixels in ((4 * 784, 64 * 784), (128 * 784, 768 * 784)):
        assert qwen2_vl.smart_resize(*size, 28, min_pixels, max_pixels) == smart_resize(
            *size, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)


def test_video_patch_order_groups_consecutive_frames():
    frames = torch.rand(4, 3, 56, 56)
    patches, grid = qwen2_vl.frames_to_patches(frames, TINY_PREPROCESS)
    assert grid == (2, 4, 4) and patches.shape == (32, 3 * 2 * 14 * 14)
    first_group, _ = qwen2_vl.frames_to_patches(frames[:2], TINY_PREPROCESS)
    assert torch.equal(patches[:16], first_group)


def test_u_is_differentiable_in_the_pixels_and_the_vlm_stays_frozen(tiny_models):
    vlm = tiny_models.vlm
    frames = torch.rand(9, 64, 64, 3, requires_grad=True)
    u = vlm.encode(frames, "make the car red", num_frames=4)
    u.square().mean().backward()
    used = frames.grad[torch.linspace(0, 8, 4).round().long()]
    assert used.abs().flatten(1).sum(1).gt(0).all()  # every sampled frame gets gradient
    assert all(p.grad is None for p in vlm.model.parameters())


def test_u_drops_exactly_the_system_prefix(tiny_models):
    vlm = tiny_models.vlm
    frames = torch.rand(5, 64, 64, 3)
    messages = [{"role": "system", "content": qwen2_vl.FEATURE_SYSTEM_PROMPT},
                {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "make the car red"}]}]
    inputs = vlm.build_inputs(messages, [to_vlm_frames(frames, 4)])
    ids = inputs.kwargs["input_ids"][0]
    system_ids = vlm.tokenizer(vlm.tokenizer.apply_chat_template(messages[:1], tokenize=False),
                               add_special_tokens=False)["input_ids"]
    assert inputs.prefix_len == len(system_ids) and ids[: inputs.prefix_len].tolist() == system_ids
    video_positions = inputs.kwargs["mm_token_type_ids"][0] == qwen2_vl.TOKEN_TYPE_VIDEO
    grid = inputs.kwargs["video_grid_thw"][0]
    assert video_positions.sum() == grid.prod() // 4
    with torch.no_grad():
        u = vlm.encode(frames, "make the car red", num_frames=4)
        full = vlm.model(**inputs.kwargs, output_hidden_states=True).hidden_states[-1][0]
    assert_close(u, full[inputs.prefix_len:], atol=1e-6)


def test_generate_is_bounded_text(tiny_models):
    text = tiny_models.vlm.generate(torch.rand(5, 64, 64, 3), "Describe the source video .", max_new_tokens=5)
    assert isinstance(text, str) and len(text.split()) <= 5
    with pytest.raises(EmptyInstructionError, match="the edit instruction is empty"):
        tiny_models.vlm.encode(torch.rand(5, 64, 64, 3), "  ")


def _distinct(n: int, value: float, width: int = 32) -> torch.Tensor:
    return torch.full((n, width), value)


def test_assembly_order_and_null_condition(tiny_models):
    connector = tiny_models.connector
    u, text, video = _distinct(3, 1.0), _distinct(4, 2.0), _distinct(5, 3.0)
    context = connector.assemble(u, text, video)
    b = {name: connector.boundary_token(name) for name in ("prp_st", "prp_ed", "img_st", "img_ed")}
    expected = torch.cat([u, b["prp_st"], text, b["prp_ed"], b["img_st"], video, b["img_ed"]])
    assert torch.equal(context, expected)
    null = connector.assemble(None, None, video)
    assert torch.equal(null, torch.cat([b["prp_st"], b["prp_ed"], b["img_st"], video, b["img_ed"]]))


def test_truncation_cuts_text_first_then_u_never_video(tiny_models):
    connector = copy.deepcopy(tiny_models.connector)
    u, text, video = _distinct(6, 1.0), _distinct(6, 2.0), _distinct(5, 3.0)
    fixed = 5 + 4  # video + four one-row boundary tokens
    connector.config.max_context_len = fixed + 8  # room for 8 of the 12 u + text tokens
    context = connector.assemble(u, text, video)
    assert context.shape[0] == fixed + 8
    assert (context == 1.0).all(1).sum() == 6 and (context == 2.0).all(1).sum() == 2
    connector.config.max_context_len = fixed + 4  # all text gone, then u cut
    context = connector.assemble(u, text, video)
    assert (context == 1.0).all(1).sum() == 4 and (context == 2.0).all(1).sum() == 0
    assert (context == 3.0).all(1).sum() == 5
    connector.config.max_context_len = 6
    with pytest.raises(ValueError, match="source video alone needs 9 context tokens"):
        connector.assemble(u, text, video)


def test_assembly_rejects_parts_of_the_wrong_width(tiny_models):
    with pytest.raises(ValueError, match="do not belong together"):
        tiny_models.connector.assemble(torch.zeros(2, 48), None, torch.zeros(3, 32))

"""Qwen2-VL preprocessing against the transformers processor; connector assembly, null condition and truncation.
u, the critic, special tokens and gradients of every VLM family are in the shared contract (test_vlm_contract.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import assert_close
from revise_core.testing import TINY_PREPROCESS
from revise_core.vlm import qwen2_vl


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

"""Qwen3-VL family (dense and MoE) on tiny models: preprocessing against the transformers processor's own
functions, timestamps, loading, sizes of the released models, Omni-Video 2's prompts. u, the critic, the local
judge, special tokens and gradients against independent computations are in the shared contract
(test_vlm_contract.py)."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch
import torch.nn.functional as F

from revise_core.testing.omnivideo2 import TINY_QWEN3_PREPROCESS, tiny_qwen3_vl, write_qwen3_vl_folder
from revise_core.vlm import load_vlm, qwen3_vl


@pytest.fixture(scope="module")
def dense():
    return tiny_qwen3_vl(seed=11)


@pytest.fixture(scope="module")
def moe():
    return tiny_qwen3_vl(seed=12, moe=True)


def _reference_patches(frames: torch.Tensor, config: qwen3_vl.VideoPreprocessConfig):
    """The processor's steps with its own functions: `smart_resize` for the size, a float bicubic antialiased
    resize (what torchvision does on float tensors), rescale-free normalisation (frames are already 0..1),
    and `Qwen3VLVideoProcessor.patchify` (which pads odd frame counts with the last frame)."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor, smart_resize

    height, width = smart_resize(frames.shape[0], frames.shape[2], frames.shape[3],
                                 temporal_factor=config.temporal_patch_size, factor=config.patch_size * config.merge_size,
                                 min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    resized = F.interpolate(frames.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    normalised = (resized - 0.5) / 0.5
    patches, t, h, w = Qwen3VLVideoProcessor.patchify(None, normalised[None], patch_size=config.patch_size,
                                                      merge_size=config.merge_size,
                                                      temporal_patch_size=config.temporal_patch_size)
    return patches[0], (t, h, w)


@pytest.mark.parametrize("num_frames, height, width", [(6, 64, 96), (5, 70, 50), (9, 200, 120)])
def test_preprocessing_equals_the_processors_steps(num_frames, height, width):
    frames = torch.rand(num_frames, 3, height, width, generator=torch.Generator().manual_seed(num_frames))
    patches, grid = qwen3_vl.frames_to_patches(frames, TINY_QWEN3_PREPROCESS)
    expected, expected_grid = _reference_patches(frames, TINY_QWEN3_PREPROCESS)
    assert grid == expected_grid and grid[0] == (num_frames + 1) // 2
    assert patches.shape[1] == 3 * 2 * 16 * 16
    assert torch.equal(patches, expected)


def test_timestamps_and_video_tokens_as_the_processor_writes_them(dense):
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from transformers.video_utils import VideoMetadata

    frames = torch.rand(33, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    video = dense.prepare_frames(frames, 5)
    assert video.indices == [0, 8, 16, 24, 32]
    inputs = dense.build_inputs([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "go"}]}],
                                [video], fps=8.0)
    grid = inputs.kwargs["video_grid_thw"]
    # the processor's own replacement text (replace_video_token with its _calculate_timestamps)
    fake = types.SimpleNamespace(video_processor=types.SimpleNamespace(merge_size=2, temporal_patch_size=2),
                                 vision_start_token="<|vision_start|>", vision_end_token="<|vision_end|>",
                                 video_token="<|video_pad|>")
    fake._calculate_timestamps = lambda indices, fps, merge: Qwen3VLProcessor._calculate_timestamps(None, indices, fps, merge)
    metadata = VideoMetadata(total_num_frames=33, fps=8.0, frames_indices=video.indices)
    replacement = Qwen3VLProcessor.replace_video_token(fake, {"video_grid_thw": grid, "video_metadata": [metadata]}, 0)
    assert replacement.startswith("<0.5 seconds><|vision_start|>") and replacement.count("seconds>") == 3
    template = dense.tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "go"}]}], tokenize=False,
        add_generation_prompt=True)
    # transformers 4.57 (Omni-Video 2's pinned version) replaces the template's start + pad + end as a whole
    triple = "<|vision_start|><|video_pad|><|vision_end|>"
    assert triple in template
    expected = dense.tokenizer(template.replace(triple, replacement), add_special_tokens=False)["input_ids"]
    assert inputs.token_ids.tolist() == expected
    start_id = dense.model.config.vision_start_token_id
    assert int((inputs.token_ids == start_id).sum()) == int(grid[0][0]) == 3  # one start per temporal patch
    video_id = dense.model.config.video_token_id
    types_ = inputs.kwargs["mm_token_type_ids"][0]
    assert torch.equal(types_ == 2, inputs.token_ids == video_id) and set(types_.tolist()) == {0, 2}


@pytest.mark.parametrize("family", ["dense", "moe"])
def test_loads_from_a_released_folder_layout(family, request, tmp_path):
    vlm = request.getfixturevalue(family)
    folder = write_qwen3_vl_folder(vlm, tmp_path / family)
    loaded = load_vlm(folder, dtype="fp32")
    assert type(loaded).__name__ == "Qwen3VLModel" and loaded.preprocess == vlm.preprocess
    frames = torch.rand(9, 40, 40, 3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(loaded.encode(frames, "turn it blue"), vlm.encode(frames, "turn it blue"), rtol=0, atol=0)


def test_a_folder_without_its_video_preprocessor_config_is_refused(dense, tmp_path):
    folder = write_qwen3_vl_folder(dense, tmp_path / "qwen3")
    (folder / "video_preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no video_preprocessor_config.json"):
        load_vlm(folder)


def test_a_connector_of_another_width_is_a_clear_error(tiny_models):
    from revise_core.model_sets import EditModels

    wide = tiny_qwen3_vl(seed=1)
    width = tiny_models.connector.config.vlm_dim
    wide.model.config.text_config.hidden_size = 2 * width  # a bigger Qwen3-VL than the connector was trained on
    with pytest.raises(ValueError, match=f"connector vlm_dim={width} but the VLM's hidden size is {2 * width}"):
        EditModels(dit=tiny_models.dit, vae=tiny_models.vae, text=tiny_models.text, vlm=wide,
                   connector=tiny_models.connector).check()


def test_released_omnivideo2_configs_instantiate_on_the_meta_device():
    """Omni-Video 2 1.3B: Wan2.1-1.3B + its connector (u width 2048) + Qwen3-VL-30B-A3B; sizes in the note."""
    from transformers import AutoModelForImageTextToText, Qwen3VLMoeConfig

    from revise_core.connector import Connector, ConnectorConfig
    from revise_core.variants import get_variant

    data = get_variant("qwen3-vl-30b-a3b").load_config()
    config = Qwen3VLMoeConfig(**{k: v for k, v in data.items() if k not in ("model_type", "architectures")})
    with torch.device("meta"):
        vlm = AutoModelForImageTextToText.from_config(config)
        connector = Connector(ConnectorConfig.from_dict(get_variant("omnivideo2-1.3b").load_config()))
        from diffusers import WanTransformer3DModel

        dit = WanTransformer3DModel.from_config(get_variant("wan2.1-t2v-1.3b").load_config())
    count = sum(p.numel() for p in vlm.parameters())
    assert 31.0e9 < count < 31.2e9, count  # "31B" (Qwen3-VL-30B-A3B-Instruct): 31.07 B
    assert config.text_config.hidden_size == connector.config.vlm_dim == 2048
    assert sum(p.numel() for p in connector.parameters()) == 15_085_056  # vlm_norm, vlm_proj, visual adapter
    assert 1.41e9 < sum(p.numel() for p in dit.parameters()) < 1.43e9  # Wan2.1-1.3B: 1.419 B
    assert json.dumps(data)  # the shipped config is plain JSON


def test_edit_and_critic_demos_run_with_a_qwen3_vl(tmp_path, capsys):
    from revise_core import edit
    from revise_core.critic import __main__ as critic_cli
    from revise_core.video import read_video

    out = tmp_path / "edited.mp4"
    assert edit.main(["--demo", "qwen3", "--out", str(out)]) == 0
    assert read_video(out).frames.shape[0] == 9
    capsys.readouterr()
    assert critic_cli.main(["--demo", "qwen3", "--json", "--no-per-dimension"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 < report["p_yes"] < 1 and report["p_yes"] == pytest.approx(1 / (1 + math.exp(-report["delta"])), abs=1e-6)


def test_caption_reasoning_uses_omnivideo2s_own_prompts(dense, monkeypatch):
    from revise_core.editor import EditSettings, caption_reasoning

    prompts = qwen3_vl.omnivideo2_prompts()
    assert prompts["feature_extraction_system"].startswith("You are a multimodal generation and editing assistant.")
    seen = []
    original = dense.build_inputs

    def record(messages, videos=(), **kwargs):
        seen.append(messages)
        assert kwargs["video_pixels"] == qwen3_vl.OMNIVIDEO2_CAPTION_PIXELS  # the release's caption-pass size
        return original(messages, videos, **kwargs)

    monkeypatch.setattr(dense, "build_inputs", record)
    frames = torch.rand(9, 40, 40, 3, generator=torch.Generator().manual_seed(4))
    reasoning, conditioning = caption_reasoning(dense, frames, "make it red", EditSettings(caption_tokens=3))
    source_turn, target_turn = seen
    assert source_turn[0] == {"role": "system", "content": prompts["source_caption_system"]}
    assert source_turn[1]["content"][1]["text"] == "Please provide a detailed, fine-grained caption for this video."
    assert target_turn[0] == {"role": "system", "content": prompts["target_caption_system"]}
    source_caption = reasoning.split("\n")[0][len("source: "):]
    assert target_turn[1]["content"][0]["text"] == prompts["target_caption_user"].format(
        source=source_caption, instruction="make it red")
    assert conditioning[-1] == "make it red"


def test_a_single_frame_is_repeated_to_a_temporal_patch(dense):
    frame = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(8))
    patches, grid = qwen3_vl.frames_to_patches(frame, TINY_QWEN3_PREPROCESS)
    expected, expected_grid = _reference_patches(frame.expand(2, -1, -1, -1), TINY_QWEN3_PREPROCESS)
    assert grid == expected_grid and torch.equal(patches, expected)

"""VILA (the ReViSE release's VLM) on stock transformers classes: folder format, the official conditioning
prompt and its quirks, the projector's merge order and values, SigLIP preprocessing, the critic's pixel paths,
the CLI, the nodes, half precision, and bad folders. u, the critic's P(Yes), the local judge, special tokens and
gradients against independent computations are in the shared contract (test_vlm_contract.py)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close
from revise_core import checkpoints as ckpt
from revise_core.critic import CriticConfig, CriticError, SelfCritic
from revise_core.critic import __main__ as critic_cli
from revise_core.testing import VILA_CHECKPOINT, VILA_IMAGE_SIZE
from revise_core.vlm import load_vlm, vila

INSTRUCTION = "make the car red"


@pytest.fixture(scope="module")
def model(tiny_models):
    return tiny_models.vila


def _frames(seed: int, count: int = 9, height: int = 50, width: int = 70) -> torch.Tensor:
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))


def _ids(tokenizer, tokens: list[str]) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert tokenizer.unk_token_id not in ids, tokens
    return ids


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]+", text)  # what the kit tokenizer's Whitespace pre-tokenizer splits into


def _hand_conditioning_ids(tokenizer, instruction: str, *, end: bool) -> list[int]:
    """The release's v2v prompt, token by token: system, user "<image>\\n<video>\\n" + instruction, answer."""
    head = (["<|begin_of_text|>", "<|begin_of_text|>", "<|start_header_id|>", "system", "<|end_header_id|>"]
            + _words(vila.LLAMA3_SYSTEM) + ["<|eot_id|>", "<|start_header_id|>", "user", "<|end_header_id|>"])
    tail = (["<", "video", ">"] + _words(instruction)
            + ["<|eot_id|>", "<|start_header_id|>", "assistant", "<|end_header_id|>", "[GEN_VID]"]
            + (["<|end_of_text|>"] if end else []))
    return _ids(tokenizer, head) + [vila.IMAGE_TOKEN_INDEX] + _ids(tokenizer, tail)


# --- the folder --------------------------------------------------------------------------------------

def test_kit_folder_is_the_official_layout_and_loads_exactly(tiny_dir, model):
    folder = tiny_dir / VILA_CHECKPOINT
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llava_llama" and config["architectures"] == ["LlavaLlamaModel"]
    assert {"llm_cfg", "vision_tower_cfg", "mm_projector_cfg"} <= config.keys()
    assert (folder / "vision_tower" / "preprocessor_config.json").is_file()
    projector = ckpt.read_state_dict(folder / "mm_projector" / "model.safetensors").tensors
    assert sorted(projector) == [f"layers.{i}.{p}" for i in (1, 2, 4) for p in ("bias", "weight")]
    loaded = load_vlm(folder, dtype="fp32")
    assert isinstance(loaded, vila.VilaModel) and loaded.hidden_size == 64 and loaded.source == str(folder)
    for key, tensor in model.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], tensor), key
    assert loaded.preprocess == model.preprocess
    frames = _frames(0)
    with torch.no_grad():
        assert torch.equal(loaded.encode(frames, INSTRUCTION), model.encode(frames, INSTRUCTION))


def test_conditioning_ids_equal_the_template_by_hand(model):
    """Pins the double BOS, the single image position and the deletion of the pad id (`<|end_of_text|>`)."""
    inputs = model.conditioning_inputs(_frames(0), INSTRUCTION)
    assert inputs.token_ids.tolist() == _hand_conditioning_ids(model.tokenizer, INSTRUCTION, end=False)
    assert inputs.kwargs["pixels"].shape == (1, 3, VILA_IMAGE_SIZE, VILA_IMAGE_SIZE)  # frame 0 only


def test_pad_deletion_follows_the_tokenizer(model):
    """With pad = `<|eot_id|>` every template separator disappears and `<|end_of_text|>` stays; without a pad
    token the eos id is deleted (the release's attention_mask rule)."""
    tokenizer = model.tokenizer
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    full = _hand_conditioning_ids(tokenizer, INSTRUCTION, end=True)
    for pad, deleted in (("<|eot_id|>", eot), (None, tokenizer.eos_token_id)):
        other = _copy_tokenizer(tokenizer, pad_token=pad)
        ids = vila.VilaModel(model=model.model, tokenizer=other, preprocess=model.preprocess).conditioning_inputs(
            _frames(0), INSTRUCTION).token_ids.tolist()
        assert ids == [i for i in full if i != deleted]


def _copy_tokenizer(tokenizer, *, pad_token):
    import copy

    other = copy.deepcopy(tokenizer)
    other.pad_token = pad_token
    return other


def test_all_frames_option_puts_the_eight_sampled_frames_in_the_prompt(model):
    frames = _frames(1, count=12)
    first = model.conditioning_inputs(frames, INSTRUCTION)
    allf = vila.VilaModel(model=model.model, tokenizer=model.tokenizer, preprocess=model.preprocess,
                          condition_on_all_frames=True).conditioning_inputs(frames, INSTRUCTION)
    assert (allf.token_ids == vila.IMAGE_TOKEN_INDEX).sum() == 8
    # load_video: np.linspace(0, T - 2, 8, dtype=int) -> frames 0, 1, 2, 4, 5, 7, 8, 10 of 12
    expected = vila.preprocess_images(frames[[0, 1, 2, 4, 5, 7, 8, 10]].permute(0, 3, 1, 2), model.preprocess)
    assert torch.equal(allf.kwargs["pixels"], expected)
    assert torch.equal(first.kwargs["pixels"], expected[:1])


def test_projector_merge_order_on_a_numbered_grid():
    """The official 2x2 merge of a 3x3 grid (values 1..9, row-major): zero padding at the bottom row and
    right column, channels (r,c),(r,c+1),(r+1,c),(r+1,c+1), tokens in column-major order."""
    grid = torch.arange(1, 10, dtype=torch.float32).view(1, 9, 1)
    merged = vila.DownSampleBlock()(grid)[0].int().tolist()
    assert merged == [[1, 2, 4, 5], [7, 8, 0, 0], [3, 0, 6, 0], [9, 0, 0, 0]]


@pytest.mark.parametrize("kind, keys", [
    ("mlp_downsample", ["layers.1.bias", "layers.1.weight", "layers.2.bias", "layers.2.weight", "layers.4.bias",
                        "layers.4.weight"]),
    ("mlp2x_gelu", ["layers.0.bias", "layers.0.weight", "layers.2.bias", "layers.2.weight"]),
    ("linear", ["bias", "weight"]),
])
def test_projector_keys_are_the_official_names_and_compute_the_official_layers(kind, keys):
    projector = vila.MultimodalProjector(kind, 8, 16)
    state = projector.state_dict()
    assert sorted(state) == (["layers." + k for k in keys] if kind == "linear" else keys)
    x = torch.randn(2, 9 if kind == "mlp_downsample" else 5, 8, generator=torch.Generator().manual_seed(0))
    w = {k.removeprefix("layers."): v for k, v in state.items()}
    if kind == "linear":
        expected = F.linear(x, w["weight"], w["bias"])
    elif kind == "mlp2x_gelu":  # Linear, GELU, Linear
        expected = F.linear(F.gelu(F.linear(x, w["0.weight"], w["0.bias"])), w["2.weight"], w["2.bias"])
    else:  # the 2x2 merge (pinned above), LayerNorm, Linear, GELU, Linear
        merged = F.layer_norm(vila.DownSampleBlock()(x), (32,), w["1.weight"], w["1.bias"], eps=1e-5)
        expected = F.linear(F.gelu(F.linear(merged, w["2.weight"], w["2.bias"])), w["4.weight"], w["4.bias"])
    with torch.no_grad():
        assert_close(projector(x), expected, atol=1e-6, what=kind)


def _siglip_processor(size: int):
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    return SiglipImageProcessorPil(size={"height": size, "width": size})


def test_differentiable_preprocessing_equals_the_siglip_processor_without_resize():
    image = torch.rand(3, VILA_IMAGE_SIZE, VILA_IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    expected = _siglip_processor(VILA_IMAGE_SIZE)(images=[image.numpy()], do_rescale=False, do_resize=False,
                                                  return_tensors="pt", input_data_format="channels_first")["pixel_values"]
    ours = vila.preprocess_images(image[None], vila.SiglipPreprocess(height=VILA_IMAGE_SIZE, width=VILA_IMAGE_SIZE),
                                  preprocessing="differentiable")
    assert_close(ours, expected, atol=1e-6)


@pytest.mark.parametrize("aspect", ["resize", "pad", "none"])
def test_exact_preprocessing_is_the_releases_pil_path_bit_for_bit(aspect):
    """llava's process_image on an 8-bit PIL frame (PIL bicubic to the size, or expand2square on the mean
    colour), then SigLIP's own processor (PIL backend): equal to the last bit."""
    from PIL import Image

    frame = torch.randint(0, 256, (90, 150, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    image = Image.fromarray(frame.numpy())
    if aspect == "resize":
        image = image.resize((VILA_IMAGE_SIZE, VILA_IMAGE_SIZE))  # PIL's default filter, as mm_utils.py calls it
    elif aspect == "pad":
        square = Image.new("RGB", (150, 150), (127, 127, 127))
        square.paste(image, (0, (150 - 90) // 2))
        image = square
    expected = _siglip_processor(VILA_IMAGE_SIZE)(images=[image], return_tensors="pt")["pixel_values"]
    config = vila.SiglipPreprocess(height=VILA_IMAGE_SIZE, width=VILA_IMAGE_SIZE, image_aspect_ratio=aspect)
    ours = vila.preprocess_images(frame.permute(2, 0, 1)[None].float() / 255, config)  # data: exact by default
    assert torch.equal(ours, expected)
    differentiable = vila.preprocess_images(frame.permute(2, 0, 1)[None].float() / 255, config,
                                            preprocessing="differentiable")
    assert 0 < (differentiable - expected).abs().max() <= 2 * 40 / 255  # random pixels: no smooth image to agree on


def test_differentiable_preprocessing_resizes_like_pil_within_uint8_rounding():
    """A smooth 240x320 frame to 42x42: torch's antialiased bicubic against PIL's on uint8 (the release)."""
    from PIL import Image

    rows, cols = torch.meshgrid(torch.linspace(0, 1, 240), torch.linspace(0, 1, 320), indexing="ij")
    image = (torch.stack([cols, rows, (cols + rows) / 2]) * 255).round().to(torch.uint8)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((42, 42), Image.BICUBIC)
    expected = (torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    config = vila.SiglipPreprocess(height=42, width=42)
    ours = vila.preprocess_images(image[None].float() / 255, config, preprocessing="differentiable")[0]
    assert (ours - expected).abs().max() <= 2 * 1.5 / 255  # at most 1.5 uint8 steps, in normalised units
    assert_close(vila.preprocess_images(image[None].float() / 255, config)[0], expected, atol=1e-7)


def test_frames_with_a_gradient_take_the_differentiable_path_and_exact_refuses_them():
    image = torch.rand(1, 3, 50, 60, requires_grad=True)
    config = vila.SiglipPreprocess(height=VILA_IMAGE_SIZE, width=VILA_IMAGE_SIZE)
    vila.preprocess_images(image, config).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="exact preprocessing .* cannot carry the gradient"):
        vila.preprocess_images(image, config, preprocessing="exact")
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        vila.preprocess_images(image.detach(), config, preprocessing="pil")


def test_pad_aspect_pastes_on_the_mean_colour():
    image = torch.rand(1, 3, 20, VILA_IMAGE_SIZE)
    out = vila.preprocess_images(image, vila.SiglipPreprocess(height=VILA_IMAGE_SIZE, width=VILA_IMAGE_SIZE,
                                                               image_aspect_ratio="pad"), preprocessing="differentiable")
    top = (VILA_IMAGE_SIZE - 20) // 2
    assert_close(out[:, :, top:top + 20], (image - 0.5) / 0.5, atol=1e-6)
    assert_close(out[:, :, 0], torch.full_like(out[:, :, 0], (127 / 255 - 0.5) / 0.5), atol=1e-6)


# --- the critic's pixel paths -------------------------------------------------------------------

def test_one_critic_call_takes_one_pixel_path_for_delta_and_delta_base(model):
    """An edit with a gradient (the one-step estimate in training) sends both videos of Δ and of Δ_base through
    the differentiable path; without one (data), both through the release's exact path. Either way an edit equal
    to its source scores exactly 0."""
    critic = SelfCritic(model)
    source = (_frames(8, count=5) * 255).round() / 255
    for edited, path in ((source.clone().requires_grad_(True), "differentiable"), (source.clone(), "exact")):
        relative, verdict = critic.relative(source, edited, INSTRUCTION)
        assert verdict.preprocessing == path and relative.item() == 0.0
    deltas = {key[-1]: value for key, value in critic._baseline_cache.items()}
    assert set(deltas) == {"differentiable", "exact"}  # one Δ_base per path, never mixed
    assert deltas["differentiable"] != deltas["exact"]  # the two paths differ (by 8-bit rounding)
    with torch.no_grad():
        assert critic.verdict(source, source, INSTRUCTION, preprocessing="differentiable").delta == \
            deltas["differentiable"]


def test_release_sized_vila_on_the_meta_device():
    from revise_core.variants import get_variant

    modules = vila.build_empty(get_variant("revise-vila-8b").load_config())
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(modules.llm) == 8_030_261_248  # Llama-3-8B
    assert count(modules.vision_tower) == 428_225_600  # SigLIP-so400m-patch14-384 vision model
    assert count(modules.mm_projector) == 35_668_992  # LayerNorm(4608) + 4608->4096 + 4096->4096
    features = modules.encode_images(torch.empty(8, 3, 384, 384, device="meta"))
    assert features.shape == (8, 196, 4096)  # 27 x 27 SigLIP tokens merged 2 x 2 (padded to 28 x 28)


# --- command line ---------------------------------------------------------------------------------

def test_critic_cli_on_a_vila_folder_gives_exactly_zero_for_the_source_itself(tiny_dir, model, tmp_path, capsys):
    from revise_core.video import conform, read_video, synthetic_clip, write_video

    (tmp_path / "models.json").write_text(json.dumps({"vlm": str(tiny_dir / VILA_CHECKPOINT)}))
    write_video(tmp_path / "s.mp4", synthetic_clip(9, 64, 64, seed=0).frames)
    args = ["--models", str(tmp_path), "--source", str(tmp_path / "s.mp4"), "--edited", str(tmp_path / "s.mp4"),
            "--instruction", INSTRUCTION, "--json", "--no-per-dimension"]
    assert critic_cli.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    frames = conform(read_video(tmp_path / "s.mp4").frames, min_frames=1)
    expected = SelfCritic(model).report(frames, frames.clone(), INSTRUCTION, per_dimension=False)
    assert report["relative_delta"] == 0.0 and 0.0 < report["p_yes"] < 1.0
    assert report["p_yes"] == pytest.approx(expected.p_yes, abs=1e-6)  # the folder's weights are the kit's
    assert report["delta"] == pytest.approx(expected.delta, abs=1e-5)


def test_critic_cli_demo_revise(capsys):
    assert critic_cli.main(["--demo", "revise", "--json", "--no-per-dimension"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"p_yes", "delta", "relative_delta"} <= report.keys()
    assert report["p_yes"] == pytest.approx(1 / (1 + math.exp(-report["delta"])), abs=1e-6)


# --- bad folders ----------------------------------------------------------------------------------

@pytest.fixture
def vila_copy(tiny_dir, tmp_path):
    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_dir / VILA_CHECKPOINT, folder)
    return folder


@pytest.mark.parametrize("part", vila.SUB_FOLDERS)
def test_missing_sub_folder_is_named(vila_copy, part):
    shutil.rmtree(vila_copy / part)
    with pytest.raises(ckpt.ModelFileNotFoundError, match=rf"{re.escape(str(vila_copy))}: .*no '{part}/' sub-folder"):
        load_vlm(vila_copy)


def test_unknown_projector_type(vila_copy):
    path = vila_copy / "mm_projector" / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"mm_projector_type": "mlp_downsample_3x3_fix"}))
    with pytest.raises(ckpt.CheckpointError, match=r"mm_projector/config.json: unknown projector type "
                                                   r"'mlp_downsample_3x3_fix'; supported: mlp_downsample"):
        load_vlm(vila_copy)


def test_tokenizer_without_single_token_yes_no_is_refused_by_the_critic(vila_copy):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # A character-level tokenizer: "Yes" is three tokens.
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.train_from_iterator(["YesNo abc"], trainer=trainers.WordLevelTrainer(special_tokens=["<unk>"]))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (vila_copy / "llm" / name).unlink()
    wrapped.save_pretrained(str(vila_copy / "llm"))
    vlm = load_vlm(vila_copy, dtype="fp32")
    with pytest.raises(CriticError, match=rf"{re.escape(str(vila_copy))}: the VLM tokenizer splits 'Yes' into 3 tokens"):
        SelfCritic(vlm)


@pytest.mark.parametrize("part", ["mm_projector", "llm"])
def test_a_bin_holding_more_than_tensors_is_never_unpickled(vila_copy, tmp_path, part):
    marker = tmp_path / "code-ran"

    class Marker:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    weights = vila_copy / part / "model.safetensors"
    state = dict(ckpt.read_state_dict(weights).tensors) | {"extra": Marker()}
    weights.unlink()
    torch.save(state, vila_copy / part / "pytorch_model.bin")
    with pytest.raises(ckpt.CheckpointError, match=rf"{re.escape(str(vila_copy / part))}.*refused to unpickle"):
        load_vlm(vila_copy)
    assert not marker.exists()


def test_not_a_vila_or_qwen_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3", "architectures": ["Gemma3"]}))
    with pytest.raises(ckpt.UnknownLayoutError, match="'gemma3'.*not a supported VLM family.*VILA"):
        load_vlm(tmp_path)


def test_s2_towers_are_refused(vila_copy):
    path = vila_copy / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"s2": True}))
    with pytest.raises(ckpt.CheckpointError, match="S2 multi-scale vision tower"):
        load_vlm(vila_copy)


def test_comfyui_nodes_load_vila_and_judge_under_inference_mode(tiny_dir, model, monkeypatch, tmp_path):
    """The VLM loader node lists and loads the release's folder; the SelfCritic node judges with it."""
    from conftest import ROOT_PACKAGE

    monkeypatch.setenv("REVISE_MODEL_DIRS", f"vlm={tiny_dir / VILA_CHECKPOINT.rsplit('/', 1)[0]}")
    monkeypatch.setenv("REVISE_OUTPUT_DIR", str(tmp_path))
    nodes = ROOT_PACKAGE.NODE_CLASS_MAPPINGS
    assert "checkpoint" in nodes["ReViSEVLMLoader"].INPUT_TYPES()["required"]["vlm_name"][0]
    source = _frames(0, count=5)
    with torch.inference_mode():
        (loaded,) = nodes["ReViSEVLMLoader"]().load("checkpoint", "fp32", "cpu")
        p_yes, relative, report = nodes["ReViSESelfCritic"]().judge(loaded, source, source.clone(), INSTRUCTION,
                                                                    False, 2)
    assert isinstance(loaded, vila.VilaModel) and 0.0 < p_yes < 1.0 and relative == 0.0
    per_dimension = json.loads(report)["per_dimension"]
    assert set(per_dimension) == {"edit_accuracy", "preservation_consistency", "generation_naturalness",
                                  "generation_realism"}
    # the same numbers as the critic on the kit's VILA (the folder holds its weights) at the node's 2 frames
    expected = SelfCritic(model, CriticConfig(num_frames=2)).report(source, source.clone(), INSTRUCTION)
    assert p_yes == pytest.approx(expected.p_yes, abs=1e-6)
    for name, values in per_dimension.items():
        assert values["p_yes"] == pytest.approx(expected.per_dimension[name]["p_yes"], abs=1e-6), name


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_encode_and_critic(tiny_dir, model, dtype):
    """The release runs VILA in fp16; bf16 is the GPU default here. Both encode and give pixel gradients."""
    half = load_vlm(tiny_dir / VILA_CHECKPOINT, dtype=dtype)
    frames = _frames(8)
    with torch.no_grad():
        u, reference = half.encode(frames, INSTRUCTION), model.encode(frames, INSTRUCTION)
    assert u.dtype == ckpt.resolve_dtype(dtype)
    assert F.cosine_similarity(u.float().flatten(), reference.flatten(), dim=0) > 0.999
    edited = _frames(9, count=5).requires_grad_(True)
    relative, verdict = SelfCritic(half).relative(_frames(8, count=5), edited, INSTRUCTION)
    relative.backward()
    assert torch.isfinite(verdict.delta) and edited.grad.abs().sum() > 0


def test_edit_cli_with_vila_as_the_encoder(tiny_dir, tmp_path):
    """A models.json whose VLM is a VILA folder: the edit command line runs through the same interface
    (reasoning captions written by VILA, u from its conditioning prompt)."""
    from revise_core import edit as edit_cli
    from revise_core.video import read_video, synthetic_clip, write_video

    spec = json.loads((tiny_dir / "models.json").read_text())
    spec = {key: str(tiny_dir / value) for key, value in spec.items()} | {"vlm": str(tiny_dir / VILA_CHECKPOINT)}
    (tmp_path / "models.json").write_text(json.dumps(spec))
    write_video(tmp_path / "in.mp4", synthetic_clip(5, 32, 32).frames, 8)
    out = tmp_path / "out.mp4"
    assert edit_cli.main(["--models", str(tmp_path), "--video", str(tmp_path / "in.mp4"), "--instruction",
                          INSTRUCTION, "--out", str(out), "--steps", "2", "--reasoning", "caption"]) == 0
    assert read_video(out).num_frames == 5

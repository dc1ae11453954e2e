"""Shipped workflows: well-formed UI graphs of known nodes, in sync with the nodes, and runnable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import comfy_executor as executor
import pytest
import torch

from conftest import ROOT, ROOT_PACKAGE
from revise_core.checkpoints import compute_dtype, resolve_dtype

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
BUILTINS_ALLOWED = {"LoadVideo", "GetVideoComponents", "CreateVideo", "SaveVideo", "PreviewAny", "PreviewImage",
                    "MarkdownNote", "Note", "UNETLoader", "VAELoader", "ModelSamplingSD3", "KSampler", "VAEDecode"}
NATIVE = "ReViSE edit via KSampler.json"
OFFICIAL = "ReViSE release edit.json"


def _classes():
    return {**ROOT_PACKAGE.NODE_CLASS_MAPPINGS, **executor.BUILTIN_STAND_INS}


TITLE_HEIGHT = 30  # LiteGraph draws the title bar above a node's position
# What a node grows by while it runs, below its stored size (ComfyUI frontend 1.35.9): a latent preview is
# an image widget of at least 220 px + 4 margin (useImagePreviewWidget.ts: computeLayoutSize minHeight 220);
# a text the node sends (nodes/node_text.py, PromptServer.send_progress_text) is a text widget of at least
# 42 + 16 px + 4 (useProgressTextWidget.ts). Video previews (Load / Save Video) grow with the video: nothing
# may sit below them at all. PreviewAny / PreviewImage show their output inside their stored size.
IMAGE_PREVIEW, PROGRESS_TEXT = 224, 62
PREVIEWS = {"ReViSESampler", "ReViSEBestOfEdit", "KSampler"}  # latent previews while sampling
TEXTS = {"ReViSESampler", "ReViSEBestOfEdit", "ReViSEUSOTrainer"}  # node_text: CPU estimate, how training ended


def _box(node: dict) -> tuple[str, int, int, int, int]:
    """(type, left, top, right, bottom) of a node with its title bar and its room to grow while running."""
    grow = IMAGE_PREVIEW * (node["type"] in PREVIEWS) + PROGRESS_TEXT * (node["type"] in TEXTS)
    x, y = node["pos"]
    return node["type"], x, y - TITLE_HEIGHT, x + node["size"][0], y + node["size"][1] + grow


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_nodes_do_not_overlap_with_previews_on(path):
    """Stored boxes (title bar included) plus what previews and node texts add while running are disjoint;
    the sizes are at least what the frontend computes (checked in ComfyUI 0.8.0's frontend 1.35.9: no node
    grew on loading), and nothing sits below a video preview, whose height follows the video."""
    boxes = [_box(node) for node in json.loads(path.read_text())["nodes"]]
    for index, a in enumerate(boxes):
        for b in boxes[index + 1:]:
            assert not (a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]), f"{a[0]} overlaps {b[0]}"
    for preview in (box for box in boxes if box[0] in ("LoadVideo", "SaveVideo")):
        below = [b[0] for b in boxes if b[2] >= preview[4] and b[1] < preview[3] and preview[1] < b[3]]
        assert not below, f"{below} below {preview[0]}, whose preview grows with the video"


def test_the_preview_allowance_covers_every_node_that_previews():
    """The ReViSE nodes that feed ComfyUI's latent previewer are the ones the overlap test lets grow by a preview."""
    import inspect

    for name, cls in ROOT_PACKAGE.NODE_CLASS_MAPPINGS.items():
        previews = "preview_latents=True" in inspect.getsource(getattr(cls, cls.FUNCTION))
        assert previews == (name in PREVIEWS), name


def test_native_workflow_reproduces_the_release_settings_through_comfyuis_sampler():
    from revise_core.presets import get_preset

    preset = get_preset("revise-official")
    api = executor.ui_to_api(json.loads((ROOT / "workflows" / NATIVE).read_text()), _classes())
    nodes = {node["class_type"]: node["inputs"] for node in api.values()}
    by_id = {node_id: node["class_type"] for node_id, node in api.items()}
    sampler = nodes["KSampler"]
    # ComfyUI's cfg: uncond + cfg·(cond − uncond); the release's guidance s: cond + s·(cond − uncond) = cfg s + 1
    assert sampler["cfg"] == preset.sampler["guidance_scale"] + 1
    assert (sampler["steps"], sampler["seed"], sampler["denoise"]) == (preset.sampler["steps"], preset.sampler["seed"], 1.0)
    assert nodes["ModelSamplingSD3"]["shift"] == preset.sampler["shift"]
    assert {by_id[sampler[name][0]] for name in ("positive", "negative", "latent_image")} == {"ReViSEWanConditioning"}
    assert nodes["ReViSEModelSetLoader"]["load_dit"] is False
    encode = nodes["ReViSEVAEEncode"]
    assert (encode["num_frames"], encode["resize"], encode["skip_frames"]) == (
        preset.settings["num_frames"], preset.settings["resize"], preset.settings["skip_frames"])
    assert nodes["CreateVideo"]["fps"] == preset.output_fps


def test_official_edit_workflow_has_the_presets_settings():
    from revise_core.presets import get_preset

    preset = get_preset("revise-official")
    api = executor.ui_to_api(json.loads((ROOT / "workflows" / OFFICIAL).read_text()), _classes())
    nodes = {node["class_type"]: node["inputs"] for node in api.values()}
    sampler = nodes["ReViSESampler"]
    assert {k: sampler[k] for k in ("steps", "shift", "scheduler", "seed", "guidance_mode", "sigma_schedule")} == {
        k: preset.sampler[k] for k in ("steps", "shift", "scheduler", "seed", "guidance_mode", "sigma_schedule")}
    assert sampler["guidance"] == preset.sampler["guidance_scale"]
    encode = nodes["ReViSEVAEEncode"]
    assert (encode["num_frames"], encode["height"], encode["width"], encode["resize"], encode["skip_frames"]) == (
        preset.settings["num_frames"], preset.settings["height"], preset.settings["width"], preset.settings["resize"],
        preset.settings["skip_frames"])
    assert nodes["CreateVideo"]["fps"] == preset.output_fps
    assert nodes["ReViSEVLMEncode"]["frames"] == encode["images"]  # the VLM reads the video itself (frame 0)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_in_sync_with_the_node_definitions(path):
    sys.path.insert(0, str(ROOT / "workflows"))
    import build

    assert path.read_text() == build.render(path.name), f"{path.name} is stale: run python workflows/build.py"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_structure(path):
    workflow = json.loads(path.read_text())
    nodes = {node["id"]: node for node in workflow["nodes"]}
    known = set(ROOT_PACKAGE.NODE_CLASS_MAPPINGS) | BUILTINS_ALLOWED
    assert {node["type"] for node in nodes.values()} <= known
    assert any(node["type"] in ("MarkdownNote", "Note") for node in nodes.values()), "a note says what to download"
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        assert src in nodes and dst in nodes, f"dangling link {link_id}"
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert nodes[src]["outputs"][src_slot]["type"] == kind
    linked = {entry["link"] for node in nodes.values() for entry in node.get("inputs", []) if entry.get("link")}
    assert linked == {link[0] for link in workflow["links"]}
    # Widget values convert onto the declared inputs, with the declared types and options.
    api = executor.ui_to_api(workflow, _classes())
    for node in api.values():
        cls = _classes()[node["class_type"]]
        required = cls.INPUT_TYPES().get("required", {})
        for name, (kind, _) in required.items():
            if kind in ("STRING", "BOOLEAN") and not isinstance(node["inputs"][name], list):
                assert isinstance(node["inputs"][name], str if kind == "STRING" else bool), (node["class_type"], name)


TINY_NAMES = {
    "ReViSEDiTLoader": {"dit_name": "wan_tiny_comfyui.safetensors"},
    "ReViSEVAELoader": {"vae_name": "wan_2.1_vae_tiny.safetensors"},
    "ReViSET5Loader": {"t5_name": "umt5_tiny.safetensors", "tokenizer": "tokenizer"},
    "ReViSEVLMLoader": {"vlm_name": "tiny-qwen2_5-vl"},
    # Our connector file carries its config; the tiny Omni-Video 2 .pt has none (loader tests cover it).
    "ReViSEConnectorLoader": {"connector_name": "revise_connector_tiny.safetensors", "special_tokens": "none"},
    "ReViSEModelSetLoader": {"model_set": "revise_ckpt"},
    "ReViSELoRA": {"lora_name": "wan_tiny_step_distill_lora.safetensors"},
    "ReViSEVAEEncode": {"num_frames": 9, "width": 64, "height": 64},
    "ReViSEVLMEncode": {"caption_tokens": 8},
    "ReViSESampler": {"steps": 2},
    "ReViSEBestOfEdit": {"candidates": 2, "steps": 2},
    "ReViSEUSOTrainer": {"steps": 2, "global_batch": 2, "num_frames": 5, "width": 64, "height": 64},
}
# Half precision on the CPU has no fast conv3d kernels (a 9 x 64 x 64 VAE pass takes a minute): those runs use
# 5 frames at 32 x 32, which exercise the same dtype paths.
SIZES = {"fp32": {"frames": 9, "side": 64}, "bf16": {"frames": 5, "side": 32}, "fp16": {"frames": 5, "side": 32}}


@pytest.fixture
def comfy_dirs(tiny_model_dirs, tiny_dir, tmp_path, monkeypatch, request):
    from revise_core.video import synthetic_clip, write_video
    from trainer.demo import write_demo_data

    size = SIZES[getattr(request, "param", "fp32")]
    inputs = tmp_path / "input"
    clip = synthetic_clip(num_frames=size["frames"] + 1, height=size["side"], width=size["side"] + 16)
    write_video(inputs / "source.mp4", clip.frames, clip.fps)
    monkeypatch.setattr(executor.LoadVideo, "input_dir", inputs)
    monkeypatch.setattr(executor.SaveVideo, "output_dir", tmp_path / "output")
    manifest = write_demo_data(tmp_path / "data", count=2)
    return {"manifest": str(manifest), "output": tmp_path / "output"}


def tiny_api(path: Path, manifest: str, precision: str = "fp32", names: dict | None = None) -> dict:
    """A shipped workflow in API form, pointed at the tiny models (`names` overrides TINY_NAMES per node
    class), the test video and a demo manifest, with every loader in `precision` (clips shrunk for half
    precision, see SIZES)."""
    api = executor.ui_to_api(json.loads(path.read_text()), _classes())
    size = SIZES[precision]
    for node in api.values():
        node["inputs"].update(TINY_NAMES.get(node["class_type"], {}))
        node["inputs"].update((names or {}).get(node["class_type"], {}))
        if "precision" in node["inputs"]:
            node["inputs"]["precision"] = precision
        if node["class_type"] in ("ReViSEVAEEncode", "ReViSEUSOTrainer", "ReViSEBestOfEdit"):
            node["inputs"].update(width=size["side"], height=size["side"])
            if node["class_type"] in ("ReViSEVAEEncode", "ReViSEBestOfEdit"):
                node["inputs"]["num_frames"] = size["frames"]
        if node["class_type"] == "LoadVideo":
            node["inputs"]["file"] = "source.mp4"
        if node["class_type"] == "ReViSEUSOTrainer":
            node["inputs"]["manifest"] = manifest
    return api


def test_shipped_workflows_default_to_automatic_precision():
    for path in WORKFLOWS:
        api = executor.ui_to_api(json.loads(path.read_text()), _classes())
        precisions = {node["inputs"]["precision"] for node in api.values() if "precision" in node["inputs"]}
        assert precisions == {"auto"}, path.name


@pytest.mark.parametrize("comfy_dirs", list(SIZES), indirect=True)
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_runs_on_the_tiny_models(path, comfy_dirs, request):
    precision = request.node.callspec.params["comfy_dirs"]
    size = SIZES[precision]
    api = tiny_api(path, comfy_dirs["manifest"], precision)
    # The native workflow's sampler and decoder are ComfyUI's own (run in tests/test_real_comfyui.py): here
    # its ReViSE part runs, up to the CONDITIONING it hands to KSampler.
    outputs = [i for i, node in api.items() if node["class_type"] == "ReViSEWanConditioning"] if path.name == NATIVE else None
    results = executor.execute(api, _classes(), outputs)
    kinds = {node["class_type"]: results[node_id] for node_id, node in api.items() if node_id in results}
    if "ReViSEWanConditioning" in kinds:
        positive, negative, latent = kinds["ReViSEWanConditioning"]
        assert positive[0][0].shape == negative[0][0].shape and positive[0][0].shape[0] == 1
        assert latent["samples"].shape[2] == (size["frames"] - 1) // 4 + 1 and not latent["samples"].any()
        loaded = [results[i] for i, node in api.items() if node["class_type"] == "ReViSEModelSetLoader"]
        assert loaded and loaded[0][0] is None  # load_dit off: the native path never holds our DiT
    loaded = [results[node_id][0] for node_id, node in api.items() if node["class_type"] == "ReViSEDiTLoader"]
    assert all(compute_dtype(dit) == resolve_dtype(precision) for dit in loaded)
    if "SaveVideo" in kinds:
        saved = Path(kinds["SaveVideo"]["ui"]["files"][0])
        from revise_core.video import read_video

        assert read_video(saved).frames.shape[0] == size["frames"]
    if "ReViSESelfCritic" in kinds:
        p_yes, relative, report = kinds["ReViSESelfCritic"]
        assert 0 < p_yes < 1 and json.loads(report)["per_dimension"]
    if "ReViSEBestOfEdit" in kinds:
        frames, scores, seed = kinds["ReViSEBestOfEdit"]
        assert len(json.loads(scores)) == 2 and frames.shape == (size["frames"], size["side"], size["side"], 3)
    if "ReViSEUSOTrainer" in kinds:
        dit, connector, report, curves = kinds["ReViSEUSOTrainer"]
        assert json.loads(report)["steps"] == 2 and curves.ndim == 4
        saved = kinds["ReViSESaveCheckpoint"]["ui"]["text"]
        assert all(Path(p).is_file() for p in saved) and len(saved) == 2
        assert isinstance(dit, torch.nn.Module)

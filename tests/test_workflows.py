"""Shipped workflows: well-formed UI graphs of known nodes, in sync with the nodes, and runnable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import comfy_executor as executor
from conftest import ROOT, ROOT_PACKAGE
from revise_core.checkpoints import compute_dtype, resolve_dtype

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
BUILTINS_ALLOWED = {"LoadVideo", "GetVideoComponents", "CreateVideo", "SaveVideo", "PreviewAny", "PreviewImage",
                    "MarkdownNote", "Note"}


def _classes():
    return {**ROOT_PACKAGE.NODE_CLASS_MAPPINGS, **executor.BUILTIN_STAND_INS}


def test_five_workflows_ship():
    assert {p.name for p in WORKFLOWS} == {"revise_edit.json", "revise_edit_and_critic.json", "revise_best_of_n.json",
                                           "revise_uso_finetune.json", "revise_official_edit.json"}


def test_official_edit_workflow_has_the_presets_settings():
    from revise_core.presets import get_preset

    preset = get_preset("revise-official")
    api = executor.ui_to_api(json.loads((ROOT / "workflows" / "revise_official_edit.json").read_text()), _classes())
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


def tiny_api(path: Path, manifest: str, precision: str = "fp32") -> dict:
    """A shipped workflow in API form, pointed at the tiny models, the test video and a demo manifest, with
    every loader in `precision` (clips shrunk for half precision, see SIZES)."""
    api = executor.ui_to_api(json.loads(path.read_text()), _classes())
    size = SIZES[precision]
    for node in api.values():
        node["inputs"].update(TINY_NAMES.get(node["class_type"], {}))
        if "precision" in node["inputs"]:
            node["inputs"]["precision"] = precision
        if node["class_type"] in ("ReViSEVAEEncode", "ReViSEUSOTrainer"):
            node["inputs"].update(width=size["side"], height=size["side"])
            if node["class_type"] == "ReViSEVAEEncode":
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
    results = executor.execute(api, _classes())
    kinds = {node["class_type"]: results.get(node_id) for node_id, node in api.items()}
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

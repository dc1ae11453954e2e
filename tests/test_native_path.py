"""ComfyUI's own Wan path and the fixes found in the real frontend, without ComfyUI installed: the conditioning
node, `python -m revise_core.convert`, the model-set loader without its DiT, the dropdowns, the save folder,
interruptible VAE passes, best-of-N sizes and previews, valid report JSON. The same path inside a real
ComfyUI (one Wan call, sampling, the workflow, previews) is in tests/test_real_comfyui.py."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import ROOT_PACKAGE
from revise_core.testing.omnivideo2 import NATIVE_HEAD_DIM, NATIVE_TEXT_DIM
from revise_core.video import synthetic_clip

NODES = ROOT_PACKAGE.NODE_CLASS_MAPPINGS
# the bridge module the nodes use (the root package is imported as ComfyUI imports it, under its own name)
BRIDGE = sys.modules[f"{ROOT_PACKAGE.__name__}.nodes.comfy_bridge"]


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# --- the conditioning node ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def release_condition(tiny_models):
    """The ReViSE release's condition (its connector family and null branch) on the tiny models."""
    from revise_core.editor import EditSettings, ReviseEditor
    from revise_core.model_sets import EditModels

    models = EditModels(dit=tiny_models.dit, vae=tiny_models.vae, text=tiny_models.release_text, vlm=tiny_models.vila,
                        connector=tiny_models.release_connector)
    clip = synthetic_clip(num_frames=9, height=64, width=64)
    with torch.no_grad():
        return ReviseEditor(models).condition(clip.frames, "make the sky red", EditSettings()), models


def test_conditioning_node_hands_kSampler_the_padded_context_and_the_null_branch(release_condition):
    condition, models = release_condition
    positive, negative, latent = NODES["ReViSEWanConditioning"]().convert(condition)
    length = models.connector.config.max_context_len
    # ComfyUI's CONDITIONING: a list of [tensor [B, L, D], options]
    assert isinstance(positive, list) and len(positive) == 1 and positive[0][1] == {}
    assert positive[0][0].shape == negative[0][0].shape == (1, length, models.connector.config.context_dim)
    assert torch.equal(positive[0][0], condition.cond.float()) and torch.equal(negative[0][0], condition.uncond.float())
    # zero rows after the assembled context (pad_context's), as the release pads to max_context_len
    assert not positive[0][0][0, -1].any() and positive[0][0][0, 0].any()
    assert latent["samples"].shape == condition.source_latents.shape and not latent["samples"].any()
    assert latent["samples"].dtype == torch.float32


def test_conditioning_node_refuses_anything_but_a_revise_condition():
    with pytest.raises(TypeError, match="REVISE_COND"):
        NODES["ReViSEWanConditioning"]().convert([[torch.zeros(1, 4, 8), {}]])


# --- python -m revise_core.convert -------------------------------------------------------------------

def _header(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()


def _comfyui_wan_detection(tensors: dict[str, torch.Tensor]) -> dict:
    """ComfyUI 0.8.0's `model_detection.detect_unet_config` for Wan2.1 (by `head.modulation`)."""
    dim = tensors["head.modulation"].shape[-1]
    return {"dim": dim, "num_heads": dim // 128, "in_dim": tensors["patch_embedding.weight"].shape[1],
            "ffn_dim": tensors["blocks.0.ffn.0.weight"].shape[0], "out_dim": tensors["head.head.weight"].shape[0] // 4,
            "text_dim": 4096, "model_type": "i2v" if "img_emb.proj.0.bias" in tensors else "t2v"}


def test_convert_writes_the_release_dit_as_one_original_wan_file(tiny_dir, tmp_path, capsys):
    from revise_core import checkpoints as ckpt
    from revise_core import convert, model_sets, wan_keys
    from revise_core.dit import load_dit

    out = tmp_path / "diffusion_models" / "revise_dit.safetensors"
    # the tiny kit's DiT has small heads and text width, which ComfyUI's Wan loader would misread: refused by
    # default (test_convert_errors_are_one_line), written with the flag for our own loaders
    assert convert.main([str(tiny_dir / "revise_ckpt"), str(out), "--skip-comfyui-check"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    tensors, metadata = _header(out)
    release = model_sets.load_release_dit(tiny_dir / "revise_ckpt", dict(ckpt.read_state_dict(
        tiny_dir / "revise_ckpt" / model_sets.TRANSFORMER_FILE).tensors), dtype=torch.float32, device="cpu")
    expected = wan_keys.dit_diffusers_to_original(release.state_dict())
    # exactly the DiT, in original keys and fp32: no connector, no wan_model. prefix, every value the release's
    assert set(tensors) == set(expected) and "head.modulation" in tensors
    for key, value in expected.items():
        assert torch.equal(tensors[key], value), key
    assert {t.dtype for t in tensors.values()} == {torch.float32} and metadata["revise.format"] == "revise.dit.wan"
    # the release's transformer/model.pt won over Wan's folder (the test kit's files differ in head.head.bias)
    wan_folder = ckpt.read_state_dict(tiny_dir / "revise_ckpt" / model_sets.WAN_FOLDER /
                                      "diffusion_pytorch_model.safetensors").tensors
    assert not torch.equal(tensors["head.head.bias"], wan_folder["head.head.bias"])
    # our loader reads it back as the same model
    reloaded = load_dit(out)
    for key, value in release.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_convert_reads_an_omnivideo2_checkpoint_and_halves_the_file(tiny_dir, tiny_models, tmp_path):
    from revise_core import conversion, wan_keys

    out = tmp_path / "ov2_dit_bf16.safetensors"
    conversion.convert(tiny_dir / "omnivideo2" / "transformer" / "pytorch_model.pt", out, dtype="bf16",
                    config=str(tiny_dir / "configs" / "dit"), comfyui_prefix=True, check_comfyui=False)
    tensors, _ = _header(out)
    expected = wan_keys.dit_diffusers_to_original(tiny_models.dit.state_dict())
    assert set(tensors) == {wan_keys.COMFYUI_DIT_PREFIX + k for k in expected}
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    for key, value in expected.items():
        assert torch.equal(tensors[wan_keys.COMFYUI_DIT_PREFIX + key], value.to(torch.bfloat16)), key


def test_native_kit_has_the_sizes_comfyuis_wan_detection_assumes(tmp_path):
    """ComfyUI reads Wan's sizes from the tensors except text_dim (4096) and num_heads (dim // 128): the native
    kit (used by the real-ComfyUI test) keeps both, and the converted file detects as the model it is."""
    from revise_core import conversion
    from revise_core.model_sets import EditModels
    from revise_core.testing.omnivideo2 import write_native_models

    paths = write_native_models(tmp_path / "native")
    out = conversion.convert(paths["omnivideo2"], tmp_path / "revise_dit.safetensors", config=str(paths["dit_config"]))
    tensors, metadata = _header(out)
    config = json.loads(metadata["revise.config"])
    detected = _comfyui_wan_detection(tensors)
    assert detected == {"dim": config["num_attention_heads"] * config["attention_head_dim"],
                        "num_heads": config["num_attention_heads"], "in_dim": config["in_channels"],
                        "ffn_dim": config["ffn_dim"], "out_dim": config["out_channels"], "text_dim": config["text_dim"],
                        "model_type": "t2v"}
    assert config["attention_head_dim"] == NATIVE_HEAD_DIM and config["text_dim"] == NATIVE_TEXT_DIM
    assert config["freq_dim"] == 256  # ComfyUI fixes it too
    encoders = EditModels.load(paths["model_set"], with_dit=False)
    assert encoders.dit is None and encoders.connector.config.context_dim == NATIVE_TEXT_DIM
    with pytest.raises(ValueError, match=r"missing entries \['dit'\]"):  # an encoders-only set, as written
        EditModels.load(paths["model_set"])


@pytest.mark.parametrize("argv, message", [
    (["/nonexistent/revise_ckpt", "out.safetensors"], "source not found: /nonexistent/revise_ckpt"),
    (["SRC", "out.pt"], "must be a .safetensors file"),
    (["EMPTY", "out.safetensors"], "neither a models.json nor a ReViSE release folder"),
    (["SRC", "out.safetensors"], "ComfyUI's Wan loader assumes"),
    (["SRC", "out.safetensors", "--config", "wan2.1-t2v-1.3b"], "--config applies to single files only"),
])
def test_convert_errors_are_one_line(argv, message, tmp_path, tiny_dir, capsys):
    from revise_core import convert
    from revise_core.cli import run

    (tmp_path / "empty").mkdir()
    argv = [{"SRC": str(tiny_dir / "revise_ckpt"), "EMPTY": str(tmp_path / "empty")}.get(a, a) for a in argv]
    argv[1] = str(tmp_path / argv[1])
    assert run(convert.main, argv) == 2
    assert not (tmp_path / "out.pt").exists() and not (tmp_path / "out.safetensors").exists()
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


# --- loaders and dropdowns ---------------------------------------------------------------------------

def test_model_set_loader_can_leave_the_dit_to_comfyuis_unetloader(tiny_model_dirs):
    loader = NODES["ReViSEModelSetLoader"]
    assert loader.INPUT_TYPES()["optional"]["load_dit"][1]["default"] is True
    dit, vae, t5, vlm, connector = loader().load("revise_ckpt", "fp32", "cpu", load_dit=False)
    assert dit is None and all(m is not None for m in (vae, t5, vlm, connector))
    # a node that needs the DiT says why it got none
    with pytest.raises(TypeError, match="load_dit"):
        NODES["ReViSESampler"]().sample(None, None, 1, 1.0, 5.0, "euler", 0)


def test_dit_and_connector_dropdowns_keep_their_own_candidates(tiny_model_dirs):
    from revise_core.checkpoints import METADATA_FORMAT_KEY
    from revise_core.connector.omnivideo2 import FORMAT_NAME

    assert BRIDGE.CONNECTOR_FORMAT_NAME == FORMAT_NAME and BRIDGE.METADATA_FORMAT_KEY == METADATA_FORMAT_KEY
    dits = NODES["ReViSEDiTLoader"].INPUT_TYPES()["required"]["dit_name"][0]
    connector = NODES["ReViSEConnectorLoader"].INPUT_TYPES()["required"]
    assert "wan_tiny_comfyui.safetensors" in dits and "transformer/pytorch_model.pt" in dits
    assert not [name for name in dits if name.endswith(".pkl") or "connector" in name], dits
    assert "revise_connector_tiny.safetensors" in connector["connector_name"][0]
    assert "transformer/pytorch_model.pt" in connector["connector_name"][0]  # Omni-Video 2 holds both
    assert not [n for n in connector["connector_name"][0] if n.startswith("wan_tiny") or n.endswith(".pkl")]
    assert connector["special_tokens"][0] == ["none", "special_tokens.pkl"]


def test_save_checkpoint_writes_to_models_diffusion_models_not_the_legacy_unet(tiny_models, tmp_path, monkeypatch):
    """ComfyUI lists models/unet first for "diffusion_models"; the node's choice names models/diffusion_models."""
    models_dir = tmp_path / "models"
    fake = types.SimpleNamespace(models_dir=str(models_dir), get_folder_paths=lambda name: [
        str(models_dir / "unet"), str(models_dir / "diffusion_models")])
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    monkeypatch.setattr(BRIDGE, "in_comfyui", lambda: True)
    result = NODES["ReViSESaveCheckpoint"]().save(tiny_models.dit, "revise/mine", "diffusion_models")
    written = Path(result["ui"]["text"][0])
    assert written == models_dir / "diffusion_models" / "revise" / "mine_dit.safetensors" and written.is_file()
    assert not (models_dir / "unet").exists()


# --- interruptible VAE, best-of-N, reports ------------------------------------------------------------

class _Cancelled(Exception):
    pass


def _progress_recorder(monkeypatch, cancel_after: int | None = None):
    calls = {"totals": [], "ticks": 0, "previews": []}

    def progress(total, *, preview_latents=False):
        calls["totals"].append(total)
        calls["previews"].append(preview_latents)

        def update(info=None):
            calls["ticks"] += 1
            if cancel_after is not None and calls["ticks"] >= cancel_after:
                raise _Cancelled  # what ComfyUI's check after each progress tick raises on Cancel

        return update

    monkeypatch.setattr(BRIDGE, "progress", progress)
    return calls


@pytest.mark.parametrize("tiled", [False, True])
def test_vae_passes_tick_once_per_causal_chunk(tiny_models, tiled):
    from revise_core import vae as vae_ops

    vae = tiny_models.vae
    previous = (vae.tile_sample_min_height, vae.tile_sample_min_width, vae.tile_sample_stride_height,
                vae.tile_sample_stride_width)
    vae.tile_sample_min_height = vae.tile_sample_min_width = 32
    vae.tile_sample_stride_height = vae.tile_sample_stride_width = 16
    try:
        latents = torch.randn(1, 16, 3, 8, 8)
        ticks = []
        with torch.no_grad(), vae_ops.on_each_chunk(vae, lambda: ticks.append(1)):
            vae_ops.decode(vae, latents, tiled=tiled)
        assert len(ticks) == vae_ops.chunk_count(vae, latents.shape, tiled=tiled) == (3 * 4 * 4 if tiled else 3)
        ticks.clear()
        with torch.no_grad(), vae_ops.on_each_chunk(vae, lambda: ticks.append(1)):
            vae_ops.encode(vae, torch.rand(1, 3, 9, 64, 64) * 2 - 1)
        assert len(ticks) == vae_ops.encode_chunk_count(9) == 3
        assert not vae.encoder._forward_pre_hooks and not vae.decoder._forward_pre_hooks  # removed afterwards
    finally:
        (vae.tile_sample_min_height, vae.tile_sample_min_width, vae.tile_sample_stride_height,
         vae.tile_sample_stride_width) = previous


@pytest.mark.parametrize("node", ["encode", "decode"])
def test_vae_nodes_stop_between_chunks_on_cancel(tiny_models, monkeypatch, node):
    calls = _progress_recorder(monkeypatch, cancel_after=2)
    frames = synthetic_clip(num_frames=9, height=32, width=32).frames
    with pytest.raises(_Cancelled):
        if node == "encode":
            NODES["ReViSEVAEEncode"]().encode(tiny_models.vae, frames, 9, 32, 32, "crop", "trim")
        else:
            NODES["ReViSEVAEDecode"]().decode(tiny_models.vae, {"samples": torch.randn(1, 16, 3, 4, 4)}, False)
    assert calls["totals"] == [3] and calls["ticks"] == 2  # stopped at the second of three chunks


def test_vae_encode_counts_every_chunk_when_not_cancelled(tiny_models, monkeypatch):
    calls = _progress_recorder(monkeypatch)
    frames = synthetic_clip(num_frames=9, height=32, width=32).frames
    latent, _ = NODES["ReViSEVAEEncode"]().encode(tiny_models.vae, frames, 9, 32, 32, "crop", "trim")
    assert calls["ticks"] == calls["totals"][0] == latent["samples"].shape[2] == 3


def test_best_of_n_takes_frames_and_size_and_sends_previews(tiny_models, monkeypatch):
    calls = _progress_recorder(monkeypatch)
    frames = synthetic_clip(num_frames=12, height=48, width=80).frames
    edited, scores, seed = NODES["ReViSEBestOfEdit"]().edit(
        tiny_models.dit, tiny_models.vae, tiny_models.text, tiny_models.vlm, tiny_models.connector, frames,
        "make it red", 2, 1, 3.0, 5.0, 7, num_frames=5, width=32, height=32)
    assert edited.shape == (5, 32, 32, 3)
    assert calls["totals"] == [2] and calls["previews"] == [True] and calls["ticks"] == 2
    assert len(_strict_json(scores)) == 2 and seed in (7, 8)


def test_critic_report_is_valid_json_even_with_non_finite_scores(tiny_models, monkeypatch):
    from revise_core import critic as critic_module

    report = critic_module.CriticReport(p_yes=float("nan"), delta=float("-inf"), relative_delta=float("nan"),
                                        per_dimension={"realism": float("inf")}, reasoning="")
    monkeypatch.setattr(critic_module.SelfCritic, "report", lambda self, *args, **kwargs: report)
    frames = torch.rand(5, 32, 32, 3)
    _, _, text = NODES["ReViSESelfCritic"]().judge(tiny_models.vlm, frames, frames, "make it red", False, 2)
    assert _strict_json(text) == {"p_yes": None, "delta": None, "relative_delta": None,
                                  "per_dimension": {"realism": None}, "reasoning": ""}



def test_dropdowns_classify_safetensors_without_revise_metadata_by_tensor_names(tmp_path, monkeypatch, tiny_models):
    from safetensors.torch import save_file

    from revise_core import wan_keys

    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    connector = {k: v.contiguous() for k, v in tiny_models.connector.state_dict().items()
                 if not k.startswith("boundary.")}
    dit = {k: v.contiguous() for k, v in wan_keys.dit_diffusers_to_original(tiny_models.dit.state_dict()).items()}
    save_file(connector, str(folder / "resaved_connector.safetensors"))
    save_file({**connector, **{f"wan_model.{k}": v for k, v in dit.items()}}, str(folder / "omni_resaved.safetensors"))
    save_file(dit, str(folder / "plain_wan.safetensors"))
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    monkeypatch.setenv("REVISE_MODEL_DIRS", f"diffusion_models={folder}")
    assert BRIDGE.list_models("dit") == ["broken.safetensors", "omni_resaved.safetensors", "plain_wan.safetensors"]
    assert BRIDGE.list_models("connector") == ["broken.safetensors", "omni_resaved.safetensors",
                                               "resaved_connector.safetensors"]
    # the module names the bridge looks for are the connector families' own
    families = {k.split(".", 1)[0] for m in (tiny_models.connector, tiny_models.release_connector)
                for k in m.state_dict()} - {"boundary", "null"}
    assert families == set(BRIDGE.CONNECTOR_MODULES)


def test_trainer_node_takes_an_optional_critic_vlm_and_checks_its_type(tiny_models):
    node = NODES["ReViSEUSOTrainer"]
    assert node.INPUT_TYPES()["optional"]["critic_vlm"][0] == "REVISE_VLM"
    with pytest.raises(TypeError, match="critic_vlm: expected a REVISE_VLM"):
        node().train(tiny_models.dit, tiny_models.vae, tiny_models.text, tiny_models.vlm, tiny_models.connector,
                     "m.jsonl", "run", "uso", 1, 0.25, 0.5, 1e-4, "lora", 4, 1, 5, 64, 64, 0, False,
                     critic_vlm=object())

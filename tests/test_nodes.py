"""Node contracts and node-level errors, without ComfyUI installed."""

from __future__ import annotations

import pytest
import torch

from conftest import ROOT_PACKAGE

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


@pytest.fixture(scope="module")
def mappings():
    return ROOT_PACKAGE.NODE_CLASS_MAPPINGS


def test_every_node_declares_the_classic_contract(mappings):
    assert len(mappings) == 19
    display = ROOT_PACKAGE.NODE_DISPLAY_NAME_MAPPINGS
    for node_id, cls in mappings.items():
        assert node_id.startswith("ReViSE") and node_id == cls.__name__
        assert cls.CATEGORY.startswith("ReViSE/"), node_id
        assert isinstance(cls.RETURN_TYPES, tuple) and callable(getattr(cls, cls.FUNCTION))
        assert cls.DESCRIPTION and display[node_id].startswith("ReViSE")
        if cls.RETURN_TYPES:
            assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS), node_id
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                kind, options = entry
                assert isinstance(kind, (str, list)), (node_id, name)
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
                if kind in ("INT", "FLOAT"):
                    assert options["min"] <= options["default"] <= options["max"], (node_id, name)
                if isinstance(kind, list) and kind:
                    assert options.get("default", kind[0]) in kind, (node_id, name)


def test_function_signatures_accept_exactly_the_declared_inputs(mappings):
    import inspect

    for node_id, cls in mappings.items():
        spec = cls.INPUT_TYPES()
        declared = set(spec.get("required", {})) | set(spec.get("optional", {}))
        parameters = set(inspect.signature(getattr(cls, cls.FUNCTION)).parameters) - {"self"}
        assert parameters == declared, (node_id, parameters ^ declared)


def test_node_ids_do_not_collide_with_comfyui_builtins(mappings):
    builtins = {"VAELoader", "UNETLoader", "CLIPLoader", "KSampler", "VAEDecode", "VAEEncode", "SaveVideo",
                "LoadVideo", "CreateVideo", "GetVideoComponents"}
    assert not builtins & set(mappings)


def test_missing_model_file_names_every_folder(tiny_model_dirs, mappings):
    with pytest.raises(FileNotFoundError) as error:
        mappings["ReViSEDiTLoader"]().load("wan2.1_t2v_1.3B_fp16.safetensors", "auto", "fp32", "cpu")
    for folder in tiny_model_dirs["diffusion_models"]:
        assert str(folder) in str(error.value)


def test_wrong_model_type_plugged_in(tiny_model_dirs, mappings):
    vae = mappings["ReViSEVAELoader"]().load("wan_2.1_vae_tiny.safetensors", "fp32", "cpu")[0]
    with pytest.raises(TypeError, match="dit: expected a REVISE_DIT from a ReViSE loader, got AutoencoderKLWan"):
        mappings["ReViSESampler"]().sample(vae, None, 2, 3.0, 5.0, "unipc", 0)
    with pytest.raises(TypeError, match="vlm: expected a REVISE_VLM"):
        mappings["ReViSESelfCritic"]().judge(vae, torch.zeros(5, 8, 8, 3), torch.zeros(5, 8, 8, 3), "x", False, 2)


def test_video_too_short_is_a_clear_node_error(tiny_model_dirs, mappings):
    from revise_core.video import VideoError

    vae = mappings["ReViSEVAELoader"]().load("wan_2.1_vae_tiny.safetensors", "fp32", "cpu")[0]
    with pytest.raises(VideoError, match="3 frames, at least 5"):
        mappings["ReViSEVAEEncode"]().encode(vae, torch.rand(3, 64, 64, 3), 0, 0, 0, "crop", "trim")


def test_loader_dropdowns_list_the_model_folders(tiny_model_dirs, mappings):
    assert "wan_tiny_comfyui.safetensors" in mappings["ReViSEDiTLoader"].INPUT_TYPES()["required"]["dit_name"][0]
    assert "tiny-qwen2_5-vl" in mappings["ReViSEVLMLoader"].INPUT_TYPES()["required"]["vlm_name"][0]
    t5 = mappings["ReViSET5Loader"].INPUT_TYPES()["required"]
    assert "umt5_tiny.safetensors" in t5["t5_name"][0] and "tokenizer" in t5["tokenizer"][0]
    connector = mappings["ReViSEConnectorLoader"].INPUT_TYPES()["required"]
    assert "special_tokens.pkl" in connector["special_tokens"][0]


def test_loaded_weights_are_usable_by_autograd_after_inference_mode(tiny_model_dirs, mappings):
    """Loaders run under ComfyUI's inference mode, yet their weights must serve the trainer and critic."""
    with torch.inference_mode():
        vae = mappings["ReViSEVAELoader"]().load("wan_2.1_vae_tiny.safetensors", "fp32", "cpu")[0]
    assert not any(p.is_inference() for p in vae.parameters())


def test_model_set_loader_lists_and_loads_the_release_folder(tiny_model_dirs, tiny_dir):
    from nodes import comfy_bridge
    from revise_core.connector import VisionHeadConnector

    loader = ROOT_PACKAGE.NODE_CLASS_MAPPINGS["ReViSEModelSetLoader"]
    names = loader.INPUT_TYPES()["required"]["model_set"][0]
    assert "revise_ckpt" in names and not any(n.startswith("revise_ckpt/") for n in names)  # not its sub-folders
    dit, vae, t5, vlm, connector = loader().load("revise_ckpt", "fp32", "cpu")
    assert isinstance(connector, VisionHeadConnector) and type(vlm).__name__ == "VilaModel"
    assert comfy_bridge.compute_device_of(dit).type == "cpu"
    with pytest.raises(Exception, match="not found"):
        loader().load("no_such_set", "fp32", "cpu")


def test_loaders_store_the_encoders_in_int8_and_the_dit_in_fp8_and_the_nodes_still_run(tiny_model_dirs, tiny_dir):
    """The loaders' storage inputs (revise_core/placement.py): smaller models that ComfyUI then counts at their
    stored size, and a VLM encode that runs on them."""
    from torchao.quantization import Int8Tensor

    from nodes import comfy_bridge
    from revise_core.video import synthetic_clip

    loader = ROOT_PACKAGE.NODE_CLASS_MAPPINGS["ReViSEModelSetLoader"]
    optional = loader.INPUT_TYPES()["optional"]
    assert optional["encoders"][0] == ["compute", "int8"] and "half of bf16" in optional["encoders"][1]["tooltip"]
    plain = loader().load("revise_ckpt", "fp32", "cpu")
    dit, vae, t5, vlm, connector = loader().load("revise_ckpt", "fp32", "cpu", encoders="int8", dit_storage="fp8")
    assert any(isinstance(m.weight, Int8Tensor) for m in vlm.model.modules() if type(m) is torch.nn.Linear)
    assert comfy_bridge.weight_bytes(vlm.model) < 0.6 * comfy_bridge.weight_bytes(plain[3].model)
    assert {m.weight.dtype for m in dit.blocks.modules() if isinstance(m, torch.nn.Linear)} == {torch.float8_e4m3fn}
    encode = ROOT_PACKAGE.NODE_CLASS_MAPPINGS["ReViSEVLMEncode"]()
    vlm_cond, _ = encode.encode(vlm, synthetic_clip(5, 32, 32).frames, "make it red", "none", 2, 8)
    assert torch.isfinite(vlm_cond.u).all()
    with pytest.raises(ValueError, match="not available for the dit"):
        loader().load("revise_ckpt", "fp32", "cpu", dit_storage="int8")


def test_vlm_encode_gives_a_qwen3_vl_the_source_frame_rate():
    """Qwen3-VL writes each frame's time into its prompt: the node's fps input (Get Video Components' fps in the
    templates) reaches it, as the command line's frame rate does from the file."""
    from revise_core.editor import EditSettings, encode_instruction
    from revise_core.testing.omnivideo2 import tiny_qwen3_vl
    from revise_core.video import synthetic_clip

    vlm = tiny_qwen3_vl(seed=0)
    frames = synthetic_clip(num_frames=9, height=32, width=32).frames
    encode = ROOT_PACKAGE.NODE_CLASS_MAPPINGS["ReViSEVLMEncode"]()
    with torch.no_grad():
        at = {fps: encode.encode(vlm, frames, "make it red", "none", 4, 8, fps=fps)[0].u for fps in (8.0, 30.0)}
        direct = encode_instruction(vlm, frames, "make it red", EditSettings(vlm_frames=4, fps=30.0)).u
    assert torch.equal(at[30.0], direct.cpu())
    assert at[8.0].shape != at[30.0].shape or not torch.equal(at[8.0], at[30.0])  # other times, other prompt

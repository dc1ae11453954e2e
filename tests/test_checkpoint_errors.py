"""Bad inputs give errors that name the file, what was found and what was expected."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

from revise_core import checkpoints as ckpt
from revise_core import wan_keys
from revise_core.connector import load_connector
from revise_core.dit import load_dit
from revise_core.text import load_text_encoder
from revise_core.vae import load_vae
from revise_core.vlm import load_vlm


def _truncate(src, dst, fraction=0.5):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def test_unknown_layout_names_file_keys_and_supported_layouts(tmp_path):
    path = tmp_path / "mystery.safetensors"
    save_file({"encoder.layers.0.weight": torch.zeros(2, 2), "decoder.bias": torch.zeros(2)}, str(path))
    with pytest.raises(ckpt.UnknownLayoutError) as error:
        load_dit(path)
    message = str(error.value)
    assert str(path) in message
    assert "encoder.layers.0.weight" in message  # what was found
    assert "Supported dit layouts" in message and "wan-comfyui" in message and "omnivideo" in message


def test_known_layout_with_missing_and_misshaped_keys(tmp_path, tiny_models, tiny_dir):
    original = wan_keys.dit_diffusers_to_original(tiny_models.dit.state_dict())
    original.pop("blocks.1.ffn.2.weight")
    original["head.head.weight"] = torch.zeros(3, 3)
    path = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in original.items()}, str(path))
    with pytest.raises(ckpt.UnknownLayoutError) as error:
        load_dit(path, config=tiny_dir / "configs" / "dit")
    message = str(error.value)
    assert str(path) in message and "'wan'" in message
    assert "1 missing" in message and "blocks.1.ffn.net.2.weight" in message
    assert "wrong shape" in message and "proj_out.weight: file (3, 3)" in message


def test_file_with_no_config_and_no_matching_variant_lists_what_was_compared(tiny_dir, tmp_path):
    from safetensors import safe_open

    source = tiny_dir / "dit" / "wan_tiny.safetensors"
    with safe_open(str(source), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    bare = tmp_path / "no_metadata.safetensors"
    save_file(tensors, str(bare))  # same weights, no embedded config
    with pytest.raises(ckpt.UnknownLayoutError) as error:
        load_dit(bare)
    message = str(error.value)
    assert "match no known variant" in message and "wan2.1-t2v-1.3b" in message and "wan2.1-t2v-14b" in message
    assert "config=" in message


def test_missing_file_lists_every_folder_searched(tmp_path):
    first, second = tmp_path / "diffusion_models", tmp_path / "unet"
    first.mkdir()
    second.mkdir()
    with pytest.raises(ckpt.ModelFileNotFoundError) as error:
        ckpt.find_model_file("wan2.1_t2v_1.3B_fp16.safetensors", [first, second])
    message = str(error.value)
    assert str(first / "wan2.1_t2v_1.3B_fp16.safetensors") in message
    assert str(second / "wan2.1_t2v_1.3B_fp16.safetensors") in message
    (second / "wan2.1_t2v_1.3B_fp16.safetensors").write_bytes(b"")
    assert ckpt.find_model_file("wan2.1_t2v_1.3B_fp16.safetensors", [first, second]).parent == second


@pytest.mark.parametrize("loader", [load_dit, load_vae, load_connector])
def test_missing_path_is_a_file_not_found_error(tmp_path, loader):
    with pytest.raises(FileNotFoundError, match="not found"):
        loader(tmp_path / "nope.safetensors")


def test_truncated_safetensors_is_reported_as_corrupt(tiny_dir, tmp_path):
    path = _truncate(tiny_dir / "dit" / "wan_tiny.safetensors", tmp_path / "cut.safetensors")
    with pytest.raises(ckpt.CorruptCheckpointError) as error:
        load_dit(path)
    assert str(path) in str(error.value) and "truncated or corrupt" in str(error.value)


def test_garbage_safetensors_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x00\x01not a safetensors file at all" * 10)
    with pytest.raises(ckpt.CorruptCheckpointError, match="truncated or corrupt"):
        load_vae(path)


def test_truncated_pickle_is_reported_as_corrupt(tiny_dir, tmp_path):
    path = _truncate(tiny_dir / "vae" / "Wan2.1_VAE_tiny.pth", tmp_path / "cut.pth")
    with pytest.raises(ckpt.CorruptCheckpointError) as error:
        load_vae(path, config=tiny_dir / "configs" / "vae")
    assert str(path) in str(error.value)


class _Payload:
    def __reduce__(self):
        return (shutil.rmtree, ("/definitely/not/here",))


def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload()}, path)
    with pytest.raises(ckpt.CheckpointError, match="refused to unpickle"):
        ckpt.read_state_dict(path)
    tokens = tmp_path / "special_tokens.pkl"
    with open(tokens, "wb") as handle:
        pickle.dump({"<img_st>": _Payload()}, handle)
    with pytest.raises(ckpt.CheckpointError, match="shutil.rmtree"):
        ckpt.read_tensor_pickle(tokens)


def test_pickle_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ckpt.CheckpointError, match="not a state dict"):
        ckpt.read_state_dict(path)


def test_nested_deepspeed_state_dict_is_unwrapped(tmp_path):
    path = tmp_path / "ds.pt"
    torch.save({"module": {"a.weight": torch.ones(2)}}, path)
    assert set(ckpt.read_state_dict(path).tensors) == {"a.weight"}


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(ckpt.CheckpointError, match="unsupported file type '.gguf'"):
        ckpt.read_state_dict(path)


def test_diffusers_folder_without_config(tiny_dir, tmp_path):
    folder = tmp_path / "dit"
    shutil.copytree(tiny_dir / "dit" / "diffusers", folder)
    (folder / "config.json").unlink()
    with pytest.raises(ckpt.ModelFileNotFoundError, match="needs a config.json"):
        load_dit(folder)


def test_single_t5_file_needs_a_tokenizer_folder(tiny_dir):
    with pytest.raises(ckpt.ModelFileNotFoundError, match="tokenizer folder"):
        load_text_encoder(tiny_dir / "t5" / "umt5_tiny.safetensors")


def test_t5_tokenizer_folder_without_tokenizer_files(tiny_dir, tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="could not load the umT5 tokenizer"):
        load_text_encoder(tiny_dir / "t5" / "umt5_tiny.safetensors", tokenizer=tmp_path)


def test_vlm_folder_errors(tiny_dir, tmp_path):
    with pytest.raises(ckpt.ModelFileNotFoundError, match="VLM folder not found"):
        load_vlm(tmp_path / "absent")
    with pytest.raises(ckpt.ModelFileNotFoundError, match="no config.json"):
        load_vlm(tmp_path)
    folder = tmp_path / "vlm"
    shutil.copytree(tiny_dir / "vlm" / "tiny-qwen2_5-vl", folder)
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys() if "layers.1.mlp" not in k}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ckpt.UnknownLayoutError, match="missing"):
        load_vlm(folder)


def test_connector_rejects_vlm_of_another_width(tiny_models):
    with pytest.raises(ValueError, match="vlm_dim=64"):
        tiny_models.connector.project_vlm(torch.zeros(3, 48))


def test_special_tokens_file_missing_a_token(tiny_dir, tmp_path):
    tokens = tmp_path / "special_tokens.pkl"
    with open(tokens, "wb") as handle:
        pickle.dump({"<img_st>": torch.zeros(1, 32)}, handle)
    with pytest.raises(ckpt.CheckpointError, match="lacks '<img_ed>'"):
        load_connector(tiny_dir / "omnivideo2" / "transformer" / "pytorch_model.pt",
                       config=tiny_dir / "configs" / "connector", special_tokens=tokens)


def test_unknown_variant_and_dtype_names(tiny_dir):
    with pytest.raises(ValueError, match="neither a known variant"):
        load_dit(tiny_dir / "dit" / "wan_tiny.safetensors", config="wan9-huge")
    with pytest.raises(ValueError, match="unknown dtype 'fp12'"):
        ckpt.resolve_dtype("fp12")


def test_files_without_config_are_matched_against_the_shipped_variants(tiny_dir):
    """Tiny weights match no shipped (real-size) variant: each loader says so and names the variants."""
    with pytest.raises(ckpt.UnknownLayoutError, match="match no known variant.*\n.*umt5-xxl"):
        load_text_encoder(tiny_dir / "t5" / "models_t5_umt5_tiny_enc.pth", tokenizer=tiny_dir / "t5" / "tokenizer")
    with pytest.raises(ckpt.UnknownLayoutError, match="match no known variant.*\n.*omnivideo2-1.3b"):
        load_connector(tiny_dir / "omnivideo2" / "transformer" / "pytorch_model.pt")
    with pytest.raises(ckpt.UnknownLayoutError, match="match no known variant.*\n.*wan2.1-vae"):
        load_vae(tiny_dir / "vae" / "Wan2.1_VAE_tiny.pth")


def test_a_hostile_models_json_is_refused_entry_by_entry(tmp_path, caplog):
    """Wrong types and huge numbers name their entries in one error; a path outside the folder is warned about."""
    import json
    import logging

    from revise_core.checkpoints import CheckpointError
    from revise_core.model_sets import EditModels

    (tmp_path / "models.json").write_text(json.dumps({
        "dit": 12, "vae": ["a"], "t5": "", "vlm": "../../etc", "connector": "c.safetensors",
        "dit_config": 10**30}))
    with caplog.at_level(logging.WARNING), pytest.raises(CheckpointError) as error:
        EditModels.load(tmp_path)
    message = str(error.value)
    assert "models.json" in message and all(f"'{key}'" in message for key in ("dit", "vae", "t5", "dit_config"))
    assert "'vlm' points outside" in caplog.text

"""Every supported checkpoint layout, written from a tiny model and loaded back, is that model exactly."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_close
from revise_core import checkpoints as ckpt
from revise_core.connector import load_connector
from revise_core.dit import load_dit
from revise_core.text import load_text_encoder
from revise_core.vae import load_vae
from revise_core.vlm import load_vlm

STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
                  "fp8_e4m3fn": torch.float8_e4m3fn}


def _entries(manifest: dict, component: str) -> list[dict]:
    return [e for e in manifest["files"] if e["component"] == component]


def _load(tiny_dir, entry: dict):
    kwargs = {}
    for key in ("config", "tokenizer", "special_tokens"):
        if key in entry:
            kwargs[key] = tiny_dir / entry[key]
    loader = {"dit": load_dit, "vae": load_vae, "t5": load_text_encoder, "vlm": load_vlm,
              "connector": load_connector}[entry["component"]]
    return loader(tiny_dir / entry["path"], **kwargs)


def _reference_weights(module: torch.nn.Module, storage: str) -> dict[str, torch.Tensor]:
    """The original weights as they survive the storage dtype (what an exact loader must give back)."""
    state = module.state_dict()
    if storage == "fp8_e4m3fn_scaled":
        # Independent computation of ComfyUI's scaled fp8: 2-D weights quantised per tensor.
        out = {}
        for key, tensor in state.items():
            if key.endswith(".weight") and tensor.ndim == 2:
                scale = tensor.abs().max().clamp(min=1e-12) / 448.0
                out[key] = (tensor / scale).to(torch.float8_e4m3fn).float() * scale
            else:
                out[key] = tensor
        return out
    dtype = STORAGE_DTYPES[storage]
    return {k: v.to(dtype).to(v.dtype) for k, v in state.items()}


def _with_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    import copy

    clone = copy.deepcopy(module)
    clone.load_state_dict(weights)
    return clone


def _dit_forward(dit: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 16, 2, 8, 8, generator=generator)
    context = torch.randn(1, 7, 32, generator=generator)
    with torch.no_grad():
        return dit(hidden_states=latents, timestep=torch.tensor([431.0]), encoder_hidden_states=context,
                   return_dict=False)[0]


def test_manifest_covers_every_layout(tiny_manifest, tiny_dir):
    seen = {(e["component"], e["layout"]) for e in tiny_manifest["files"]}
    assert seen >= {
        ("dit", "diffusers-folder"), ("dit", "wan"), ("dit", "wan-comfyui"), ("dit", "diffusers"),
        ("dit", "omnivideo"), ("vae", "diffusers-folder"), ("vae", "wan"), ("t5", "hf-folder"), ("t5", "hf"),
        ("t5", "wan"), ("vlm", "hf-folder"), ("vlm", "vila"), ("connector", "revise"), ("connector", "omnivideo2"),
    }
    assert {e["storage"] for e in tiny_manifest["files"] if e["component"] == "dit"} >= {
        "fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_e4m3fn_scaled"}
    for entry in tiny_manifest["files"]:
        assert (tiny_dir / entry["path"]).exists(), entry


def test_dit_layouts_load_exactly(tiny_dir, tiny_manifest, tiny_models):
    for entry in _entries(tiny_manifest, "dit"):
        loaded = _load(tiny_dir, entry)
        reference = _with_weights(tiny_models.dit, _reference_weights(tiny_models.dit, entry["storage"]))
        for key, tensor in reference.state_dict().items():
            assert_close(loaded.state_dict()[key], tensor, what=f"{entry['path']} {key}")
        assert_close(_dit_forward(loaded), _dit_forward(reference), what=entry["path"])


def test_fp8_storage_stays_close_to_the_original(tiny_dir, tiny_models):
    loaded = load_dit(tiny_dir / "dit" / "wan_tiny_fp8_scaled.safetensors")
    original = tiny_models.dit.state_dict()
    for key, tensor in loaded.state_dict().items():
        # e4m3fn keeps 3 mantissa bits: relative error of a scaled value stays under 2^-4 of the max.
        tolerance = original[key].abs().max().item() / 16 + 1e-12
        assert (tensor - original[key]).abs().max().item() <= tolerance, key


def test_vae_layouts_load_exactly(tiny_dir, tiny_manifest, tiny_models):
    video = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        expected_latents = tiny_models.vae.encode(video).latent_dist.mode()
        expected_frames = tiny_models.vae.decode(expected_latents).sample
    for entry in _entries(tiny_manifest, "vae"):
        vae = _load(tiny_dir, entry)
        with torch.no_grad():
            latents = vae.encode(video).latent_dist.mode()
            frames = vae.decode(latents).sample
        assert_close(latents, expected_latents, what=entry["path"])
        assert_close(frames, expected_frames, what=entry["path"])


def test_text_encoder_layouts_load_exactly(tiny_dir, tiny_manifest, tiny_models):
    text = "the ice cube melts into a puddle"
    reference = tiny_models.text
    batch = reference.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        expected = reference.model(**batch).last_hidden_state
    for entry in _entries(tiny_manifest, "t5"):
        loaded = _load(tiny_dir, entry)
        assert loaded.tokenizer([text])["input_ids"] == reference.tokenizer([text])["input_ids"]
        with torch.no_grad():
            actual = loaded.model(**loaded.tokenizer([text], return_tensors="pt")).last_hidden_state
        assert_close(actual, expected, what=entry["path"])
        assert loaded.model.shared.weight is loaded.model.encoder.embed_tokens.weight


def test_vlm_folder_loads_exactly(tiny_dir, tiny_manifest, tiny_models):
    (entry,) = [e for e in _entries(tiny_manifest, "vlm") if e["layout"] == "hf-folder"]
    loaded = load_vlm(tiny_dir / entry["path"], dtype="fp32")
    reference = tiny_models.vlm
    for key, tensor in reference.model.state_dict().items():
        assert_close(loaded.model.state_dict()[key], tensor, what=key)
    ids = reference.tokenizer(["Does the edited video satisfy the instruction ? Yes"], return_tensors="pt")
    with torch.no_grad():
        expected = reference.model(**ids).logits
        actual = loaded.model(**ids).logits
    assert_close(actual, expected, what="VLM logits")
    assert loaded.preprocess == reference.preprocess
    assert loaded.hidden_size == 64
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_connector_layouts_load_exactly(tiny_dir, tiny_manifest, tiny_models):
    reference = tiny_models.connector
    generator = torch.Generator().manual_seed(3)
    u = torch.randn(5, reference.config.vlm_dim, generator=generator)
    latents = torch.randn(1, 16, 2, 8, 8, generator=generator)
    with torch.no_grad():
        expected_u, expected_v = reference.project_vlm(u), reference.adapt_video(latents)
    for entry in _entries(tiny_manifest, "connector"):
        loaded = _load(tiny_dir, entry)
        assert loaded.config == reference.config, entry["path"]
        with torch.no_grad():
            assert_close(loaded.project_vlm(u), expected_u, what=entry["path"])
            assert_close(loaded.adapt_video(latents), expected_v, what=entry["path"])
        for key, tensor in reference.state_dict().items():
            assert_close(loaded.state_dict()[key], tensor, what=f"{entry['path']} {key}")


def test_omnivideo2_connector_without_special_tokens_has_no_boundary(tiny_dir, tiny_models, caplog):
    path = tiny_dir / "omnivideo2" / "transformer" / "pytorch_model.pt"
    loaded = load_connector(path, config=tiny_dir / "configs" / "connector")
    assert loaded.config.boundary_token_len == 0
    assert "special_tokens" in caplog.text
    with torch.no_grad():
        u = torch.randn(3, 64)
        assert_close(loaded.project_vlm(u), tiny_models.connector.project_vlm(u))


def test_single_file_without_config_matches_a_variant_exactly(tiny_dir, tiny_models, tmp_path):
    """A bare original-layout file (no metadata) is identified by an exact match against the table."""
    from revise_core import wan_keys
    from revise_core.testing import tiny_dit_config
    from revise_core.variants import Variant

    bare = tmp_path / "bare.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in wan_keys.dit_diffusers_to_original(tiny_models.dit.state_dict()).items()},
              str(bare))
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    import json

    (config_dir / "config.json").write_text(json.dumps(tiny_dit_config()))

    class TinyVariant(Variant):
        @property
        def config_path(self):
            return config_dir / "config.json"

    table = (TinyVariant("tiny-dit", "dit", "test", "unused"),)
    loaded = load_dit(bare, variants=table)
    assert_close(_dit_forward(loaded), _dit_forward(tiny_models.dit))
    with pytest.raises(ckpt.UnknownLayoutError, match="match no known variant"):
        load_dit(bare)  # the shipped table has only real sizes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_compute_dtype_follows_diffusers_policy(tiny_dir, tiny_models, dtype):
    """Half precision keeps diffusers' _keep_in_fp32_modules in fp32, as from_pretrained does.

    Where diffusers rounds those fp32 modules through the half dtype on the way, we keep the file's
    exact fp32 values; every half-precision tensor equals diffusers' exactly.
    """
    from diffusers import WanTransformer3DModel

    ours = load_dit(tiny_dir / "dit" / "wan_tiny.safetensors", dtype=dtype).state_dict()
    theirs = WanTransformer3DModel.from_pretrained(str(tiny_dir / "dit" / "diffusers"), torch_dtype=dtype,
                                                   local_files_only=True).state_dict()
    original = tiny_models.dit.state_dict()
    assert {k: v.dtype for k, v in ours.items()} == {k: v.dtype for k, v in theirs.items()}
    kept = [k for k, v in ours.items() if v.dtype == torch.float32]
    assert kept and any("scale_shift_table" in k for k in kept)
    for key, tensor in ours.items():
        reference = original[key] if tensor.dtype == torch.float32 else theirs[key]
        assert_close(tensor.float(), reference.float(), what=key)

"""The ReViSE release's connector (VisionHead + DM_Adapter + visual adapter, Omni-Video v1 layout): its folder
files in the release's own formats, the official computation against an independent composition, the
official context order, cut and null branch, and bad folders."""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import assert_close
from revise_core import checkpoints as ckpt
from revise_core.connector import VisionHeadConnector, load_connector, load_release_connector, revise, save_connector
from revise_core.text import pad_context
from revise_core.variants import get_variant
from trainer.model import Generator


@pytest.fixture(scope="module")
def release(tiny_dir):
    return tiny_dir / "revise_ckpt"


@pytest.fixture(scope="module")
def connector(tiny_models):
    return tiny_models.release_connector


@pytest.fixture
def release_copy(release, tmp_path):
    folder = tmp_path / "revise_ckpt"
    for name in ("adapter", "vision_head", "transformer", "special_tokens", "unconditioned_context"):
        shutil.copytree(release / name, folder / name)
    return folder


def test_release_folder_loads_exactly_and_the_transformer_file_wins(release, connector, caplog):
    with caplog.at_level(logging.INFO, logger="revise_core.connector.revise"):
        loaded = load_release_connector(release)
    assert isinstance(loaded, VisionHeadConnector) and loaded.config == connector.config
    expected = connector.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key
    # adapter/model.pt and the VisionHead file hold other values for one tensor each (the kit writes them so)
    assert "overrides 2 tensors" in caplog.text


def _official_transformer(state: dict, name: str, shape: revise.TransformerShape) -> nn.Transformer:
    transformer = nn.Transformer(d_model=shape.dim, nhead=8, num_encoder_layers=shape.encoder_layers,
                                 num_decoder_layers=shape.decoder_layers, dim_feedforward=shape.ffn_dim, dropout=0.0,
                                 batch_first=True, norm_first=True)
    transformer.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})
    return transformer.eval()


def _official_head(state: dict, name: str, shape, x: torch.Tensor) -> torch.Tensor:
    """VisionHead / DM_Adapter.forward as the release writes it (fc, then the transformer on repeated queries)."""
    hidden = F.linear(F.gelu(F.linear(x, state["fc.0.weight"], state["fc.0.bias"])), state["fc.2.weight"],
                      state["fc.2.bias"])
    queries = state["decoder_query"].repeat(hidden.shape[0], 1, 1)
    return _official_transformer(state, name, shape)(src=hidden, tgt=queries)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")  # nn.Transformer with norm_first
def test_vlm_tokens_equal_an_independent_composition(connector):
    cfg = connector.config
    state = connector.state_dict()
    u = torch.randn(11, cfg.vlm_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = connector.project_vlm(u)
        head = _official_head({k[len("vision_head."):]: v for k, v in state.items() if k.startswith("vision_head.")},
                              "visionHeadAdapter", cfg.vision_head, u[None])
        adapted = _official_head({k[len("dm_adapter."):]: v for k, v in state.items() if k.startswith("dm_adapter.")},
                                 "adapter", cfg.dm_adapter, head.reshape(-1, 1, head.shape[-1]))
    assert head.shape == (1, 4, cfg.vision_head.dim) and adapted.shape == (4, cfg.dm_adapter.queries, cfg.context_dim)
    assert ours.shape == (cfg.vlm_tokens, cfg.context_dim)
    assert_close(ours, adapted.reshape(-1, cfg.context_dim), atol=1e-6)  # token-major: head token 0's 8, then 1's ...


def test_context_has_the_official_order_cut_and_null_branch(connector):
    cfg, bound = connector.config, connector.boundary
    video = torch.randn(6, cfg.context_dim)
    vlm = torch.randn(cfg.vlm_tokens, cfg.context_dim)
    text = torch.randn(9, cfg.context_dim)
    with torch.no_grad():
        context = connector.assemble(vlm, text, video)
    expected = torch.cat([bound.img_st, video, bound.img_ed, bound.ipl_st, vlm, bound.ipl_ed, bound.prp_st, text,
                          bound.prp_ed])
    assert torch.equal(context, expected)
    long_text = torch.randn(cfg.max_context_len, cfg.context_dim)
    cut = connector.assemble(vlm, long_text, video)
    assert cut.shape[0] == cfg.max_context_len == 2560  # the official cut keeps the first rows: the text's end goes
    assert torch.equal(cut[: expected.shape[0] - 9 - 3], expected[: expected.shape[0] - 9 - 3])
    padded = pad_context(context, cfg.max_context_len)
    assert padded.shape == (2560, cfg.context_dim) and not padded[context.shape[0]:].any()  # zero rows, as Wan pads
    with torch.no_grad():
        null = connector.null_context(video)
        expected_null = connector.assemble(connector.project_vlm(connector.null.vlm), connector.null.text, video)
    assert torch.equal(null, expected_null)
    assert torch.equal(null[: 2 + 6 + 2], torch.cat([bound.img_st, video, bound.img_ed]))  # the real source video


def test_training_condition_drop_is_the_release_null_branch(connector, tiny_models):
    generator = Generator(tiny_models.dit, connector)
    latents = torch.randn(1, 16, 2, 8, 8)
    with torch.no_grad():
        dropped = generator.context(latents, torch.randn(5, connector.config.vlm_dim), torch.randn(4, 32), drop=True)
        video = connector.adapt_video(latents)[0]
        expected = pad_context(connector.null_context(video), connector.config.max_context_len)[None]
    assert torch.equal(dropped, expected)


def test_our_safetensors_round_trip_keeps_the_family(connector, tmp_path):
    path = save_connector(connector, tmp_path / "release_connector.safetensors")
    loaded = load_connector(path)
    assert isinstance(loaded, VisionHeadConnector) and loaded.config == connector.config
    for key, value in connector.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_pickles_written_on_a_gpu_load_on_the_cpu(release_copy):
    """The release's pickles were dumped from cuda:0 tensors; their storages must map to the CPU."""
    tokens = {"<img_st>": torch.randn(2, 32)}
    with mock.patch("torch.serialization.location_tag", return_value="cuda:0"):
        with open(release_copy / "special_tokens" / "tokens.pkl", "wb") as handle:
            pickle.dump(tokens, handle)
    assert b"cuda:0" in (release_copy / "special_tokens" / "tokens.pkl").read_bytes()
    read = ckpt.read_pickled_tensors(release_copy / "special_tokens" / "tokens.pkl")
    assert torch.equal(read["<img_st>"], tokens["<img_st>"]) and read["<img_st>"].device.type == "cpu"


@pytest.mark.parametrize("relative", [revise.ADAPTER_FILE, revise.VISION_HEAD_FILE, revise.TRANSFORMER_FILE,
                                      revise.SPECIAL_TOKENS_FILE, revise.UNCONDITIONED_FILE])
def test_a_missing_file_is_named(release_copy, relative):
    (release_copy / relative).unlink()
    with pytest.raises(ckpt.ModelFileNotFoundError, match=relative.replace("/", ".")):
        load_release_connector(release_copy)


def test_missing_visual_adapter_keys_are_an_error_not_random_weights(release_copy):
    path = release_copy / revise.TRANSFORMER_FILE
    state = torch.load(path, weights_only=True)
    state["module"] = {k: v for k, v in state["module"].items() if not k.startswith("visual_context_adapter.")}
    torch.save(state, path)
    with pytest.raises(ckpt.CheckpointError, match="no visual_context_adapter.* tensors.*never left at random"):
        load_release_connector(release_copy)


def test_a_missing_adapter_key_is_named(release_copy):
    path = release_copy / revise.TRANSFORMER_FILE
    state = torch.load(path, weights_only=True)
    state["module"].pop("visual_context_adapter.projection.bias")
    torch.save(state, path)
    with pytest.raises(ckpt.CheckpointError, match="visual_context_adapter.projection.bias"):
        load_release_connector(release_copy)


class _Boom:
    def __reduce__(self):
        return (print, ("code ran while unpickling",))


def test_a_code_carrying_context_pickle_is_refused_and_runs_nothing(release_copy, capsys):
    with open(release_copy / revise.UNCONDITIONED_FILE, "wb") as handle:
        pickle.dump({"text_emb": [torch.zeros(2, 32)], "vlm_last_hidden_states": _Boom()}, handle)
    with pytest.raises(ckpt.CheckpointError, match=r"context\.pkl: refused to unpickle: global 'builtins.print'"):
        load_release_connector(release_copy)
    assert "code ran" not in capsys.readouterr().out


def test_a_truncated_adapter_file_is_named(release_copy):
    path = release_copy / revise.ADAPTER_FILE
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ckpt.CorruptCheckpointError, match=r"adapter.model\.pt"):
        load_release_connector(release_copy)


def test_widths_that_do_not_fit_together_are_named(release_copy):
    tokens = ckpt.read_pickled_tensors(release_copy / revise.SPECIAL_TOKENS_FILE)
    tokens["<prp_st>"] = torch.zeros(3, 48)
    with open(release_copy / revise.SPECIAL_TOKENS_FILE, "wb") as handle:
        pickle.dump(tokens, handle)
    with pytest.raises(ckpt.CheckpointError, match=r"boundary token <prp_st> is 48 wide, the context 32"):
        load_release_connector(release_copy)
    path = release_copy / revise.VISION_HEAD_FILE
    state = torch.load(release_copy / revise.TRANSFORMER_FILE, weights_only=True)
    state["module"] = {k: v for k, v in state["module"].items() if not k.startswith("ar_vision_head.")}
    torch.save(state, release_copy / revise.TRANSFORMER_FILE)
    head = torch.load(path, weights_only=True)
    head["fc.0.weight"] = torch.zeros(24, head["fc.0.weight"].shape[1])
    torch.save(head, path)
    with pytest.raises(ckpt.CheckpointError, match="widths do not fit together: fc gives 24"):
        load_release_connector(release_copy)


def test_release_sized_connector_on_the_meta_device():
    config = revise.VisionHeadConnectorConfig(
        vision_head=revise.TransformerShape(in_dim=4096, dim=1152, queries=4, encoder_layers=4, decoder_layers=4,
                                            ffn_dim=4608),
        dm_adapter=revise.TransformerShape(in_dim=1152, dim=4096, queries=256, encoder_layers=4, decoder_layers=4,
                                           ffn_dim=16384),
        adapter_hidden_dim=1536, null_text_len=20, null_vlm_len=164)
    with torch.device("meta"):
        module = VisionHeadConnector(config)

    def count(part: nn.Module) -> int:
        return sum(p.numel() for p in part.parameters())

    def expected(shape: revise.TransformerShape) -> int:  # by formula, independent of the module code
        d, ff = shape.dim, shape.ffn_dim
        attention, feed_forward = 4 * d * d + 4 * d, 2 * d * ff + ff + d
        encoder = shape.encoder_layers * (attention + feed_forward + 4 * d)
        decoder = shape.decoder_layers * (2 * attention + feed_forward + 6 * d)
        return shape.in_dim * d + d + d * d + d + shape.queries * d + encoder + decoder + 4 * d

    assert count(module.vision_head) == expected(config.vision_head) == 154_840_320  # "about 155M" (§4.1)
    assert count(module.dm_adapter) == expected(config.dm_adapter) == 1_902_141_440  # "about 1.90B" (§4.2)
    assert count(module.visual_context_adapter) == 16 * 1536 * 16 + 1536 + 1536 * 4096 + 4096
    assert config.vlm_tokens == 1024 and config.max_context_len == 2560


# --- the whole release folder as a model set -------------------------------------------------------

def test_the_release_folder_loads_as_a_model_set(release, tiny_models):
    from revise_core import model_sets
    from revise_core.model_sets import EditModels

    assert model_sets.detect(release) == "revise release"
    models = EditModels.load(release)
    assert isinstance(models.connector, VisionHeadConnector)
    dit_state = tiny_models.dit.state_dict()  # the Wan folder's head bias differs: transformer/model.pt wins
    for key, value in models.dit.state_dict().items():
        assert torch.equal(value, dit_state[key]), key
    for module, expected in ((models.vae, tiny_models.vae), (models.text.model, tiny_models.release_text.model),
                             (models.connector, tiny_models.release_connector)):
        reference = expected.state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(value, reference[key]), key
    assert models.text.model.config.relative_attention_max_distance == 128  # fixed in the official code
    assert type(models.vlm).__name__ == "VilaModel"


WAN_AI_1_3B = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": 1536, "eps": 1e-06, "ffn_dim": 8960,
               "freq_dim": 256, "in_dim": 16, "model_type": "t2v", "num_heads": 12, "num_layers": 30, "out_dim": 16,
               "text_len": 512}  # Wan2.1-T2V-1.3B's config.json as Wan-AI ships it: no text_dim, no patch size


def _wan_1_3b_tensors(**overrides) -> dict:
    """The 1.3B DiT's tensors that decide its shape, on the meta device (no memory)."""
    shapes = {"patch_embedding.weight": (1536, 16, 1, 2, 2), "head.head.weight": (64, 1536),
              "text_embedding.0.weight": (1536, 4096), "time_embedding.0.weight": (1536, 256),
              "blocks.0.ffn.0.weight": (8960, 1536), "blocks.0.self_attn.norm_q.weight": (1536,),
              "blocks.0.norm3.weight": (1536,)}
    shapes.update(overrides)
    tensors = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    tensors.update({f"blocks.{i}.modulation": torch.empty(1, 6, 1536, device="meta") for i in range(30)})
    return tensors


def test_the_dits_architecture_is_read_from_its_tensors_not_from_defaults():
    from revise_core import model_sets

    config = model_sets.wan_model_config_to_diffusers(WAN_AI_1_3B, _wan_1_3b_tensors(), path=Path("config.json"))
    shipped = get_variant("wan2.1-t2v-1.3b").load_config()
    assert {k: config[k] for k in config} == {k: shipped[k] if not isinstance(shipped[k], tuple) else list(shipped[k])
                                              for k in config}
    # another text width and patch, no cross-attention norm: read, whatever the config leaves out
    tensors = _wan_1_3b_tensors(**{"text_embedding.0.weight": (1536, 768), "patch_embedding.weight": (1536, 16, 1, 4, 4),
                                   "head.head.weight": (256, 1536)})
    del tensors["blocks.0.norm3.weight"]
    other = model_sets.wan_model_config_to_diffusers(
        {k: v for k, v in WAN_AI_1_3B.items() if k not in ("ffn_dim", "num_heads", "in_dim")}, tensors,
        path=Path("config.json"))
    assert (other["text_dim"], other["patch_size"], other["out_channels"], other["cross_attn_norm"]) == (
        768, [1, 4, 4], 16, False)
    assert (other["ffn_dim"], other["num_attention_heads"], other["attention_head_dim"]) == (8960, 12, 128)
    with pytest.raises(ckpt.CheckpointError, match="model_type 'i2v'"):
        model_sets.wan_model_config_to_diffusers({**WAN_AI_1_3B, "model_type": "i2v"}, _wan_1_3b_tensors(),
                                                 path=Path("config.json"))


@pytest.mark.parametrize("field, value, read", [
    ("text_dim", 4096, 768), ("dim", 2048, 1536), ("num_layers", 32, 30), ("patch_size", [1, 4, 4], [1, 2, 2]),
    ("cross_attn_norm", False, True)])
def test_a_config_that_contradicts_its_tensors_names_the_file_the_field_and_both_values(field, value, read):
    from revise_core import model_sets

    tensors = _wan_1_3b_tensors(**{"text_embedding.0.weight": (1536, 768)})
    with pytest.raises(ckpt.CheckpointError) as error:
        model_sets.wan_model_config_to_diffusers({**WAN_AI_1_3B, field: value}, tensors, path=Path("wan/config.json"),
                                                 weights="wan/diffusion_pytorch_model.safetensors")
    message = str(error.value)
    assert "wan/config.json" in message and f"'{field}'" in message
    assert repr(value) in message and repr(read) in message


def test_a_dit_without_qk_norm_or_with_a_window_is_refused():
    from revise_core import model_sets

    tensors = _wan_1_3b_tensors()
    with pytest.raises(ckpt.CheckpointError, match="window_size"):
        model_sets.wan_model_config_to_diffusers({**WAN_AI_1_3B, "window_size": [256, 256]}, tensors,
                                                 path=Path("config.json"))
    del tensors["blocks.0.self_attn.norm_q.weight"]
    with pytest.raises(ckpt.CheckpointError, match="no q/k RMSNorm"):
        model_sets.wan_model_config_to_diffusers(WAN_AI_1_3B, tensors, path=Path("config.json"))


def _release_with_wan_config(release: Path, tmp_path: Path, tiny_models, style: str) -> Path:
    """The tiny release folder with its Wan folder written again, its config.json in `style`."""
    from revise_core.testing import write_release_wan_folder

    folder = tmp_path / f"revise_ckpt_{style}"
    folder.mkdir()
    for entry in release.iterdir():
        if entry.name != "wan":
            (folder / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    write_release_wan_folder(folder / "wan" / "wanxiang1_3b", tiny_models.dit, tiny_models.vae,
                             tiny_models.release_text, config_style=style)
    return folder


@pytest.mark.parametrize("style", ["kit", "official"])
def test_the_release_folder_loads_with_either_wan_config(release, tmp_path, tiny_models, style):
    """"official": config.json as the official WanModel.save_pretrained writes it, without text_dim (the tiny
    DiT's is 32, not WanModel's default 4096)."""
    import json

    from revise_core.model_sets import EditModels

    folder = _release_with_wan_config(release, tmp_path, tiny_models, style)
    written = json.loads((folder / "wan" / "wanxiang1_3b" / "config.json").read_text())
    assert ("text_dim" in written) == (style == "kit") and "patch_size" not in written
    models = EditModels.load(folder, with_dit=True)
    expected = {k: v for k, v in tiny_models.dit.config.items() if not k.startswith("_")}
    assert {k: models.dit.config[k] for k in expected} == expected
    reference = tiny_models.dit.state_dict()
    for key, value in models.dit.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_a_release_wan_config_that_contradicts_the_weights_is_named(release, tmp_path, tiny_models):
    import json

    from revise_core.model_sets import EditModels

    folder = _release_with_wan_config(release, tmp_path, tiny_models, "official")
    config_path = folder / "wan" / "wanxiang1_3b" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "text_dim": 4096}))
    with pytest.raises(ckpt.CheckpointError, match=r"config\.json.*'text_dim' is 4096 but the weights say 32"):
        EditModels.load(folder)


def test_an_incomplete_release_folder_is_named(release_copy):
    from revise_core import model_sets

    with pytest.raises(ckpt.ModelFileNotFoundError, match=r"lacks \['wan/wanxiang1_3b', 'ar_model/checkpoint'\]"):
        model_sets.detect(release_copy)

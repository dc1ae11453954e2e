"""The tiny-model kit is deterministic, self-consistent and usable as the project's test bed."""

from __future__ import annotations

import json

import torch

from revise_core import testing


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_factories_are_deterministic_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = testing.tiny_dit(seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    assert _same_weights(first, testing.tiny_dit(seed=7))
    assert not _same_weights(first, testing.tiny_dit(seed=8))
    assert _same_weights(testing.tiny_connector(3), testing.tiny_connector(3))
    assert _same_weights(testing.tiny_vae(1), testing.tiny_vae(1))


def test_vlm_tokenizer_has_single_token_yes_no_and_a_chat_template():
    tokenizer = testing.train_tokenizer("vlm")
    for word in ("Yes", "No", " Yes", " No"):
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1, word
    assert tokenizer.encode(" Yes", add_special_tokens=False) == tokenizer.encode("Yes", add_special_tokens=False)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Is it red ?"}]}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|video_pad|><|vision_end|>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    assert tokenizer.padding_side == "left"


def test_t5_tokenizer_appends_eos_and_pads_right():
    tokenizer = testing.train_tokenizer("t5")
    ids = tokenizer("the egg is fried")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.pad_token_id == 0
    batch = tokenizer(["a", "the egg is fried"], padding="max_length", max_length=8)
    assert batch["input_ids"][0][-1] == 0 and tokenizer.padding_side == "right"


def test_tiny_set_fits_together(tiny_models):
    dit, connector, vlm, text = tiny_models.dit, tiny_models.connector, tiny_models.vlm, tiny_models.text
    assert connector.config.vlm_dim == vlm.hidden_size
    assert connector.config.context_dim == dit.config.text_dim == text.model.config.d_model
    assert connector.config.adapter_hidden_dim == dit.config.num_attention_heads * dit.config.attention_head_dim
    # The VLM's video token is the tokenizer's <|video_pad|>.
    assert vlm.model.config.video_token_id == vlm.tokenizer.convert_tokens_to_ids("<|video_pad|>")


def test_write_tiny_models_cli(tmp_path, capsys):
    from revise_core.testing.__main__ import main

    assert main(["write-tiny-models", str(tmp_path / "set"), "--seed", "3"]) == 0
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["seed"] == 3
    assert all((tmp_path / "set" / entry["path"]).exists() for entry in manifest["files"])
    assert "manifest" in capsys.readouterr().out

"""Regional compile of the DiT's repeated blocks (--compile)."""

from __future__ import annotations

import copy

import pytest
import torch

from revise_core.dit import check_compiler, compile_repeated_blocks


@pytest.mark.slow  # the first compiled call takes about 11 s on a tiny model on a CPU (more on 2 busy cores)
def test_compiled_blocks_agree_with_eager_within_rounding(tiny_models, caplog):
    dit = tiny_models.dit
    compiled = copy.deepcopy(dit)
    with caplog.at_level("INFO"):
        assert compile_repeated_blocks(compiled) == len(dit.blocks)
        inputs = dict(hidden_states=torch.randn(1, 16, 2, 8, 8), timestep=torch.tensor([500.0]),
                      encoder_hidden_states=torch.randn(1, 12, dit.config.text_dim), return_dict=False)
        with torch.no_grad():
            eager, fast = dit(**inputs)[0], compiled(**inputs)[0]
            again = compiled(**inputs)[0]
    assert (fast - eager).abs().max() < 1e-5
    assert torch.equal(again, fast)
    assert caplog.text.count("compiled 2 DiT blocks: the first call took") == 1  # reported once


def test_compile_without_a_cpu_compiler_is_refused_in_one_sentence(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="needs a C\\+\\+ compiler"):
        check_compiler("cpu")
    check_compiler("cuda")  # inductor writes Triton there, no C++ compiler needed

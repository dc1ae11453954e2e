"""The DiT's attention backend: one setting, checked, scoped to our calls, refused where it cannot run."""

from __future__ import annotations

import pytest
import torch

from revise_core.attention import AttentionBackendError, attention_scope, check_backend, resolve_backend
from revise_core.sampler import SamplerConfig, sample


def _active():
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    return _AttentionBackendRegistry._active_backend


def test_sampling_on_another_backend_matches_native_and_leaves_the_process_default_alone(tiny_models):
    from diffusers.models.attention_dispatch import attention_backend

    dit = tiny_models.dit
    cond = torch.randn(1, 12, dit.config.text_dim, generator=torch.Generator().manual_seed(0))
    runs = {}
    for backend in ("native", "math"):
        config = SamplerConfig(steps=2, guidance_scale=1.0, scheduler="euler", attention=backend)
        with torch.no_grad():
            runs[backend] = sample(dit, cond, None, latent_shape=(1, 16, 2, 8, 8), config=config)
    assert (runs["math"] - runs["native"]).abs().max() < 1e-4  # the same maths, another kernel
    with attention_backend("_native_math"):  # someone else's choice in the same process survives our calls
        with torch.no_grad():
            sample(dit, cond, None, latent_shape=(1, 16, 2, 8, 8), config=SamplerConfig(steps=1, guidance_scale=1.0))
        assert _active().value == "_native_math"
    assert _active().value == "native"


def test_missing_packages_and_forward_only_kernels_are_refused_by_name():
    with pytest.raises(AttentionBackendError, match="attention backend 'sage': .*sageattention"):
        check_backend("sage")
    with pytest.raises(AttentionBackendError, match="'sage' attention backend has no backward pass"):
        check_backend("sage", training=True)
    with pytest.raises(AttentionBackendError, match="must be one of"):
        check_backend("fastest")
    with pytest.raises(ValueError, match="attention must be one of"):
        SamplerConfig(attention="fastest")
    from trainer.config import USOConfig

    with pytest.raises(ValueError, match="no backward pass"):
        USOConfig(attention="sage")
    with pytest.raises(AttentionBackendError, match="resolve 'auto' first"), attention_scope("auto"):
        pass


def test_auto_is_native_on_a_cpu_and_skips_what_is_missing_or_disagrees(monkeypatch, caplog):
    from revise_core import attention

    assert resolve_backend("auto", "cpu") == "native"
    # among candidates: the missing package is skipped, a kernel that disagrees with native is not used
    assert resolve_backend("auto", "cpu", candidates=("flash", "math", "native")) == "math"
    monkeypatch.setattr(attention, "_probe", lambda name, device: 0.5 if name == "math" else 0.0)
    with caplog.at_level("WARNING"):
        assert resolve_backend("auto", "cpu", candidates=("math", "native")) == "native"
    assert "math differs from native by 5.0e-01" in caplog.text
    assert resolve_backend("auto", "cpu", training=True, candidates=("sage", "native")) == "native"
    with pytest.raises(AttentionBackendError, match="'flex' attention backend has no backward pass on a CPU"):
        resolve_backend("flex", "cpu", training=True)
    assert resolve_backend("flex", "cpu") == "flex"  # inference is fine


def test_the_sampler_node_follows_comfyuis_flags_when_it_can(monkeypatch, caplog):
    from nodes import comfy_bridge as bridge
    from nodes.edit import node_attention

    monkeypatch.setattr(bridge, "comfy_attention", lambda: None)
    assert node_attention("auto") == "auto" and node_attention("math") == "math"
    monkeypatch.setattr(bridge, "comfy_attention", lambda: "sage")  # ComfyUI started with --use-sage-attention
    with caplog.at_level("WARNING"):
        assert node_attention("auto") == "auto"  # sageattention is not installed here
    assert "ComfyUI asks for sage attention" in caplog.text
    monkeypatch.setattr(bridge, "comfy_attention", lambda: "math")
    assert node_attention("auto") == "math"

"""Shared fixtures: one tiny model set on disk (every layout) and the same models in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from revise_core.testing import TinyModelSet, tiny_model_set, write_tiny_models

TINY_SEED = 0


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-models")
    write_tiny_models(out, seed=TINY_SEED)
    return out


@pytest.fixture(scope="session")
def tiny_manifest(tiny_dir) -> dict:
    return json.loads((tiny_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def tiny_models() -> TinyModelSet:
    return tiny_model_set(TINY_SEED)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, atol: float = 0.0, what: str = "") -> None:
    """Compare tensors and report max / mean absolute difference on failure."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.double() - expected.double()).abs()
    max_diff = diff.max().item() if diff.numel() else 0.0
    assert max_diff <= atol, f"{what}: max |diff| {max_diff:.3e} (mean {diff.mean().item():.3e}) > {atol}"

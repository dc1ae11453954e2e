"""SelfCritic: the Δ_base cache, the per-dimension report, a verdict taught by training, best-of-N, bad inputs,
the CLI. P(Yes) against a direct forward, the verdict position and the reward's gradient, for every VLM family:
test_vlm_contract.py."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch

from revise_core import critic as critic_mod
from revise_core.chat_text import EmptyInstructionError
from revise_core.critic import CriticError, SelfCritic
from revise_core.critic import __main__ as critic_cli
from revise_core.testing import tiny_vlm
from revise_core.vlm import to_vlm_frames

INSTRUCTION = "make the square red"


@pytest.fixture(scope="module")
def vlm():
    return tiny_vlm(seed=3)


def _video(seed: int, frames: int = 5) -> torch.Tensor:
    return torch.rand(frames, 64, 64, 3, generator=torch.Generator().manual_seed(seed))


def test_relative_reward_of_the_source_itself_is_exactly_zero(vlm):
    critic = SelfCritic(vlm)
    source = _video(0)
    relative, verdict = critic.relative(source, source.clone(), INSTRUCTION)
    assert relative.item() == 0.0 and verdict.delta.item() != 0.0
    assert len(critic._baseline_cache) == 1
    critic.relative(source, _video(1), INSTRUCTION)
    assert len(critic._baseline_cache) == 1  # Δ_base paid once per (source, instruction)


def test_per_dimension_report(vlm):
    critic = SelfCritic(vlm)
    source, edited = _video(0), _video(1)
    report = critic.report(source, edited, INSTRUCTION)
    assert set(report.per_dimension) == set(critic_mod.DIMENSIONS)
    assert set(report.to_dict()) == {"p_yes", "delta", "relative_delta", "per_dimension", "reasoning"}
    with torch.no_grad():
        overall = critic.verdict(source, edited, INSTRUCTION)
        base = critic.verdict(source, source, INSTRUCTION)
        for name, values in report.per_dimension.items():  # each dimension asks its own question
            verdict = critic.verdict(source, edited, INSTRUCTION, dimension=name)
            assert values == {"p_yes": pytest.approx(float(verdict.p_yes), abs=1e-7),
                              "delta": pytest.approx(float(verdict.delta), abs=1e-6)}, name
            assert 0 < values["p_yes"] < 1 and values["delta"] != pytest.approx(report.delta, abs=1e-6), name
    assert report.p_yes == pytest.approx(float(torch.sigmoid(overall.delta)), abs=1e-7)
    assert report.relative_delta == pytest.approx(float(overall.delta - base.delta), abs=1e-6)


def _solid(color: tuple[float, float, float], frames: int = 5) -> torch.Tensor:
    return torch.tensor(color).view(1, 1, 1, 3).expand(frames, 64, 64, 3).clone()


def test_a_vlm_taught_red_is_yes_scores_a_redder_edit_higher():
    """Teach the answer with plain next-token cross-entropy, then read it through the critic's verdict."""
    model = copy.deepcopy(tiny_vlm(seed=5))
    model.model.train().requires_grad_(True)
    critic = SelfCritic(model)  # resolves ids; training below does not use the critic's read-out
    model.model.requires_grad_(True)
    source = _solid((0.5, 0.5, 0.5))
    messages = critic._messages(INSTRUCTION, critic_mod.ALL_QUESTION)
    optimizer = torch.optim.Adam(model.model.parameters(), lr=5e-3)
    for _ in range(20):
        for color, answer in (((0.9, 0.1, 0.1), "Yes"), ((0.1, 0.1, 0.9), "No")):
            videos = [to_vlm_frames(v, 4) for v in (source, _solid(color))]
            inputs = model.build_inputs(messages, videos, assistant_prefix=answer)
            model.reset_state()
            logits = model.model(**inputs.kwargs).logits[0, -2]  # the position that predicts the answer
            target = inputs.kwargs["input_ids"][0, -1]
            loss = torch.nn.functional.cross_entropy(logits[None], target[None])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.model.eval().requires_grad_(False)
    critic = SelfCritic(model)
    with torch.no_grad():
        redder = critic.verdict(source, _solid((0.8, 0.2, 0.2)), INSTRUCTION).p_yes
        bluer = critic.verdict(source, _solid((0.2, 0.2, 0.8)), INSTRUCTION).p_yes
    assert redder > 0.5 > bluer, (float(redder), float(bluer))


class _SplittingTokenizer:
    def __init__(self, inner):
        self.inner = inner

    def encode(self, text, add_special_tokens=False):
        return [1, 2] if text.strip() in ("Yes", "No") else self.inner.encode(text, add_special_tokens=False)


def test_bad_inputs(vlm):
    with pytest.raises(CriticError, match="splits 'Yes' into 2 tokens"):
        SelfCritic(dataclasses.replace(vlm, tokenizer=_SplittingTokenizer(vlm.tokenizer)))
    critic = SelfCritic(vlm)
    with pytest.raises(CriticError, match="differ from the source"):
        critic.verdict(_video(0), torch.rand(5, 32, 64, 3), INSTRUCTION)
    with pytest.raises(CriticError, match="differ from the source"):
        critic.verdict(_video(0), _video(1, frames=7), INSTRUCTION)
    with pytest.raises(EmptyInstructionError, match="the edit instruction is empty"):
        critic.verdict(_video(0), _video(1), "")
    with pytest.raises(CriticError, match="unknown dimension"):
        critic.verdict(_video(0), _video(1), INSTRUCTION, dimension="beauty")


def test_best_of_keeps_the_highest_relative_score(tiny_dir):
    from revise_core.editor import EditSettings, ReviseEditor
    from revise_core.model_sets import EditModels
    from revise_core.sampler import SamplerConfig
    from revise_core.video import synthetic_clip

    editor = ReviseEditor(EditModels.load(tiny_dir))
    result = editor.edit(synthetic_clip(5, 32, 32).frames, INSTRUCTION,
                         EditSettings(sampler=SamplerConfig(steps=2, seed=10)), best_of=3)
    assert [s["seed"] for s in result.scores] == [10, 11, 12]
    best = max(result.scores, key=lambda s: s["relative_delta"])
    assert result.seed == best["seed"]
    single = editor.edit(synthetic_clip(5, 32, 32).frames, INSTRUCTION,
                         EditSettings(sampler=SamplerConfig(steps=2, seed=best["seed"])))
    assert torch.equal(single.latents, result.latents)  # the kept candidate is that seed's edit


def test_cli_demo_json(capsys):
    assert critic_cli.main(["--demo", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"p_yes", "delta", "relative_delta", "per_dimension", "reasoning"} <= report.keys()
    assert len(report["per_dimension"]) == 4
    for numbers in [report, *report["per_dimension"].values()]:  # P(Yes) = σ(Δ), as printed
        assert numbers["p_yes"] == pytest.approx(1 / (1 + math.exp(-numbers["delta"])), abs=1e-6)


def test_cli_on_files(tiny_dir, tmp_path, capsys):
    from revise_core.video import synthetic_clip, write_video

    write_video(tmp_path / "a.mp4", synthetic_clip(9, 64, 64, seed=0).frames)
    write_video(tmp_path / "b.mp4", synthetic_clip(9, 64, 64, seed=1).frames)
    write_video(tmp_path / "c.mp4", synthetic_clip(9, 64, 96, seed=1).frames)
    args = ["--models", str(tiny_dir), "--source", str(tmp_path / "a.mp4"), "--instruction", INSTRUCTION]
    assert critic_cli.main(args + ["--edited", str(tmp_path / "b.mp4"), "--no-per-dimension"]) == 0
    assert "P(Yes)" in capsys.readouterr().out
    with pytest.raises(CriticError, match="c.mp4: frames are \\(64, 96\\)"):
        critic_cli.main(args + ["--edited", str(tmp_path / "c.mp4")])

"""Toy-RVE's presets and runs: what an experiment trains (ToyConfig), its three presets, and one fine-tuning
run (Run) with the results-table row it lands in."""

from __future__ import annotations

from dataclasses import dataclass, field

from .conditions import EXACT, FLAWED, UNSEEN, Condition

CRITICS = ("renders", "shaped", "estimates")  # the learned critics (models.py)
RWR_CRITIC = "shaped"  # the learned critic whose P(Yes) weighs RWR's samples
# The positive control (ideal_critic.py): a rule-level judge that never reads target frames.
IDEAL_CRITIC = "ideal"


@dataclass
class ToyConfig:
    train_samples: int = 48
    # 48 held-out edits: with 12, the sample draw made most of the seed spread (SFT's std 0.09; 0.05 with 48)
    eval_samples: int = 48
    eval_phrasings: str = "training"  # held-out scenes worded with the training phrasings, or "held-out"
    # pre-training's reproduction task covers the held-out background too (never the evaluation samples)
    pretrain_all_backgrounds: bool = True
    critic_steps: int = 10000
    critic_stage1_fraction: float = 0.45  # the Yes/No curriculum breaks symmetry after about 4,500 steps
    critic_graded_steps: int = 2000
    critic_shaped_steps: int = 600
    critic_region_weight: float = 0.0
    critic_direction_weight: float = 1.0
    critic_estimate_steps: int = 300
    estimate_bank: int = 64
    generator_layers: int = 2  # DiT blocks of the generator
    placed_source: bool = True  # a fixed position code on the source video's context tokens (models.PlacedConnector)
    pretrain_steps: int = 1500
    finetune_steps: int = 600
    global_batch: int = 4
    pretrain_lr: float = 1e-3
    finetune_lr: float = 1e-3
    # fine-tuning's learning rate decays to 0 (trainer's lr_schedule): SFT's seed std 0.015 instead of 0.054 at a
    # constant rate, the mean 0.1 higher; pre-training keeps a constant rate
    finetune_lr_schedule: str = "cosine"
    grad_clip: float = 1.0  # of the summed gradient (flow matching's and the reward's together); 0 = off
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    conditions: tuple[Condition, ...] = (EXACT,)
    learned_critics: tuple[str, ...] = ()  # a USO arm per learned critic, in every condition
    rwr: bool = False  # the reward-weighted regression arm (needs the learned critics' stage)
    sweep_condition: str = EXACT.name  # the ideal critic's λ and σ_max sweeps, over every seed
    lambdas: tuple[float, ...] = ()  # besides reason_weight
    sigma_maxes: tuple[float, ...] = ()  # besides sigma_max
    # λ: at 1 the ideal critic's gradient on the generator is 3 % of flow matching's (diagnostics, probe on 2
    # seeds), at 30 it is 78 %; 10 sits between
    reason_weight: float = 10.0
    sigma_max: float = 0.5
    diagnostic_samples: int = 16  # one-step estimates per critic and condition for the reward path's diagnostics
    sample_steps: int = 8
    guidance: float = 2.0

    @property
    def needs_learned_critics(self) -> bool:
        return bool(self.learned_critics) or self.rwr


# quick: the two sensitivity checks and the ideal critic against SFT on exact targets (2 cores, under 25 min)
QUICK = ToyConfig()
FULL = ToyConfig(conditions=(EXACT, FLAWED, UNSEEN), learned_critics=CRITICS, rwr=True,
                 sweep_condition=UNSEEN.name, lambdas=(1.0, 3.0, 30.0), sigma_maxes=(0.1, 0.3, 0.7, 0.9))
SMOKE = ToyConfig(train_samples=8, eval_samples=4, critic_steps=2, critic_graded_steps=2,
                  critic_shaped_steps=2, critic_estimate_steps=2, estimate_bank=4, pretrain_steps=2, finetune_steps=2,
                  global_batch=2, seeds=(0, 1), conditions=(EXACT, FLAWED, UNSEEN), learned_critics=CRITICS, rwr=True,
                  sweep_condition=UNSEEN.name, lambdas=(0.25,), sigma_maxes=(0.9,), diagnostic_samples=2,
                  sample_steps=2)
PRESETS = {"quick": QUICK, "full": FULL, "smoke": SMOKE}  # the command line's --quick / --full / --smoke


@dataclass
class Run:
    name: str
    objective: str
    seed: int
    condition: str = EXACT.name
    critic: str | None = None  # which critic judges (uso) or weighs (rwr): IDEAL_CRITIC or one of CRITICS
    reason_weight: float = 1.0
    sigma_max: float = 0.5
    scores: dict = field(default_factory=dict)
    triggered: float = float("nan")
    seconds: float = 0.0  # of the fine-tuning and evaluation, when they ran (a reused run keeps its record's)
    reused: bool = False  # taken from the work folder's record (records.py) instead of computed

    @property
    def row(self) -> str:
        return row_name(self.objective, self.critic)


def row_name(objective: str, critic: str | None = None) -> str:
    """The results table's row: sft, rwr, or "uso, <critic> critic"."""
    return f"uso, {critic} critic" if objective == "uso" else objective


IDEAL_ROW = row_name("uso", IDEAL_CRITIC)

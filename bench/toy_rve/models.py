"""Toy-RVE's models: the generator to train, and the frozen parts prepared once per run (the VAE and the critic
VLMs).

The random tiny VAE of the test kit cannot reconstruct anything, so the critic would judge noise; here it is
built as an identity on RGB in Wan's structure (`toy_vae`) and its per-channel latent statistics are measured
(the normalisation the DiT works in). Like a real VAE and VLM, both frozen parts have seen the whole scene
space (every background), while the generator is trained on the training backgrounds only. The VLM is taught (plain next-token
cross-entropy on the answer) to say "Yes" to correct edits and "No" to unchanged, partial and wrong-rule
ones, then graded edits with soft labels; it plays the VLM "that understands more than the generator": it
sees every phrasing, rule and background, but never the evaluation samples themselves. Two further stages
make variants of it: input-gradient regularisation (`grade_critic(region_weight=, direction_weight=)`) and
grading on decoded one-step estimates of a generator (`grade_on_estimates`); `gradient_alignment` and
`estimate_alignment` measure whether its gradient points toward the correct edit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from revise_core import vae as vae_ops
from revise_core.connector import Connector
from revise_core.critic import ALL_QUESTION, SelfCritic
from revise_core.testing import seeded, tiny_connector_config, tiny_dit_config, tiny_vae_config

from .oracle import CHANGE_THRESHOLD
from .task import CATEGORIES, PHRASINGS, Sample, make_samples, negative_edit, render

logger = logging.getLogger(__name__)


def toy_vae() -> torch.nn.Module:
    """Wan's VAE structure at one level (no spatial or temporal down-sampling), set to an identity on RGB.

    The latent is the pixels: its LATENT = 3 channels carry R, G, B in -1..1. Trained VAEs
    were the ceiling of every earlier Toy-RVE: the kit's 8x VAE left the exact target, encoded and decoded, at
    EA 3.4 of 10; a trained 4x/2x one at Overall 4.7 (6.8 after twice the training); and the structure trains
    slowly on objects whatever the down-sampling (one clip, no down-sampling, 200 steps: object error still
    0.04). The instrument measures the editor, so its VAE is built, not trained. Each residual branch and
    attention projection is zero (those blocks pass their input through), and the two RMS norms in the path
    (before each head's SiLU) are made linear: the first convolution writes +x, -x and a large constant C, so
    the norm divides every pixel by nearly the same C, and the head's convolution takes SiLU(a) - SiLU(-a) = a.
    Round trip error: about |x|²/C² relative (under 1e-3 in pixel values).
    """
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_config({**tiny_vae_config(), "z_dim": LATENT, "dim_mult": [1], "temperal_downsample": [],
                                        "scale_factor_spatial": 1, "scale_factor_temporal": 1})
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.zero_()
        for module in vae.modules():
            if hasattr(module, "gamma"):  # RMS norms: unit scale
                module.gamma.fill_(1.0)
        for coder in (vae.encoder, vae.decoder):
            _signed_copy(coder.conv_in, 3)  # RGB in, or latent channels 0-2
            width = coder.conv_in.weight.shape[0] // 4  # norm_out multiplies by sqrt(channels)
            # out[k] = C / sqrt(channels) · (h[k] − h[3 + k]): undoes the norm's scale, SiLU(a) − SiLU(−a) = a
            scale = _IDENTITY_CONSTANT / math.sqrt(4 * width)
            for k in range(3):
                coder.conv_out.weight[k, k, -1, 1, 1] = scale
                coder.conv_out.weight[k, 3 + k, -1, 1, 1] = -scale
        # the encoder's head writes the mean's channels; the log-variance's stay 0 (mode() reads the mean)
        for conv in (vae.quant_conv, vae.post_quant_conv):
            channels = conv.weight.shape[0]
            conv.weight[:, :, 0, 0, 0] = torch.eye(channels)
    return vae.eval().requires_grad_(False)


LATENT = 3  # the toy's latent channels: R, G, B (the generator's in and out channels, the connector's)
_IDENTITY_CONSTANT = 100.0  # the constant channel C that makes the RMS norms before the SiLUs nearly linear


def _signed_copy(conv: torch.nn.Module, channels: int) -> None:
    """conv(x)[k] = x[k], conv(x)[channels + k] = −x[k] for k < channels (the current frame, the centre pixel),
    conv(x)[2·channels] = C: a causal 3x3x3 convolution's last time tap is the current frame."""
    for k in range(channels):
        conv.weight[k, k, -1, 1, 1] = 1.0
        conv.weight[channels + k, k, -1, 1, 1] = -1.0
    conv.bias[2 * channels] = _IDENTITY_CONSTANT


class PlacedConnector(Connector):
    """The connector with a fixed code of each source token's place (latent frame, row, column) added to it.

    The release's VisualContextAdapter gives the source video's context tokens no position, and Wan's
    cross-attention adds none: the DiT must place source content by what it looks like. The toy generator
    (2 blocks, a few thousand CPU steps) copies the background but not the object: its copies carry a washed-out
    object colour (red 0.9/0.15/0.1 comes out near 0.5/0.34/0.23), with or without this code. With the code,
    SFT on exact targets gained 0.42-0.53 Overall over the pre-trained model, without it 0.17-0.30 (one
    pre-trained model each, so part of that is the pre-trained model's own score). The code is computed, not
    learned: the connector's weights and checkpoints are the release layout's, and every other path (trainer,
    editor, critic) is unchanged."""

    def adapt_video(self, latents: torch.Tensor) -> torch.Tensor:
        tokens = super().adapt_video(latents)
        grid = [size // patch for size, patch in zip(latents.shape[-3:], self.config.adapter_patch_size, strict=True)]
        return tokens + position_code(grid, tokens.shape[-1]).to(tokens)


def position_code(grid: list[int], width: int) -> torch.Tensor:
    """[T·H·W, width]: per axis, sines and cosines at frequencies π·k/size (k = 1, 2, …), row-major like the
    adapter's tokens; the time axis gets a quarter of the width, the two spatial axes the rest."""
    widths = [width // 4, (width - width // 4) // 2]
    widths.append(width - sum(widths))
    axes = []
    for size, axis_width in zip(grid, widths, strict=True):
        position = torch.arange(size, dtype=torch.float32)[:, None]
        angle = position * torch.arange(1, axis_width // 2 + 1, dtype=torch.float32) * math.pi / size
        code = torch.cat([angle.sin(), angle.cos()], dim=-1)
        axes.append(F.pad(code, (0, axis_width - code.shape[-1])))  # odd widths: one zero column
    t, h, w = grid
    return torch.cat([axes[0][:, None, None].expand(t, h, w, -1), axes[1][None, :, None].expand(t, h, w, -1),
                      axes[2][None, None, :].expand(t, h, w, -1)], dim=-1).reshape(t * h * w, width)


def toy_generator(seed: int, *, layers: int = 2, placed_source: bool = False) -> tuple[torch.nn.Module, Connector]:
    """The test kit's DiT (with `layers` blocks) and connector sizes with the libraries' own initialisation, on
    the toy VAE's RGB latent (3 channels) in 4x4 patches: 8x8 tokens per frame, as a 4x VAE with 2x2 patches
    gave.

    The test kit overwrites every weight (norm scales included) with N(0, 0.1) so that every path is observable
    in parity tests; that is no starting point for training, so the toy keeps diffusers' / torch's init.
    """
    from diffusers import WanTransformer3DModel

    with seeded(seed):
        dit = WanTransformer3DModel.from_config({**tiny_dit_config(LATENT), "out_channels": LATENT,
                                                 "patch_size": [1, 4, 4], "num_layers": layers}).eval()
        # the source alone is 320 context tokens (5 frames of 8x8 patches)
        kind = PlacedConnector if placed_source else Connector
        connector = kind(replace(tiny_connector_config(max_context_len=512), latent_channels=LATENT))
        for token in connector.boundary.buffers():  # zero by default: make the boundary markers distinct
            token.normal_()
    return dit, connector.eval()


def fit_latent_statistics(vae: torch.nn.Module, samples: list[Sample]) -> dict:
    """Measure the per-channel latent statistics of sources and targets (the normalisation the DiT works in) and
    set them in the VAE's config; report the round trip's reconstruction error."""
    clips = torch.stack([render(s.scene, category=c) for s in samples for c in (None, s.category)])
    pixels = clips.permute(0, 4, 1, 2, 3) * 2 - 1  # [N, 3, T, H, W] in -1..1
    with torch.no_grad():
        latents = torch.cat([vae_ops.encode(vae, pixels[i:i + 16]) for i in range(0, len(pixels), 16)])
        reconstruction = torch.cat([vae_ops.decode(vae, latents[i:i + 16]) for i in range(0, len(latents), 16)])
    mean = latents.mean(dim=(0, 2, 3, 4))
    std = latents.std(dim=(0, 2, 3, 4)).clamp(min=1e-3)  # the unused channels are 0: normalised, they stay 0
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    error = (reconstruction - pixels).abs().mean().item() / 2  # in 0..1 pixel units
    logger.info("toy VAE: reconstruction MAE %.2e", error)
    return {"reconstruction_mae": error, "max_error": (reconstruction - pixels).abs().max().item() / 2}


# Negatives of the two curriculum stages. Stage 1 only asks "did the required change happen (fully)?";
# stage 2 adds edits that apply the wrong rule, which needs the instruction's category bound to the kind of
# change. Straight to stage 2, the tiny critic stayed at chance (loss ln 2) for 12k steps; with stage 1 first
# it breaks symmetry after ~4-5k steps and then learns the rules. Noisy copies of the target are not used as
# negatives: the oracle gives them a high EA, so calling them wrong would teach the opposite of EA.
STAGE1_NEGATIVES = ("unchanged", "partial")
STAGE2_NEGATIVES = ("unchanged", "partial", "partial", "wrong rule")


def train_critic(vlm, *, steps: int, seed: int, lr: float = 1e-4, stage1_fraction: float = 0.36,
                 frames: int = 4) -> dict:
    """Teach the VLM the verdicts; its weights change here and are frozen afterwards.

    The learning rate matters more than anything else here: at 1e-3 and above the tiny Qwen2.5-VL settles
    on the class prior (P(Yes) = 0.5 for every input) and never leaves it; 1e-4 learns.
    """
    rng = random.Random(seed)
    pool = make_samples(64, "train", seed + 100) + make_samples(64, "eval", seed + 100)  # not the eval samples
    critic = SelfCritic(vlm)
    vlm.model.train().requires_grad_(True)
    optimizer = torch.optim.Adam(vlm.model.parameters(), lr=lr)
    stage1_steps = round(steps * stage1_fraction)
    losses = []
    for step in range(steps):
        sample = rng.choice(pool)
        # any phrasing of the category: the critic stands for a VLM that understands all of them
        instruction = rng.choice(PHRASINGS[sample.category][0] + PHRASINGS[sample.category][1])
        answer = "Yes" if step % 2 == 0 else "No"  # balanced: otherwise "always No" is a good-enough answer
        if answer == "Yes":
            edited = render(sample.scene, category=sample.category)
        else:
            edited = negative_edit(sample, rng.choice(STAGE1_NEGATIVES if step < stage1_steps else STAGE2_NEGATIVES),
                                   rng)
        logits, answer_id = _answer_logits(vlm, critic, instruction, render(sample.scene), edited, answer, frames)
        losses.append(_step(optimizer, F.cross_entropy(logits[None].float(), answer_id.view(1))))
        if (step + 1) % 2000 == 0:
            logger.info("critic step %d/%d: mean loss of the last 2000 steps %.4f", step + 1, steps,
                        sum(losses[-2000:]) / 2000)
    vlm.model.eval().requires_grad_(False)
    tail = losses[-500:]
    logger.info("critic trained: mean loss of the last %d steps %.4f", len(tail), sum(tail) / len(tail))
    return {"final_loss": sum(tail) / len(tail), "stage1_steps": stage1_steps}


def _answer_logits(vlm, critic: SelfCritic, instruction: str, source: torch.Tensor, edited: torch.Tensor,
                   answer: str, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic's prompt with `answer` appended: logits at the position that predicts it, and its id."""
    messages = critic._messages(instruction, ALL_QUESTION)
    videos = [vlm.prepare_frames(v.clamp(0, 1), frames) for v in (source, edited)]
    inputs = vlm.build_inputs(messages, videos, assistant_prefix=answer)
    vlm.reset_state()
    return vlm.forward(inputs, last=2).logits[0], inputs.token_ids[-1]


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def grade_critic(vlm, *, steps: int, seed: int, oracle_ea, lr: float = 1e-4, noise: float = 0.1,
                 frames: int = 4, region_weight: float = 0.0,
                 direction_weight: float = 0.0) -> dict:
    """Third stage: graded edits with soft labels, P(Yes) -> EA / 10.

    Edits lie anywhere on the path from the source to the target (or, one time in five, to a wrong rule's
    target), with pixel noise; the loss is binary cross-entropy of σ(Δ) against EA / 10, plus −log of the
    probability mass on {Yes, No} so that the answer stays one of the two. Yes/No training teaches a decision
    rule; this stage asks for "how far along", which is what USO's gradient needs.

    `region_weight` > 0 adds input-gradient regularisation in the manner of "right for the right reasons"
    (Ross et al., 2017): the share of ∂Δ/∂(edited pixels)'s energy that falls outside the pixels the rule
    changes, times the weight (double backpropagation; PyTorch's fused CPU attention has no second
    derivative, so the math kernel runs instead). It stands in for what a VLM pre-trained on natural video
    brings and a 2-layer toy lacks: a verdict that depends on the edited object, not on background pixels.
    `direction_weight` > 0 supervises the gradient's direction itself: the weight times 1 − cos(∂Δ/∂pixels,
    correct target − edit). It tries to give the critic the property USO relies on (a verdict that rises
    along the way to the correct edit); how far it gets is measured, not assumed (docs/results.md).
    """
    rng = random.Random(seed)
    pool = make_samples(64, "train", seed + 100) + make_samples(64, "eval", seed + 100)  # not the eval samples
    critic = SelfCritic(vlm)
    vlm.model.train().requires_grad_(True)
    optimizer = torch.optim.Adam(vlm.model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses, outside_shares, cosines = [], [], []
    shaped = bool(region_weight or direction_weight)
    kernel = sdpa_kernel(SDPBackend.MATH) if shaped else contextlib.nullcontext()
    with kernel:
        for _ in range(steps):
            sample = rng.choice(pool)
            instruction = rng.choice(PHRASINGS[sample.category][0] + PHRASINGS[sample.category][1])
            source, target = render(sample.scene), render(sample.scene, category=sample.category)
            category = sample.category
            if rng.random() < 0.2:
                category = rng.choice([c for c in CATEGORIES if c != sample.category])
            alpha = rng.random()
            edited = source * (1 - alpha) + render(sample.scene, category=category) * alpha
            edited = edited + torch.randn(edited.shape, generator=generator) * noise * rng.random()
            label = oracle_ea(sample, edited) / 10.0
            edited.requires_grad_(shaped)
            loss, delta = _graded_loss(vlm, critic, instruction, source, edited, label, frames)
            if shaped:
                (gradient,) = torch.autograd.grad(delta, edited, create_graph=True)
                outside = ((source - target).abs().amax(-1, keepdim=True) <= CHANGE_THRESHOLD).float()
                energy = gradient.pow(2)
                share = (energy * outside).sum() / energy.sum().clamp(min=1e-20)
                cosine = F.cosine_similarity(gradient.flatten(), (target - edited.detach()).flatten(), dim=0)
                outside_shares.append(share.item())
                cosines.append(cosine.item())
                loss = loss + region_weight * share + direction_weight * (1 - cosine)
            losses.append(_step(optimizer, loss))
    vlm.model.eval().requires_grad_(False)
    tail = losses[-500:]
    logger.info("critic graded (region weight %s, direction weight %s): mean loss of the last %d steps %.4f",
                region_weight, direction_weight, len(tail),
                sum(tail) / len(tail))
    report = {"graded_final_loss": sum(tail) / len(tail), "graded_steps": steps, "region_weight": region_weight,
              "direction_weight": direction_weight}
    if shaped:  # training-set values over the last 500 steps
        report["train_gradient_share_outside_region"] = sum(outside_shares[-500:]) / len(outside_shares[-500:])
        report["train_gradient_cosine"] = sum(cosines[-500:]) / len(cosines[-500:])
    return report


def _graded_loss(vlm, critic: SelfCritic, instruction: str, source: torch.Tensor, edited: torch.Tensor,
                 label: float, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Binary cross-entropy of σ(Δ) against a soft label minus log of the probability mass on {Yes, No}, Δ)."""
    yes, no = critic.yes_ids[False], critic.no_ids[False]
    logits = _answer_logits(vlm, critic, instruction, source, edited, "Yes", frames)[0].float()
    answer_mass = torch.logsumexp(logits[[yes, no]], 0) - torch.logsumexp(logits, 0)
    delta = logits[yes] - logits[no]
    return F.binary_cross_entropy_with_logits(delta, torch.tensor(label)) - answer_mass, delta


@dataclass
class Estimate:
    """An edit the critic judges: a decoded one-step estimate x̂0 = z_t − σ·v of a generator (what it judges
    during USO), or a render (σ NaN)."""

    sample: Sample
    instruction: str
    edited: torch.Tensor  # [T, H, W, 3], unclamped
    sigma: float
    ea: float  # the oracle's EA against the sample's correct target


def grade_on_estimates(vlm, bank: list[Estimate], *, steps: int, seed: int, lr: float = 1e-4,
                       frames: int = 4) -> dict:
    """Fourth stage: soft labels P(Yes) -> EA / 10 on decoded one-step estimates of a generator.

    The earlier stages only show the critic clean renders and blends; during USO it judges blurry, unclamped
    decodes of x̂0 at σ <= σ_max, off the distribution it was trained on, where its gradient can point
    anywhere. This stage trains it where it is used.
    """
    if not bank:
        raise ValueError("grade_on_estimates needs a non-empty bank of estimates")
    rng = random.Random(seed)
    critic = SelfCritic(vlm)
    vlm.model.train().requires_grad_(True)
    optimizer = torch.optim.Adam(vlm.model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        item = rng.choice(bank)
        loss, _ = _graded_loss(vlm, critic, item.instruction, render(item.sample.scene), item.edited, item.ea / 10.0,
                               frames)
        losses.append(_step(optimizer, loss))
    vlm.model.eval().requires_grad_(False)
    tail = losses[-500:]
    logger.info("critic graded on estimates: mean loss of the last %d steps %.4f", len(tail), sum(tail) / len(tail))
    return {"estimate_final_loss": sum(tail) / len(tail), "estimate_steps": steps, "estimate_bank": len(bank)}


def estimate_alignment(vlm, bank: list[Estimate], oracle_ea) -> dict:
    """Is the critic's gradient a usable direction? Over the edits: the cosine of ∂Δ/∂(edited pixels) with
    (correct target − edit), the oracle-EA gain of a pixel step along it as long as half the distance to the
    target, next to the gain of the same step straight at it, and Spearman ρ of P(Yes) with the oracle's EA."""
    critic = SelfCritic(vlm)
    cosines, gains, exact_gains, p_yes, truth = [], [], [], [], []
    for item in bank:
        source, target = render(item.sample.scene), render(item.sample.scene, category=item.sample.category)
        edited = item.edited.clone().requires_grad_(True)
        verdict = critic.verdict(source, edited, item.instruction)
        (gradient,) = torch.autograd.grad(verdict.delta, edited)
        wanted = target - item.edited
        cosines.append(F.cosine_similarity(gradient.flatten(), wanted.flatten(), dim=0).item())
        step = gradient / gradient.norm().clamp(min=1e-12) * wanted.norm() * 0.5
        gains.append(oracle_ea(item.sample, item.edited + step) - item.ea)
        exact_gains.append(oracle_ea(item.sample, item.edited + wanted * 0.5) - item.ea)
        p_yes.append(float(torch.sigmoid(verdict.delta.detach().float())))
        truth.append(item.ea)
    count = len(bank)
    return {"cosine_mean": sum(cosines) / count, "cosine_positive_share": sum(c > 0 for c in cosines) / count,
            "ea_gain_of_gradient_step": sum(gains) / count, "ea_gain_of_exact_step": sum(exact_gains) / count,
            "spearman_p_yes": spearman(p_yes, truth), "edits": count}


def critic_correlation(vlm, samples: list[Sample], oracle_ea) -> dict:
    """Spearman ρ of P(Yes), and of the hard verdict, with the oracle's EA on held-out edits."""
    critic = SelfCritic(vlm)
    p_yes, hard, truth = [], [], []
    rng = random.Random(7)
    for sample in samples:
        source, target = render(sample.scene), render(sample.scene, category=sample.category)
        wrong = render(sample.scene, category=rng.choice([c for c in CATEGORIES if c != sample.category]))
        for edited in [source * (1 - a) + target * a for a in (0.0, 0.25, 0.5, 0.75, 1.0)] + [wrong]:
            with torch.no_grad():
                probability = float(critic.verdict(source, edited, sample.instruction).p_yes)
            p_yes.append(probability)
            hard.append(1.0 if probability > 0.5 else 0.0)
            truth.append(oracle_ea(sample, edited))
    return {"spearman_p_yes": spearman(p_yes, truth), "spearman_hard": spearman(hard, truth), "pairs": len(truth)}


def gradient_alignment(vlm, samples: list[Sample], oracle_ea) -> dict:
    """`estimate_alignment` on renders: the unchanged source and a half-way edit of each sample."""
    edits = []
    for sample in samples:
        source, target = render(sample.scene), render(sample.scene, category=sample.category)
        for alpha in (0.0, 0.5):
            edited = source * (1 - alpha) + target * alpha
            edits.append(Estimate(sample, sample.instruction, edited, float("nan"), oracle_ea(sample, edited)))
    return estimate_alignment(vlm, edits, oracle_ea)


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation with average ranks for ties (hand-written: scipy is not a dependency)."""
    ra, rb = _ranks(torch.tensor(a, dtype=torch.float64)), _ranks(torch.tensor(b, dtype=torch.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = (ra.norm() * rb.norm()).item()
    return float((ra * rb).sum().item() / denominator) if denominator > 0 else 0.0


def _ranks(values: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(len(values), dtype=torch.float64)
    for value in torch.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks

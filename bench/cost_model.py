"""Real-size cost model without a GPU: FLOPs and peak memory of the edit, SFT and USO steps.

    python -m bench.cost_model --jobs 2   # every row (about 50 minutes on 2 CPU cores)
    python -m bench.cost_model --quick    # the validation rows and the 33-frame USO ladder of one VLM
    python -m bench.cost_model --jobs 2 --only edit-placements,training-24g   # those groups; the other rows
                                          # are kept from the results file

Every step runs once on fake tensors (bench/fake_measure.py: no memory is allocated, attention and RMSNorm
are accounted as CUDA runs them): Wan2.1-1.3B with the VLMs the project supports at real size, bf16. Rows:
- "naive (H100 anchor)": the composition measured on an H100 (bench/results/h100_naive_uso), modelled exactly;
  these rows are compared with the measurements (validation).
- the project's steps: the editor's guided step, and the trainer's SFT / USO step. For the ReViSE release
  (VILA + its own connector) at 33 frames, one row per memory feature switched on, in the order the table
  lists them (each row keeps the switches above it); elsewhere the row with every feature on.
Roofline time = FLOPs / H100 dense bf16 peak (989 TFLOP/s): a lower bound, compute-bound, no overlap.

Two more groups of rows (GROUPS):
- "edit-placements": a whole ReViSE edit at the release's setting (17 frames 352x640, 40 UniPC steps with
  official guidance), one row per weight placement (bench/whole_edit.py, simulated by bench/placement_sim.py):
  peak device and host bytes, host-to-device transfer bytes per edit, transfer seconds at
  HOST_TO_DEVICE_BYTES_PER_S and compute seconds at the CONSUMER_BF16_FLOPS roofline (RTX 4090-class);
- "training-24g": USO steps at 17 frames against the consumer targets (LoRA, full fine-tune with 8-bit
  AdamW and an int8 critic VLM; bench/train_memory.py).
Results: bench/results/cost_model.{json,md}; docs/performance.md explains them and what they leave out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

from bench.common import RESULTS
from bench.whole_edit import CONSUMER_BF16_FLOPS, HOST_TO_DEVICE_BYTES_PER_S, PLACEMENTS, RELEASE_VLM, EditRow

H100_BF16_FLOPS = 989e12  # H100 SXM dense bf16 peak (NVIDIA datasheet), no sparsity
GROUPS = ("ladder", "training-24g", "edit-placements")
GIB = 2**30
# 17f: the ReViSE release's edit (revise-official); 41f: Omni-Video 2's (omnivideo2-official)
SIZES = {"33f": (33, 352, 640), "81f": (81, 480, 832), "17f": (17, 352, 640), "41f": (41, 480, 832)}
VLMS = ("revise-vila-8b", "qwen2.5-vl-7b")
# Measured on an H100 80GB (bench/results/h100_naive_uso/, torch.cuda.max_memory_allocated).
ANCHOR = {("edit", "33f"): 19.2, ("sft", "33f"): 49.3, ("uso", "33f"): 74.1, ("edit", "81f"): 21.4,
          ("sft", "81f"): "out of memory on an 80 GB card"}
VALIDATION_TOLERANCE = 0.15


@dataclass
class Row:
    step: str
    frames: int
    height: int
    width: int
    vlm: str
    setting: str
    peak_gib: float
    split_gib: dict
    flops: float
    roofline_s: float
    measured_gib: float | str | None = None
    difference: float | None = None  # (predicted - measured) / measured
    switches: dict = field(default_factory=dict)
    fake_run_s: float = 0.0
    group: str = "ladder"
    target: str = ""
    target_met: bool | None = None


def ladder(step: str) -> list[tuple[str, dict]]:
    """The project's memory features, switched on one after another (critic-only ones only for USO)."""
    rows = [("trainer as configured (fp32 frozen models, umT5 resident)", {}),
            ("+ frozen models in the compute dtype (frozen_dtype=auto)", {"frozen_dtype": "bf16"}),
            ("+ umT5 off the GPU between feature passes (offload_text_encoder)", {"t5_resident": False}),
            ("+ DiT block checkpointing (checkpointing_dit)", {"checkpointing_dit": True})]
    if step == "uso":
        rows += [("+ VLM checkpointing (checkpointing_vlm)", {"checkpointing_vlm": True}),
                 ("+ decode 2 latent frames as video (5 frames, the critic samples 4), per-frame checkpointing "
                  "(decode_latent_frames=2, checkpointing_vae)", {"decode_latent_frames": 2, "checkpointing_vae": True}),
                 ("+ instead 4 latent frames sampled over the clip, each decoded alone (critic_decode=frames)",
                  {"critic_decode": "frames", "decode_latent_frames": 0}),
                 ("+ 2 critic frames (critic_frames=2)", {"critic_frames": 2})]
    # LoRA is not modelled: PEFT swaps the adapted layers' parameters in place, which fake tensors refuse.
    return rows


# USO at the release's 17 frames with every memory feature of the ladder (critic_frames at its default, 4),
# against the consumer targets: (label, switches, target, limit GiB).
_EVERY_FEATURE = {"frozen_dtype": "bf16", "t5_resident": False, "checkpointing_dit": True, "checkpointing_vlm": True,
                  "critic_decode": "frames", "checkpointing_vae": True}
TRAINING_24G = (
    ("USO LoRA (rank 32, trainer's targets), every memory feature, critic VLM bf16",
     {**_EVERY_FEATURE, "train": "lora"}, "device <= 16 GiB", 16.0),
    ("USO LoRA (rank 32, trainer's targets), every memory feature, critic VLM int8",
     {**_EVERY_FEATURE, "train": "lora", "vlm_storage": "int8"}, "device <= 16 GiB", 16.0),
    ("USO full fine-tune, 8-bit AdamW, every memory feature, critic VLM int8 resident (umT5 off, VAE bf16)",
     {**_EVERY_FEATURE, "vlm_storage": "int8", "optimizer": "adamw8bit"}, "device <= 24 GiB", 24.0),
    ("USO LoRA, critic VLM int8, connector heads in host memory (configs/train/revise_lora_16gib.yaml)",
     {**_EVERY_FEATURE, "train": "lora", "vlm_storage": "int8", "connector_heads": "host"}, "device <= 16 GiB", 16.0),
    ("USO full fine-tune, 8-bit AdamW, critic VLM int8, connector heads in host memory "
     "(configs/train/revise_24gib.yaml)",
     {**_EVERY_FEATURE, "vlm_storage": "int8", "optimizer": "adamw8bit", "connector_heads": "host"},
     "device <= 24 GiB", 24.0),
)


def measure_naive(step: str, size: str):
    from bench import naive_composition as naive
    from bench.fake_measure import measure

    frames, height, width = SIZES[size]
    return measure(lambda: naive.setup(frames, height, width, step=step), naive.step_function(step))


def measure_project(step: str, size: str, vlm: str, switches: dict):
    from bench import project_composition as project
    from bench.fake_measure import measure
    from revise_core import critic

    frames, height, width = SIZES[size]
    settings = project.Settings(**switches)
    function = project.edit_step if step == "edit" else project.train_step
    # The critic keys its Δ_base cache by a hash of the pixels, which fake tensors do not have.
    with mock.patch.object(critic, "_fingerprint", lambda frames: "cost-model"):
        return measure(lambda: project.setup(frames, height, width, step=step, vlm_name=vlm, settings=settings),
                       function)


def to_row(measurement, *, step: str, size: str, vlm: str, setting: str, switches: dict) -> Row:
    frames, height, width = SIZES[size]
    peak = measurement.peak_bytes / GIB
    measured = ANCHOR.get((step, size)) if setting.startswith("naive") else None
    difference = (peak - measured) / measured if isinstance(measured, float) else None
    row = Row(step, frames, height, width, vlm, setting, round(peak, 2), measurement.split_gib(),
              float(measurement.flops), round(measurement.flops / H100_BF16_FLOPS, 4), measured,
              round(difference, 4) if difference is not None else None, switches, round(measurement.seconds, 1))
    for label, _, target, limit in TRAINING_24G:
        if setting == label and size == "17f":
            row.group, row.target, row.target_met = "training-24g", target, peak <= limit
    return row


def plan(quick: bool, groups: tuple[str, ...] | None = None) -> list[tuple]:
    """Cases of the chosen groups (default: every group; --quick: the ladder's validation rows and one USO
    ladder). "ladder": the validation rows, then per VLM and size: the edit step, and SFT / USO rows. The whole
    ladder (one row per memory feature) is shown once, for the ReViSE release at 33 frames; elsewhere only its
    last row (every feature on)."""
    groups = groups or (("ladder",) if quick else GROUPS)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown row groups {unknown}; known: {', '.join(GROUPS)}")
    cases: list[tuple] = ladder_plan(quick) if "ladder" in groups else []
    if "training-24g" in groups:
        cases += [("project", "uso", "17f", RELEASE_VLM, label, dict(switches)) for label, switches, _, _ in TRAINING_24G]
    if "edit-placements" in groups:
        cases += [("edit-placement", "edit", "17f", RELEASE_VLM, key, {}) for key in PLACEMENTS]
        cases.append(("omnivideo2-edit", "edit", "41f", "qwen3-vl-30b-a3b", "omnivideo2-stream", {}))
    return cases


def ladder_plan(quick: bool) -> list[tuple]:
    cases: list[tuple] = [("naive", step, "33f", "qwen2.5-vl-7b", "naive (H100 anchor)", {})
                          for step in ("edit", "sft", "uso")]
    cases += [("naive", step, "81f", "qwen2.5-vl-7b", "naive (H100 anchor)", {}) for step in ("edit", "sft")]
    vlms = VLMS[:1] if quick else VLMS
    sizes = ("33f",) if quick else ("33f", "81f")  # the ladder sizes (17f: the whole-edit and 24 GiB rows)
    steps = ("uso",) if quick else ("edit", "sft", "uso")
    for vlm in vlms:
        for size in sizes:
            for step in steps:
                if step == "edit":
                    cases.append(("project", "edit", size, vlm, "editor, all five models resident (bf16)", {}))
                    continue
                rows, switches = [], {}
                for label, change in ladder(step):
                    switches = {**switches, **change}
                    rows.append(("project", step, size, vlm, label, dict(switches)))
                if (vlm, size) != (VLMS[0], "33f"):
                    rows = rows[-1:]
                cases += rows
    return cases


def row_from_dict(data: dict) -> Row | EditRow | None:
    """A printed or saved row (Row or EditRow), or None for anything else."""
    if not isinstance(data, dict):
        return None
    if "setting" in data:
        return Row(**{k: v for k, v in data.items() if k in Row.__dataclass_fields__})
    if "placement" in data and "key" in data:
        return EditRow(**{k: v for k, v in data.items() if k in EditRow.__dataclass_fields__})
    return None


def row_key(row: Row | EditRow) -> tuple:
    if isinstance(row, EditRow):
        return ("edit-placement", row.frames, row.vlm, row.key)
    return (row.step, row.frames, row.vlm, row.setting, json.dumps(row.switches, sort_keys=True))


def case_key(case: tuple) -> tuple:
    composition, step, size, vlm, setting, switches = case
    if composition in ("edit-placement", "omnivideo2-edit"):
        return ("edit-placement", SIZES[size][0], vlm, setting)
    return (step, SIZES[size][0], vlm, setting, json.dumps(switches, sort_keys=True))


def reused_rows(path: str | None) -> dict:
    """Rows of an earlier run's output (the JSON lines this command prints), keyed like the plan's cases, so
    that an interrupted run continues where it stopped; the results record which rows came from where."""
    if not path:
        return {}
    rows = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        try:
            data = json.loads(line) if line.startswith("{") else None
        except json.JSONDecodeError:  # a torn last line, or not the printed rows
            data = None
        row = row_from_dict(data)
        if row is not None:
            rows[row_key(row)] = row
    return rows


def saved_rows(path) -> tuple[list, dict]:
    """Rows (Row and EditRow) of a results file written by this command, and its payload."""
    path = Path(path)
    if not path.is_file():
        return [], {}
    payload = json.loads(path.read_text())
    rows = [row_from_dict(data) for data in payload.get("rows", []) + payload.get("edit_placements", [])]
    return [row for row in rows if row is not None], payload


def row_group(row: Row | EditRow) -> str:
    return "edit-placements" if isinstance(row, EditRow) else row.group


def run_case(case: tuple) -> Row | EditRow:
    """Measure one planned row (runs in a worker process when --jobs > 1)."""
    composition, step, size, vlm, setting, switches = case
    if composition == "edit-placement":
        from bench.whole_edit import measure_placement

        return measure_placement(setting, SIZES[size])
    if composition == "omnivideo2-edit":
        from bench.omnivideo2_edit import measure

        return measure(setting)
    if composition == "naive":
        measurement = measure_naive(step, size)
    else:
        measurement = measure_project(step, size, vlm, switches)
    return to_row(measurement, step=step, size=size, vlm=vlm, setting=setting, switches=switches)


def _single_threaded_worker() -> None:
    import torch

    # A fake run is Python dispatch on one core; intra-op threads would only contend between workers.
    torch.set_num_threads(1)


def measure_all(cases: list[tuple], jobs: int, reuse: dict | None = None):
    """Yield the rows in plan order; with jobs > 1, rows are measured in separate spawned processes. Rows in
    `reuse` (an earlier run's) are taken over instead of measured."""
    reuse = reuse or {}
    key = case_key
    todo = [case for case in cases if key(case) not in reuse]
    if jobs <= 1:
        measured = map(run_case, todo)
        for case in cases:
            yield reuse[key(case)] if key(case) in reuse else next(measured)
        return
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no fake mode or patch leaks in
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_single_threaded_worker)
    try:
        measured = pool.map(run_case, todo)
        for case in cases:
            yield reuse[key(case)] if key(case) in reuse else next(measured)
    finally:  # a failed row stops the run now, not after every queued row
        pool.shutdown(wait=False, cancel_futures=True)


def markdown(rows: list, command: str, commands: dict | None = None) -> str:
    """The results file: the step table (ladder and training rows), then the whole-edit placements and the
    consumer targets when those rows are present. `commands`: the command that produced each group."""
    edit_rows = [r for r in rows if isinstance(r, EditRow)]
    rows = [r for r in rows if not isinstance(r, EditRow)]
    made_by = ""
    if commands and len(set(commands.values())) > 1:
        made_by = " Rows by group: " + "; ".join(f"{group}: `{cmd}`" for group, cmd in commands.items()) + "."
    lines = [
        "# cost_model", "",
        f"Fake-tensor model of real-size steps (no GPU): `{command}`.{made_by} Device of the fake run: CPU "
        f"({platform.machine()}); memory = live tensor bytes at the peak (what `torch.cuda.max_memory_allocated` "
        f"reports); roofline = FLOPs / {H100_BF16_FLOPS / 1e12:.0f} TFLOP/s (H100 dense bf16).", "",
        "| step | frames | VLM | setting | peak GiB | measured H100 | diff | TFLOP | roofline s | split (GiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        measured = (f"{r.measured_gib}" if r.measured_gib is not None else "")
        diff = f"{r.difference:+.1%}" if r.difference is not None else ""
        split = ", ".join(f"{k.lower()} {v:g}" for k, v in r.split_gib.items() if v >= 0.01)
        lines.append(f"| {r.step} | {r.frames} ({r.height}x{r.width}) | {r.vlm} | {r.setting} | {r.peak_gib:.2f} | "
                     f"{measured} | {diff} | {r.flops / 1e12:.1f} | {r.roofline_s:.3f} | {split} |")
    training = [r for r in rows if r.group == "training-24g"]
    if training:
        lines += ["", "The training-24g rows (USO at 17 frames) are the step of `trainer.step.loss_parts` as above, with "
                  "LoRA added as PEFT computes it (a forward hook: PEFT's in-place layer swap is refused by fake "
                  "tensors; fp32 rank-32 parameters on the trainer's lora_targets, their gradients and AdamW "
                  "states all measured), the critic VLM's Linear layers stored as torchao int8 weight-only and "
                  "computed as torchao does (bf16 copy of one layer's weight while it runs), and torchao AdamW8bit's "
                  "exact state layout (8-bit codes, fp32 block scales, fp32 qmap; plain fp32 below 4096 values) with "
                  "its update run eagerly (bench/train_memory.py). Gradients and master weights stay fp32."]
    if edit_rows:
        lines += edit_markdown(edit_rows)
    targets = [(r.setting, f"{r.peak_gib:.2f} GiB device", r.target, r.target_met) for r in training if r.target]
    targets += [(r.placement, _edit_figures(r), r.target, r.target_met) for r in edit_rows
                if r.target and (r.target_met is not None or r.method.startswith("not measured"))]
    if targets:
        lines += ["", "## Targets: the consumer cards", "", "| row | figure | target | met |", "|---|---|---|---|"]
        for name, figure, target, met in targets:
            verdict = "yes" if met else ("no" if met is False else "not measured")
            lines.append(f"| {name} | {figure} | {target} | {verdict} |")
    return "\n".join(lines) + "\n"


def _edit_figures(r: EditRow) -> str:
    if r.method.startswith("not measured"):
        return "-"
    return (f"{r.device_gib:.2f} GiB device, {r.host_gib:.2f} GiB host, transfer {r.transfer_share:.1%} of compute")


def edit_markdown(edit_rows: list[EditRow]) -> list[str]:
    lines = [
        "", "## A whole edit per placement", "",
        "The ReViSE release's edit (17 frames 352x640, revise-vila-8b) as `revise-official` runs it (UniPC 40 steps, guidance mode official: a "
        "conditional and an unconditional DiT call per step; umT5 over 512 tokens; VILA on frame 0), all five "
        "release models in bf16 unless the row says otherwise. Stages in the editor's order: VAE encode, VLM "
        "pass, umT5 encode, connector (cond and null branch), 40 sampling steps, VAE decode. Method of every "
        "measured row: simulated on fake tensors (bench/whole_edit.py, bench/placement_sim.py): each model's "
        "weights are moved between a fake device and fake host memory at each stage as revise_core/placement.py "
        "plans them (resident; sequential: whole model per stage, Module.to; stream: diffusers leaf-level groups "
        "with a pinned host copy (umT5's embedding, tied between `shared` and `encoder.embed_tokens`, is two groups, so two "
        "pinned copies, as diffusers makes them), the next group prefetched; disk: each group read from its safetensors file, "
        "2 x the group on the host while it is read), and live bytes are counted per device. One sampling step "
        "is simulated; its FLOPs x 40 (a model moved into the sampling stage moves once). Transfer = "
        f"host-to-device bytes per edit at {HOST_TO_DEVICE_BYTES_PER_S / 1e9:.0f} GB/s; compute = FLOPs at "
        f"{CONSUMER_BF16_FLOPS / 1e12:.0f} TFLOP/s (RTX 4090-class dense bf16 roofline: a lower bound). Host = "
        "weights waiting in host memory (inputs and outputs aside).", "",
    ]
    if any(r.vlm != RELEASE_VLM for r in edit_rows):
        lines += ["The Omni-Video 2 row is its release's edit as `omnivideo2-official` runs it (41 frames 480x832, 40 "
                  "steps, standard guidance against umT5 of its negative prompt, contexts of 6272 rows, a source then a "
                  "target caption of up to 512 tokens each, u from the feature pass) with Qwen3-VL-30B-A3B built at "
                  "real size, simulated the same way (bench/omnivideo2_edit.py) with two stand-ins: MoE routing "
                  "(value-dependent) spread evenly over the experts, through transformers' own expert loop; each "
                  "caption is its prefill plus one decode step with the KV cache, x 511 (the preset's bound; real "
                  "captions stop at the end token).", ""]
    lines += [
        "| placement | edit | models | device GiB | host GiB | transfer GiB / edit | transfer s | compute s | "
        "transfer / compute | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in edit_rows:
        edit = f"{r.vlm}, {r.frames}f {r.height}x{r.width}"
        if r.method.startswith("not measured"):
            lines.append(f"| {r.placement} | {edit} | {r.description} | - | - | - | - | - | - | {r.target} | "
                         f"{r.method} |")
            continue
        met = "yes" if r.target_met else ("no" if r.target_met is False else "")
        lines.append(f"| {r.placement} | {edit} | {r.description} | {r.device_gib:.2f} | {r.host_gib:.2f} | "
                     f"{r.transfer_gib:.2f} | {r.transfer_s:.2f} | {r.compute_s:.2f} | {r.transfer_share:.1%} | "
                     f"{r.target} | {met} |")
    groups: dict[tuple, list[EditRow]] = {}
    for r in edit_rows:
        if r.stages:
            groups.setdefault((r.vlm, r.frames, r.height, r.width), []).append(r)
    for (vlm, frames, height, width), measured in groups.items():
        names = [stage["stage"] for stage in measured[0].stages]
        moving = next((r for r in measured if any(stage["transfer_gib"] for stage in r.stages)), measured[0])
        lines += ["", f"Peak device GiB per stage, {vlm} at {frames} frames {height}x{width} (host GiB in brackets "
                  "where weights wait there; TFLOP per edit):", "",
                  f"| stage | TFLOP | transfer GiB ({moving.placement}) | "
                  + " | ".join(r.placement for r in measured) + " |", "|---|---|---|" + "---|" * len(measured)]
        for index, name in enumerate(names):
            cells = []
            for r in measured:
                stage = r.stages[index] if index < len(r.stages) else None
                cells.append("" if stage is None else f"{stage['device_gib']:.2f}" + (
                    f" ({stage['host_gib']:.2f})" if stage["host_gib"] else ""))
            flops, moved = measured[0].stages[index]["tflop"], moving.stages[index]["transfer_gib"]
            lines.append(f"| {name} | {flops:.1f} | {moved:.2f} | " + " | ".join(cells) + " |")
        weights = ", ".join(f"{k} {v:.2f}" for k, v in measured[0].weights_gib.items())
        lines += ["", f"Weights as stored in {measured[0].placement} (GiB): {weights}."]
    if edit_rows:
        notes: dict[str, list[str]] = {}
        for r in edit_rows:
            if r.device_to_host_gib:
                notes.setdefault(f"the sequential models' way back (Module.to copies them to the host) is another "
                                 f"{r.device_to_host_gib:.2f} GiB device-to-host per edit, not counted above",
                                 []).append(r.placement)
            for note in r.notes:
                notes.setdefault(note, []).append(r.placement)
        lines += [""] + [f"- {'; '.join(rows)}: {note}." for note, rows in notes.items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost_model", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="validation rows at 33 frames + one USO ladder")
    parser.add_argument("--jobs", type=int, default=1, help="rows measured in parallel processes (one per core)")
    parser.add_argument("--reuse", help="the printed output (JSON lines) of an interrupted run: its rows are kept")
    parser.add_argument("--only", help=f"comma-separated row groups to measure ({', '.join(GROUPS)}); the other "
                                       "groups' rows are kept from the results file (--out)")
    parser.add_argument("--out", default=str(RESULTS / "cost_model"), help="results path without extension")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    only = tuple(group.strip() for group in args.only.split(",") if group.strip()) if args.only else None
    if only is not None and (not only or set(only) - set(GROUPS)):
        parser.error(f"--only takes groups among {', '.join(GROUPS)}, got '{args.only}'")
    command = "python -m bench.cost_model" + (" --quick" if args.quick else "") + (
        f" --jobs {args.jobs}" if args.jobs > 1 else "") + (f" --only {','.join(only)}" if only else "") + (
        f" --reuse {Path(args.reuse).name}" if args.reuse else "")
    out = Path(args.out)
    kept, previous = saved_rows(out.with_suffix(".json")) if only else ([], {})
    kept = [row for row in kept if row_group(row) not in only] if only else []
    groups = only or (("ladder",) if args.quick else GROUPS)
    commands = {group: command for group in groups}
    for row in kept:
        group = row_group(row)
        commands.setdefault(group, previous.get("commands", {}).get(group, previous.get("command", "")))
    rows: list = []
    started = time.perf_counter()
    reuse = reused_rows(args.reuse)
    for row in measure_all(plan(args.quick, only), args.jobs, reuse):
        rows.append(row)
        print(json.dumps(asdict(row)), flush=True)
    reused = len([r for r in rows if any(r is v for v in reuse.values())])
    rows = sorted(kept + rows, key=lambda row: GROUPS.index(row_group(row)))  # stable: plan order within a group
    commands = {group: commands[group] for group in GROUPS if group in commands}
    payload = {"command": command, "commands": commands, "device": f"CPU fake tensors ({platform.machine()})",
               "roofline_flops_per_s": H100_BF16_FLOPS, "consumer_bf16_flops_per_s": CONSUMER_BF16_FLOPS,
               "host_to_device_bytes_per_s": HOST_TO_DEVICE_BYTES_PER_S,
               "rows": [asdict(r) for r in rows if not isinstance(r, EditRow)],
               "edit_placements": [asdict(r) for r in rows if isinstance(r, EditRow)],
               "seconds": round(time.perf_counter() - started), "reused_rows": reused, "kept_rows": len(kept)}
    with contextlib.suppress(FileExistsError):
        RESULTS.mkdir(parents=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, command, commands))
    failures = [r for r in rows if isinstance(r, Row) and r.difference is not None
                and abs(r.difference) > VALIDATION_TOLERANCE]
    if failures:
        print(f"validation: {len(failures)} row(s) outside ±{VALIDATION_TOLERANCE:.0%} of the H100 measurements",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real-size cost model without a GPU: FLOPs and peak memory of the edit, SFT and USO steps.

    python -m bench.cost_model --jobs 2   # every row (about 30 minutes on 2 CPU cores)
    python -m bench.cost_model --quick    # the validation rows and the 33-frame USO ladder of one VLM

Every step runs once on fake tensors (bench/fake_measure.py: no memory is allocated, attention and RMSNorm
are accounted as CUDA runs them): Wan2.1-1.3B with the VLMs the project supports at real size, bf16. Rows:
- "naive (H100 anchor)": the composition measured on an H100 (shared/reference/anchor), modelled exactly;
  these rows are compared with the measurements (validation).
- the project's steps: the editor's guided step, and the trainer's SFT / USO step. For the ReViSE release
  (VILA + its own connector) at 33 frames, one row per memory feature switched on, in the order the table
  lists them (each row keeps the switches above it); elsewhere the row with every feature on.
Roofline time = FLOPs / H100 dense bf16 peak (989 TFLOP/s): a lower bound, compute-bound, no overlap.
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
from unittest import mock

from bench.common import RESULTS

H100_BF16_FLOPS = 989e12  # H100 SXM dense bf16 peak (NVIDIA datasheet), no sparsity
GIB = 2**30
SIZES = {"33f": (33, 352, 640), "81f": (81, 480, 832)}
VLMS = ("revise-vila-8b", "qwen2.5-vl-7b")
# Measured on an H100 80GB with shared/reference/anchor/anchor_naive_uso.py (torch.cuda.max_memory_allocated).
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
    return Row(step, frames, height, width, vlm, setting, round(peak, 2), measurement.split_gib(),
               float(measurement.flops), round(measurement.flops / H100_BF16_FLOPS, 4), measured,
               round(difference, 4) if difference is not None else None, switches, round(measurement.seconds, 1))


def plan(quick: bool) -> list[tuple]:
    """The validation rows, then per VLM and size: the edit step, and SFT / USO rows. The whole ladder (one
    row per memory feature) is shown once, for the ReViSE release at 33 frames; elsewhere only its last row
    (every feature on)."""
    cases: list[tuple] = [("naive", step, "33f", "qwen2.5-vl-7b", "naive (H100 anchor)", {})
                          for step in ("edit", "sft", "uso")]
    cases += [("naive", step, "81f", "qwen2.5-vl-7b", "naive (H100 anchor)", {}) for step in ("edit", "sft")]
    vlms = VLMS[:1] if quick else VLMS
    sizes = ("33f",) if quick else tuple(SIZES)
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
        if isinstance(data, dict) and "setting" in data:
            key = (data["step"], data["frames"], data["vlm"], data["setting"], json.dumps(data["switches"], sort_keys=True))
            rows[key] = Row(**{k: v for k, v in data.items() if k in Row.__dataclass_fields__})
    return rows


def run_case(case: tuple) -> Row:
    """Measure one planned row (runs in a worker process when --jobs > 1)."""
    composition, step, size, vlm, setting, switches = case
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

    def key(case):
        _, step, size, vlm, setting, switches = case
        return (step, SIZES[size][0], vlm, setting, json.dumps(switches, sort_keys=True))

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


def markdown(rows: list[Row], command: str) -> str:
    lines = [
        "# cost_model", "",
        f"Fake-tensor model of real-size steps (no GPU): `{command}`. Device of the fake run: CPU "
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
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost_model", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="validation rows at 33 frames + one USO ladder")
    parser.add_argument("--jobs", type=int, default=1, help="rows measured in parallel processes (one per core)")
    parser.add_argument("--reuse", help="the printed output (JSON lines) of an interrupted run: its rows are kept")
    parser.add_argument("--out", default=str(RESULTS / "cost_model"), help="results path without extension")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    command = "python -m bench.cost_model" + (" --quick" if args.quick else "") + (
        f" --jobs {args.jobs}" if args.jobs > 1 else "")
    rows: list[Row] = []
    started = time.perf_counter()
    reuse = reused_rows(args.reuse)
    for row in measure_all(plan(args.quick), args.jobs, reuse):
        rows.append(row)
        print(json.dumps(asdict(row)), flush=True)
    payload = {"command": command, "device": f"CPU fake tensors ({platform.machine()})",
               "roofline_flops_per_s": H100_BF16_FLOPS, "rows": [asdict(r) for r in rows],
               "seconds": round(time.perf_counter() - started),
               "reused_rows": len(reuse and [r for r in rows if any(r is v for v in reuse.values())])}
    with contextlib.suppress(FileExistsError):
        RESULTS.mkdir(parents=True)
    from pathlib import Path

    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, command))
    failures = [r for r in rows if r.difference is not None and abs(r.difference) > VALIDATION_TOLERANCE]
    if failures:
        print(f"validation: {len(failures)} row(s) outside ±{VALIDATION_TOLERANCE:.0%} of the H100 measurements",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training runs lose nothing: another run's folder is never overwritten silently, a resumed run keeps its
settings, damaged checkpoints and torn log lines are survived, SIGTERM and ComfyUI's Cancel save the last
step, and every metrics line is standard JSON."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest
import torch
from test_trainer import make_trainer, run

from trainer import state as checkpoints
from trainer.demo import write_demo_data
from trainer.loop import TerminationRequested


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_demo_data(tmp_path_factory.mktemp("safety-data"), count=3)


def _strict_json(line: str) -> dict:
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(line, parse_constant=refuse)


def test_a_fresh_run_never_replaces_another_run_unless_asked(tiny_dir, manifest, tmp_path):
    run(tiny_dir, manifest, tmp_path, steps=2)
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(checkpoints.RunExistsError, match="already holds a run \\(checkpoints, metrics.jsonl"):
        make_trainer(tiny_dir, manifest, tmp_path, steps=2).setup()
    assert (tmp_path / "metrics.jsonl").read_text() == before
    assert checkpoints.latest(tmp_path).name == "step_000002"
    trainer = make_trainer(tiny_dir, manifest, tmp_path, steps=1, checkpoint_every=1)
    trainer.setup(overwrite=True)
    trainer.train()
    assert [p.name for p in (tmp_path / "checkpoints").glob("step_*")] == ["step_000001"]
    with pytest.raises(checkpoints.ResumeError, match="exclude each other"):
        make_trainer(tiny_dir, manifest, tmp_path).setup(resume=True, overwrite=True)


def test_resume_refuses_changed_settings_and_names_them(tiny_dir, manifest, tmp_path):
    run(tiny_dir, manifest, tmp_path, steps=2)
    with pytest.raises(checkpoints.ResumeError, match=r"lr: 0\.0001 -> 0\.001; seed: 0 -> 3"):
        make_trainer(tiny_dir, manifest, tmp_path, lr=1e-3, seed=3).setup(resume=True)
    resumed = run(tiny_dir, manifest, tmp_path, resume=True, steps=3, checkpoint_every=3)  # allowed changes
    assert [r["step"] for r in resumed] == [1, 2, 3]
    with pytest.raises(checkpoints.ResumeError, match="nothing to resume"):
        make_trainer(tiny_dir, manifest, tmp_path / "empty").setup(resume=True)


def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tiny_dir, manifest, tmp_path, caplog):
    straight = run(tiny_dir, manifest, tmp_path / "straight")
    run(tiny_dir, manifest, tmp_path, checkpoint_every=2)
    damaged = tmp_path / "checkpoints" / "step_000004" / "optimizer.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-7])  # a truncated copy
    with caplog.at_level(logging.WARNING, logger="trainer.state"):
        assert checkpoints.latest(tmp_path).name == "step_000002"
    assert "step_000004/optimizer.safetensors does not match its checksum" in caplog.text
    resumed = run(tiny_dir, manifest, tmp_path, resume=True, checkpoint_every=2)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]  # steps 3-4 redone exactly
    for name in ("step_000002", "step_000004"):
        (tmp_path / "checkpoints" / name / "state.json").write_text("{")
    with pytest.raises(checkpoints.ResumeError, match="no intact checkpoint"):
        checkpoints.latest(tmp_path)


def test_torn_last_metrics_line_is_dropped_on_resume(tiny_dir, manifest, tmp_path, caplog):
    run(tiny_dir, manifest, tmp_path, steps=2)
    log = tmp_path / "metrics.jsonl"
    log.write_text(log.read_text() + '{"step": 3, "loss": 0.1')  # the process died while writing
    with caplog.at_level(logging.WARNING, logger="trainer.run_log"):
        resumed = run(tiny_dir, manifest, tmp_path, resume=True, steps=3)
    assert "dropping the torn last line 3" in caplog.text
    assert [_strict_json(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    assert [r["step"] for r in resumed] == [1, 2, 3]


def test_metrics_and_checkpoint_state_are_standard_json(tiny_dir, manifest, tmp_path):
    run(tiny_dir, manifest, tmp_path, steps=2, objective="sft")  # no critic: L_reason, Δ, P(Yes) are undefined
    records = [_strict_json(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["l_reason"] is None and records[0]["p_yes"] is None
    _strict_json((tmp_path / "checkpoints" / "step_000002" / "state.json").read_text())


def test_sigterm_saves_the_last_completed_step(tiny_dir, manifest, tmp_path):
    trainer = make_trainer(tiny_dir, manifest, tmp_path, checkpoint_every=100)
    trainer.setup()

    def terminate_after_step_two(step, metrics):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TerminationRequested):
        trainer.train(on_step=terminate_after_step_two)
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is restored
    assert checkpoints.latest(tmp_path).name == "step_000002"


class _Interrupted(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


def test_comfyui_cancel_saves_the_last_finished_step_and_resume_errors_name_the_input(tiny_dir, manifest, tmp_path,
                                                                                      monkeypatch, tiny_model_dirs):
    import sys

    from conftest import ROOT_PACKAGE
    from revise_core.model_sets import EditModels

    bridge = sys.modules[ROOT_PACKAGE.__name__ + ".nodes.comfy_bridge"]  # the module the nodes use

    models = EditModels.load(tiny_dir)
    calls = []

    def progress(total, **kwargs):
        def update(info):
            calls.append(info)
            if len(calls) == 2:  # Cancel pressed during step 2: the bar raises ComfyUI's exception
                raise _Interrupted()
        return update

    monkeypatch.setattr(bridge, "progress", progress)
    monkeypatch.setattr(bridge, "is_interruption", lambda error: isinstance(error, _Interrupted))
    node = ROOT_PACKAGE.NODE_CLASS_MAPPINGS["ReViSEUSOTrainer"]()
    args = dict(dit=models.dit, vae=models.vae, t5=models.text, vlm=models.vlm, connector=models.connector,
                manifest=str(manifest), output_name="cancel", objective="sft", steps=4, reason_weight=0.25,
                sigma_max=0.5, learning_rate=1e-4, train="full", lora_rank=4, global_batch=1, num_frames=5,
                width=64, height=64, training_seed=0, resume=False)
    with torch.inference_mode(), pytest.raises(KeyboardInterrupt):
        node.train(**args)
    out = bridge.output_directory() / "revise_training" / "cancel"
    assert checkpoints.latest(out).name == "step_000002"
    with torch.inference_mode(), pytest.raises(checkpoints.RunExistsError, match="turn the 'resume' input on"):
        node.train(**args)
    with torch.inference_mode(), pytest.raises(checkpoints.ResumeError, match="'resume' is on but output_name 'new'"):
        node.train(**(args | {"output_name": "new", "resume": True}))


@pytest.mark.parametrize("name", ["/tmp/elsewhere", "../outside", "runs/../../outside", "C:\\Users\\x", "  "])
def test_the_trainer_nodes_output_name_stays_inside_comfyuis_output_folder(name, tmp_path, monkeypatch):
    """A workflow from the internet is untrusted input: its free-text run name must not escape the folder."""
    import sys

    from conftest import ROOT_PACKAGE

    bridge = sys.modules[ROOT_PACKAGE.__name__ + ".nodes.comfy_bridge"]  # the module the nodes use
    monkeypatch.setattr(bridge, "output_directory", lambda: tmp_path)
    node = ROOT_PACKAGE.NODE_CLASS_MAPPINGS["ReViSEUSOTrainer"]()
    with pytest.raises(ValueError, match="output_name .* must be a relative name"):
        node.train(dit=_tiny_dit(), vae=None, t5=None, vlm=None, connector=_tiny_connector(), manifest="m.jsonl",
                   output_name=name, objective="sft", steps=1, reason_weight=0.25, sigma_max=0.5, learning_rate=1e-4,
                   train="full", lora_rank=4, global_batch=1, num_frames=5, width=64, height=64, training_seed=0,
                   resume=False)
    assert list(tmp_path.iterdir()) == []


def _tiny_dit():
    from revise_core.testing import tiny_dit

    return tiny_dit()


def _tiny_connector():
    from revise_core.testing import tiny_connector

    return tiny_connector()


def test_one_training_run_per_output_folder_and_the_lock_dies_with_its_holder(tmp_path):
    """Two trainers on one folder: the second is refused with the holder's pid and host; a holder killed with
    kill -9 leaves nothing stale behind."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from trainer.run_lock import RunLock, RunLockedError

    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on {socket.gethostname()}"):
        RunLock(tmp_path).acquire()
    first.release()
    abandoned = RunLock(tmp_path).acquire()
    abandoned.cycle = abandoned  # dropped but not yet collected, as a trainer left without cleanup
    del abandoned
    RunLock(tmp_path).acquire().release()  # this process's own garbage is collected, not a conflict
    RunLock(tmp_path).acquire().release()
    # the trainer and its command line, before any model or manifest is read
    from revise_core.cli import run as run_cli
    from trainer import uso
    from trainer.config import USOConfig
    from trainer.loop import USOTrainer

    held = RunLock(tmp_path).acquire()
    with pytest.raises(RunLockedError, match="in use by another training run"):
        USOTrainer(USOConfig(output_dir=str(tmp_path), manifest="missing.jsonl", models="missing")).setup()
    assert run_cli(uso.main, ["--manifest", "missing.jsonl", "--models", "missing", "--output-dir", str(tmp_path)]) == 2
    held.release()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from trainer.run_lock import RunLock; "
                               f"lock = RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunLock(tmp_path).acquire().release()


def test_a_resume_on_changed_data_is_refused_naming_the_rows_unless_allowed(tiny_dir, tmp_path):
    from trainer.demo import write_demo_data
    from trainer.state import ResumeError

    manifest = write_demo_data(tmp_path / "data", count=2)
    run(tiny_dir, manifest, tmp_path / "run", steps=1, global_batch=1, objective="sft", checkpoint_every=1)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    changed = tmp_path / "data" / rows[1]["target"]
    changed.write_bytes(changed.read_bytes() + b"\0")  # the same name, other bytes: a re-encoded video
    settings = dict(steps=2, global_batch=1, objective="sft", checkpoint_every=1)
    with pytest.raises(ResumeError, match=r"dataset changed since the run started \(1 changed \(demo-001\)"):
        make_trainer(tiny_dir, manifest, tmp_path / "run", **settings).setup(resume=True)
    trainer = make_trainer(tiny_dir, manifest, tmp_path / "run", allow_dataset_change=True, **settings)
    trainer.setup(resume=True)
    assert trainer.start_step == 1


@pytest.mark.slow
def test_a_disk_that_fills_during_a_checkpoint_save_leaves_the_last_intact_checkpoint_newest(tiny_dir, tmp_path,
                                                                                           monkeypatch):
    import errno

    from revise_core import checkpoints as ckpt
    from trainer.demo import write_demo_data

    manifest = write_demo_data(tmp_path / "data", count=2)
    settings = dict(global_batch=1, objective="sft", checkpoint_every=1)
    run(tiny_dir, manifest, tmp_path / "run", steps=1, **settings)
    original = ckpt.save_safetensors

    def full_disk(tensors, path, **kwargs):
        if Path(path).name == "optimizer.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(tensors, path, **kwargs)

    monkeypatch.setattr(ckpt, "save_safetensors", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        run(tiny_dir, manifest, tmp_path / "run", resume=True, steps=2, **settings)
    assert checkpoints.latest(tmp_path / "run").name == "step_000001"  # the half-written step is not taken
    monkeypatch.undo()
    history = run(tiny_dir, manifest, tmp_path / "run", resume=True, steps=2, **settings)
    assert history[-1]["step"] == 2 and checkpoints.latest(tmp_path / "run").name == "step_000002"

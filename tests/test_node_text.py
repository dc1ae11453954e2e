"""Text on a running node (nodes/node_text.py): how a training run ended, and on a CPU what the run will take,
sent to ComfyUI's frontend with PromptServer.send_progress_text and logged. Without ComfyUI: fakes of the two
ComfyUI modules it uses (tests/test_real_comfyui.py checks the real server's message)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from conftest import ROOT_PACKAGE

node_text = sys.modules[ROOT_PACKAGE.__name__ + ".nodes.node_text"]  # the modules the nodes use
training = sys.modules[ROOT_PACKAGE.__name__ + ".nodes.training"]


class _Server:
    """Stands in for ComfyUI's PromptServer.instance."""

    client_id = "client-1"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def send_progress_text(self, text, node_id, sid=None) -> None:
        self.sent.append((text, node_id, sid))


@pytest.fixture
def screen(monkeypatch) -> list[str]:
    """The texts shown on node 7 (what the frontend would display)."""
    texts: list[str] = []
    server = types.SimpleNamespace(client_id="c", send_progress_text=lambda text, node_id, sid=None: texts.append(text))
    monkeypatch.setattr(node_text, "_ui_target", lambda: (server, "7"))
    return texts


def test_show_sends_the_text_to_the_executing_node_of_the_client_that_queued_it(monkeypatch, caplog):
    """Inside ComfyUI: ComfyUI's executing context names the node, PromptServer.instance sends the text."""
    server = _Server()
    context = types.SimpleNamespace(prompt_id="p", node_id="12", list_index=None)
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=server)))
    monkeypatch.setitem(sys.modules, "comfy_execution", types.ModuleType("comfy_execution"))
    monkeypatch.setitem(sys.modules, "comfy_execution.utils", types.SimpleNamespace(get_executing_context=lambda: context))
    monkeypatch.setattr(node_text.bridge, "in_comfyui", lambda: True)
    with caplog.at_level("INFO"):
        node_text.show("hello")
    assert server.sent == [("hello", "12", "client-1")] and "hello" in caplog.text
    monkeypatch.setattr(node_text.bridge, "in_comfyui", lambda: False)
    node_text.show("only logged")
    assert len(server.sent) == 1


@pytest.mark.parametrize("seconds, text", [(0.2, "1 s"), (40, "40 s"), (600, "10 min"), (3 * 3600 + 1200, "3 h 20 min"),
                                           (14 * 3600, "14 h"), (60 * 3600, "2.5 days")])
def test_durations_read_at_a_glance(seconds, text):
    assert node_text.duration(seconds) == text


def test_on_a_cpu_the_node_says_the_run_is_long_then_the_measured_time_after_the_first_step(screen, monkeypatch):
    now = iter([100.0, 130.0])  # the clock starts, then step 1 ends 30 s later
    monkeypatch.setattr(node_text.time, "perf_counter", lambda: next(now))
    steps = []
    callback = node_text.timed(steps.append, node_text.cpu_clock("cpu", "sampling", 40))
    assert "Running on the CPU: sampling, 40 steps" in screen[0] and "hours" in screen[0]
    callback("step 1")
    callback("step 2")
    assert steps == ["step 1", "step 2"] and len(screen) == 2  # one estimate, after the first step
    assert "step 1 of 40 took 30 s, so about 20 min more for the remaining 39" in screen[1]
    assert "measured on this machine" in screen[1]


def test_on_a_gpu_nothing_is_said_and_the_callback_is_unchanged(screen):
    callback = print
    assert node_text.cpu_clock("cuda:0", "sampling", 40) is None and node_text.timed(callback, None) is callback
    assert screen == []


class _Trainer:
    """The parts of trainer.loop.USOTrainer that the node's _train uses; `train` stops like ComfyUI's Cancel
    (the node's on_step raises KeyboardInterrupt) after `cancel_after` steps."""

    def __init__(self, tmp_path: Path, steps: int, start_step: int = 0, cancel_after: int | None = None) -> None:
        self.config = types.SimpleNamespace(steps=steps, output_dir=str(tmp_path / "run"), device="cuda")
        self.start_step, self.cancel_after = start_step, cancel_after

    def setup(self, resume: bool) -> None:
        pass

    def train(self, on_step):
        for step in range(self.start_step + 1, self.config.steps + 1):
            if step - self.start_step - 1 == self.cancel_after:  # Cancel during this step
                raise KeyboardInterrupt
            on_step(step, {"loss": 0.1})
        return [{"step": step} for step in range(self.start_step + 1, self.config.steps + 1)]

    def cleanup(self) -> dict:
        return {}


def _run(trainer) -> None:
    training._train(trainer, resume=False, output_name="run", on_step=lambda step, metrics: None)


def test_a_cancelled_training_run_says_on_the_node_which_step_is_saved_and_how_to_continue(screen, tmp_path):
    trainer = _Trainer(tmp_path, steps=1000, cancel_after=37)
    with pytest.raises(KeyboardInterrupt):
        _run(trainer)
    assert screen == [f"Cancelled after step 37 of 1000: step 37 is saved in {tmp_path / 'run'}. To continue, turn "
                      "'resume' on and queue the workflow again."]


def test_a_run_cancelled_before_its_first_step_says_nothing_new_was_saved(screen, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(_Trainer(tmp_path, steps=100, start_step=40, cancel_after=0))
    assert screen == ["Cancelled before step 41 of 100 finished: nothing new was saved (the run stays at its step 40)."]


def test_a_finished_training_run_says_where_it_is(screen, tmp_path):
    _run(_Trainer(tmp_path, steps=3))
    assert len(screen) == 1 and screen[0].startswith("Finished: step 3 of 3 after ")
    assert str(tmp_path / "run") in screen[0]


def test_training_on_a_cpu_says_what_the_remaining_steps_take(screen, tmp_path):
    trainer = _Trainer(tmp_path, steps=5)
    trainer.config.device = "cpu"
    _run(trainer)
    assert "Running on the CPU: training, 5 steps" in screen[0]
    assert "training step 1 of 5 took" in screen[1] and "remaining 4" in screen[1]
    assert screen[2].startswith("Finished")

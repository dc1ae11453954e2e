"""Text on a running node: shown in ComfyUI's frontend under the node and written to the log.

ComfyUI's own nodes put text on a node with `PromptServer.instance.send_progress_text(text, node_id)`
(ComfyUI 0.8.0, e.g. comfy_extras/nodes_images.py); frontend 1.35.9 shows it in a text widget under the
node's widgets, where it stays after the run (a later text replaces it). The node is the one executing,
which ComfyUI keeps in `comfy_execution.utils.get_executing_context()` (what its progress bar uses), so the
nodes need no hidden input. Outside ComfyUI (tests, scripts) the text is only logged.

Used for what would otherwise be said on the console only: how a training run ended (Cancel saves the last
finished step) and, on a CPU, how long a long run will take, measured on its first step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from . import comfy_bridge as bridge

logger = logging.getLogger(__name__)


def show(text: str, *, level: int = logging.INFO) -> None:
    """Log `text` and, inside ComfyUI, show it on the executing node."""
    logger.log(level, text)
    target = _ui_target()
    if target is not None:
        server, node_id = target
        server.send_progress_text(text, node_id, server.client_id)  # to the client that queued the prompt


def _ui_target():
    """(ComfyUI's server, the executing node's id), or None outside a ComfyUI execution. Imported here:
    `server` and `comfy_execution` are ComfyUI's own top-level modules."""
    if not bridge.in_comfyui():
        return None
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:
        return None
    context, server = get_executing_context(), getattr(PromptServer, "instance", None)
    if context is None or server is None:
        return None
    return server, context.node_id


def duration(seconds: float) -> str:
    """A duration a person reads at a glance: '40 s', '12 min', '3 h 20 min', '2.5 days'."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    if minutes < 48 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{seconds / 86400:.1f} days"


class CPUClock:
    """On a CPU, says on the node that the run is long, then after the first step how long the rest takes,
    measured on this machine (time so far / steps done x steps left). The release's defaults are GPU
    settings; this is how a CPU user learns what they cost before waiting hours."""

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total = what, total
        self.started = time.perf_counter()
        self.said = False
        show(f"Running on the CPU: {what}, {total} steps. Settings sized for a GPU (the templates' 33 frames at "
             "640x352) take hours on a CPU; the time this machine needs follows after the first step.",
             level=logging.WARNING)

    def step(self, done: int) -> None:
        """Call after each finished step (`done` steps so far); speaks once."""
        if self.said or done < 1:
            return
        self.said = True
        per_step = (time.perf_counter() - self.started) / done
        show(estimate_text(self.what, per_step, done, self.total), level=logging.WARNING)


def estimate_text(what: str, per_step: float, done: int, total: int) -> str:
    left = max(0, total - done)
    return (f"On the CPU: {what} step {done} of {total} took {duration(per_step)}, so about "
            f"{duration(per_step * left)} more for the remaining {left} (measured on this machine). Fewer steps, "
            "frames or pixels shorten it.")


def cpu_clock(device: torch.device | str, what: str, total: int) -> CPUClock | None:
    """A CPUClock when the run computes on the CPU, else None (GPU runs say nothing)."""
    return CPUClock(what, total) if torch.device(device).type == "cpu" else None


def timed(callback: Callable, clock: CPUClock | None) -> Callable:
    """`callback` (one call per step) that also feeds `clock`; `callback` itself when there is no clock."""
    if clock is None:
        return callback
    done = [0]

    def update(info=None) -> None:
        callback(info)
        done[0] += 1
        clock.step(done[0])

    return update

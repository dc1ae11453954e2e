"""Shared fixtures: one tiny model set on disk (every layout) and the same models in memory."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from revise_core.testing import TinyModelSet, tiny_model_set, write_tiny_models

TINY_SEED = 0
ROOT = Path(__file__).resolve().parent.parent

# pytest-xdist runs one worker per core (pyproject's addopts): torch's own thread pool in each worker would
# oversubscribe the cores, which makes the tiny models' many small kernels several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_xdist_auto_num_workers(config) -> int | None:
    """`-n auto` (pyproject's addopts): one worker per core this process may run on, at most 8. xdist's own
    count prefers psutil's physical cores, which is 1 on a 2-vCPU machine with hyper-threads (half speed), and
    every worker holds its own tiny model sets, so a many-core machine gains little beyond 8."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # the user's count: xdist's own hook reads it
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))


def _import_root_package():
    """The repository root imported as ComfyUI imports a custom-node folder."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("ComfyUI_ReViSE", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["ComfyUI_ReViSE"] = module
    spec.loader.exec_module(module)
    return module


ROOT_PACKAGE = _import_root_package()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-models")
    write_tiny_models(out, seed=TINY_SEED)
    return out


@pytest.fixture(autouse=True)
def demos_copy_the_session_models(request, monkeypatch):
    """The demos (edit, critic, RVE-Bench, trainer) write the kit's seed-0 set into their own folder; writing it
    takes seconds, so in tests they copy the session's `tiny_dir` (made by write_tiny_models itself, once per
    worker and only when a test asks for it), which is the same files: the kit is deterministic from its seed."""
    import shutil

    from revise_core import testing
    from trainer import demo

    def copy_or_write(out_dir, seed: int = 0) -> dict:
        if seed != TINY_SEED:
            return write_tiny_models(out_dir, seed=seed)
        shutil.copytree(request.getfixturevalue("tiny_dir"), out_dir, dirs_exist_ok=True)
        return json.loads((Path(out_dir) / "manifest.json").read_text())

    monkeypatch.setattr(testing, "write_tiny_models", copy_or_write)
    monkeypatch.setattr(demo, "write_tiny_models", copy_or_write)


@pytest.fixture(scope="session")
def tiny_manifest(tiny_dir) -> dict:
    return json.loads((tiny_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def tiny_models() -> TinyModelSet:
    return tiny_model_set(TINY_SEED)


@pytest.fixture
def tiny_model_dirs(tiny_dir, monkeypatch, tmp_path) -> dict:
    """Point the nodes' model folders (REVISE_MODEL_DIRS, as ComfyUI's folder_paths would) at the tiny set."""
    import os

    dirs = {"diffusion_models": [tiny_dir / "dit", tiny_dir / "omnivideo2", tiny_dir / "connector"],
            "vae": [tiny_dir / "vae"], "text_encoders": [tiny_dir / "t5"], "vlm": [tiny_dir / "vlm"],
            "revise": [tiny_dir], "loras": [tiny_dir / "loras"]}
    monkeypatch.setenv("REVISE_MODEL_DIRS", ";".join(f"{k}={os.pathsep.join(map(str, v))}" for k, v in dirs.items()))
    monkeypatch.setenv("REVISE_OUTPUT_DIR", str(tmp_path / "output"))
    return dirs


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, atol: float = 0.0, what: str = "") -> None:
    """Compare tensors and report max / mean absolute difference on failure."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.double() - expected.double()).abs()
    max_diff = diff.max().item() if diff.numel() else 0.0
    assert max_diff <= atol, f"{what}: max |diff| {max_diff:.3e} (mean {diff.mean().item():.3e}) > {atol}"


class ChatServer(BaseHTTPRequestHandler):
    """Speaks /chat/completions; each request pops the next scripted behaviour."""

    script: list = []
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        kind, value = type(self).script.pop(0)
        if kind == "sleep":
            time.sleep(value)
            kind, value = "content", '{"score": 1}'
        if kind == "status":
            self.send_response(value)
            self.end_headers()
            self.wfile.write(b"overloaded")
            return
        payload = {"choices": [{"message": {"role": "assistant", "content": value}}]} if kind == "content" else value
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ChatServer.script, ChatServer.requests = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()

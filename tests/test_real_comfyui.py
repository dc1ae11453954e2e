"""Optional: the workflows in a real ComfyUI server. Skips cleanly unless COMFYUI_PATH points at a ComfyUI
checkout. COMFYUI_PYTHON: its interpreter (default: this one); COMFYUI_PYTHONPATH: extra import path for the
server process only. Only loopback traffic, to the server the test starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import comfy_executor as executor
from conftest import ROOT
from test_workflows import WORKFLOWS, _classes, tiny_api

COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI or not (Path(COMFYUI) / "main.py").is_file(),
                                reason="set COMFYUI_PATH to a ComfyUI checkout to run the workflows in a real server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_env() -> dict:
    env = dict(os.environ)
    extra = os.environ.get("COMFYUI_PYTHONPATH")
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, env.get("PYTHONPATH")]))
    return env


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    from revise_core.video import synthetic_clip, write_video
    from trainer.demo import write_demo_data

    work = tmp_path_factory.mktemp("comfyui")
    (work / "custom_nodes").mkdir()
    (work / "custom_nodes" / "ComfyUI-ReViSE").symlink_to(ROOT)
    clip = synthetic_clip(num_frames=10, height=64, width=80)
    write_video(work / "input" / "source.mp4", clip.frames, clip.fps)
    manifest = write_demo_data(work / "data", count=2)
    (work / "paths.yaml").write_text(
        "revise:\n"
        f"    base_path: {tiny_dir}\n"
        "    diffusion_models: |\n        dit\n        connector\n        omnivideo2\n"
        "    vae: vae\n    text_encoders: t5\n    vlm: vlm\n"
        f"    custom_nodes: {work / 'custom_nodes'}\n"
    )
    port = _free_port()
    process = subprocess.Popen(
        [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1", "--port",
         str(port), "--extra-model-paths-config", str(work / "paths.yaml"), "--input-directory", str(work / "input"),
         "--output-directory", str(work / "output"), "--disable-auto-launch"],
        cwd=COMFYUI, stdout=open(work / "server.log", "w"), stderr=subprocess.STDOUT, env=_server_env(),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                _get(f"{base}/system_stats")
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("ComfyUI did not start:\n" + (work / "server.log").read_text()[-3000:])
        yield {"url": base, "manifest": str(manifest), "log": work / "server.log"}
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_nodes_register_and_workflows_are_templates(server):
    info = _get(f"{server['url']}/object_info")
    ours = {name for name in info if name.startswith("ReViSE")}
    assert ours == set(_classes()) - set(executor.BUILTIN_STAND_INS), "IMPORT FAILED?\n" + server["log"].read_text()[-3000:]
    templates = _get(f"{server['url']}/api/workflow_templates")
    assert sorted(templates["ComfyUI-ReViSE"]) == sorted(p.stem for p in WORKFLOWS), templates


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_runs_in_comfyui(server, path):
    api = tiny_api(path, server["manifest"])
    prompt_id = _post(f"{server['url']}/prompt", {"prompt": api})["prompt_id"]
    for _ in range(600):
        history = _get(f"{server['url']}/history/{prompt_id}")
        if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
            status = history[prompt_id]["status"]
            if status["status_str"] == "success":
                break
            pytest.fail(json.dumps(status["messages"], indent=1)[-4000:])
        time.sleep(0.5)
    else:
        pytest.fail("workflow did not finish")
    assert history[prompt_id]["status"]["status_str"] == "success"

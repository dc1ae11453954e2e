"""Optional: the workflows in a real ComfyUI server. Skips cleanly unless COMFYUI_PATH points at a ComfyUI
checkout. COMFYUI_PYTHON: its interpreter (default: this one); COMFYUI_PYTHONPATH: extra import path for the
server process only. Only loopback traffic, to the server the test starts."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import comfy_executor as executor
import pytest
import torch
from test_workflows import NATIVE, OFFICIAL, WORKFLOWS, _classes, tiny_api

from conftest import ROOT

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


def _check(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, f"{' '.join(map(str, run.args))} failed:\n{run.stderr[-4000:]}"


@pytest.fixture(scope="module")
def native_kit(tmp_path_factory) -> dict:
    """The native-shaped tiny set, its Omni-Video 2 DiT converted by the CLI for UNETLoader (as a user does)
    and the VAE under the name the native workflow uses."""
    from revise_core.testing.omnivideo2 import write_native_models

    root = tmp_path_factory.mktemp("native")
    paths = write_native_models(root)
    dit_file = root / "dm" / "revise_dit.safetensors"
    _check(subprocess.run([sys.executable, "-m", "revise_core.convert", str(paths["omnivideo2"]), str(dit_file),
                           "--config", str(paths["dit_config"])], cwd=ROOT, capture_output=True, text=True))
    (root / "vae").mkdir()
    shutil.copy(paths["vae"], root / "vae" / "wan_2.1_vae.safetensors")
    (root / "vae_approx").mkdir()
    _check(subprocess.run([os.environ.get("COMFYUI_PYTHON", sys.executable), str(ROOT / "tests" / "comfy_write_taehv.py"),
                           COMFYUI, str(root / "vae_approx" / "lighttaew2_1.safetensors")], capture_output=True,
                          text=True, env=_server_env(), cwd=COMFYUI))
    return {"root": root, "dit_file": dit_file, **paths}


@pytest.fixture(scope="module")
def server(tiny_dir, native_kit, tmp_path_factory):
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
        "    vae: vae\n    text_encoders: t5\n    vlm: vlm\n    revise: .\n    loras: loras\n"
        f"    custom_nodes: {work / 'custom_nodes'}\n"
        "native:\n"
        f"    base_path: {native_kit['root']}\n"
        "    diffusion_models: dm\n    vae: vae\n    revise: .\n    vae_approx: vae_approx\n"
    )
    port = _free_port()
    process = subprocess.Popen(
        [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1", "--port",
         str(port), "--extra-model-paths-config", str(work / "paths.yaml"), "--input-directory", str(work / "input"),
         "--output-directory", str(work / "output"), "--disable-auto-launch", "--preview-method", "latent2rgb",
         # every prompt runs every node (ComfyUI caches outputs across prompts otherwise: a sampler shared with
         # an earlier workflow would not run, and send no progress or previews)
         "--cache-none"],
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
        yield {"url": base, "port": port, "manifest": str(manifest), "log": work / "server.log",
               "output": work / "output"}
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_nodes_register_and_workflows_are_templates(server):
    info = _get(f"{server['url']}/object_info")
    ours = {name for name in info if name.startswith("ReViSE")}
    assert ours == set(_classes()) - set(executor.BUILTIN_STAND_INS), "IMPORT FAILED?\n" + server["log"].read_text()[-3000:]
    templates = _get(f"{server['url']}/api/workflow_templates")
    assert sorted(templates["ComfyUI-ReViSE"]) == sorted(p.stem for p in WORKFLOWS), templates
    for name in templates["ComfyUI-ReViSE"]:
        # the URLs frontend 1.35.9 forms: /api/workflow_templates/<module>/<name>.json and .jpg (the browser
        # percent-encodes the spaces)
        base = f"{server['url']}/api/workflow_templates/ComfyUI-ReViSE/{urllib.parse.quote(name)}"
        assert _get(base + ".json")["nodes"]
        with urllib.request.urlopen(base + ".jpg", timeout=30) as response:
            assert response.headers["Content-Type"] == "image/jpeg" and response.read(2) == b"\xff\xd8"


class _Messages(threading.Thread):
    """ComfyUI's websocket (/ws?clientId=...), read with the standard library: text events and binary
    (preview) frames. Only loopback, to the server the test started."""

    def __init__(self, port: int, client_id: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.text: list[dict] = []
        self.binary: list[bytes] = []

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def run(self) -> None:
        try:
            while True:
                first, second = self._read(2)
                length = second & 0x7F
                if length == 126:
                    length = struct.unpack(">H", self._read(2))[0]
                elif length == 127:
                    length = struct.unpack(">Q", self._read(8))[0]
                payload = self._read(length)  # server frames are unmasked
                opcode = first & 0x0F
                if opcode == 1:
                    self.text.append(json.loads(payload))
                elif opcode == 2:
                    self.binary.append(payload)
                elif opcode == 8:
                    return
        except (OSError, EOFError):
            return

    def close(self) -> None:
        self.sock.close()


# Workflows whose sampling should send latent previews (the ReViSE Sampler, best-of-N, ComfyUI's KSampler).
EDIT, FINETUNE = "ReViSE reasoning edit.json", "ReViSE USO fine-tune.json"
SAMPLING = {EDIT, "ReViSE edit and SelfCritic.json", "ReViSE best-of-N edit.json", OFFICIAL, NATIVE}
# ... and whose ReViSE Sampler or Best-of-N node says on the node, on this CPU-only server, what the run takes
CPU_TEXT = SAMPLING - {NATIVE}
NATIVE_NAMES = {"ReViSEModelSetLoader": {"model_set": "encoders"}, "KSampler": {"steps": 3}}


def _run(server: dict, api: dict, extra_data: dict | None = None, on_message=None,
         expect: str = "success") -> tuple[dict, _Messages]:
    """Queue `api` (the server runs with --cache-none: every node runs), wait for it, return its history
    entry and the websocket messages sent meanwhile. `on_message(messages)` is called while waiting;
    `expect` is the status the run must end with."""
    client_id = uuid.uuid4().hex
    messages = _Messages(server["port"], client_id)
    messages.start()
    try:
        payload = {"prompt": api, "client_id": client_id, "extra_data": extra_data or {}}
        prompt_id = _post(f"{server['url']}/prompt", payload)["prompt_id"]
        for _ in range(600):
            history = _get(f"{server['url']}/history/{prompt_id}")
            if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
                status = history[prompt_id]["status"]
                if status["status_str"] == expect:
                    return history[prompt_id], messages
                pytest.fail(json.dumps(status["messages"], indent=1)[-4000:])
            if on_message is not None:
                on_message(messages)
            time.sleep(0.5)
        pytest.fail("workflow did not finish")
    finally:
        time.sleep(0.5)
        messages.close()


def _node_texts(messages: _Messages, node_id: str) -> list[str]:
    """The texts sent to a node (PromptServer.send_progress_text: binary event 3, then the node id's length,
    the node id and the text), as the frontend receives them."""
    texts = []
    for frame in messages.binary:
        if struct.unpack(">I", frame[:4])[0] == 3:
            length = struct.unpack(">I", frame[4:8])[0]
            if frame[8:8 + length].decode() == node_id:
                texts.append(frame[8 + length:].decode())
    return texts


def _node_id(api: dict, class_type: str) -> str:
    return next(node_id for node_id, node in api.items() if node["class_type"] == class_type)


def _previews(messages: _Messages) -> list[tuple[int, int]]:
    """Sizes of the preview images sent (ComfyUI's binary frames: a 4-byte event type, then a JPEG)."""
    from PIL import Image

    sizes = []
    for frame in messages.binary:
        start = frame.find(b"\xff\xd8", 0, 64)
        if start >= 0:
            with Image.open(io.BytesIO(frame[start:])) as image:
                sizes.append(image.size)
    return sizes


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_runs_in_comfyui(server, path):
    api = tiny_api(path, server["manifest"], names=NATIVE_NAMES if path.name == NATIVE else None)
    entry, messages = _run(server, api)
    assert [m for m in messages.text if m.get("type") in ("progress", "progress_state")], "no progress events"
    if path.name in SAMPLING:
        assert _previews(messages), f"no latent previews among {len(messages.binary)} binary messages"
    if path.name == NATIVE:
        assert any("images" in out or "video" in out or "animated" in out for out in entry["outputs"].values())
    if path.name in CPU_TEXT:  # the server runs with --cpu
        sampler = _node_id(api, "ReViSEBestOfEdit" if "best-of-N" in path.name else "ReViSESampler")
        texts = _node_texts(messages, sampler)
        assert texts and texts[0].startswith("Running on the CPU") and "measured on this machine" in texts[-1]
    if path.name == FINETUNE:
        assert _node_texts(messages, _node_id(api, "ReViSEUSOTrainer"))[-1].startswith("Finished: step 2 of 2")


def test_comfyuis_context_windows_run_the_native_path_with_our_per_window_context(server):
    """The native workflow with ComfyUI's WAN Context Windows (Manual) and ReViSE Context Windows (native) between
    ModelSamplingSD3 and KSampler: windows of 2 latent frames (5 video frames) with 1 shared, over the clip's 3."""
    api = tiny_api(ROOT / "workflows" / NATIVE, server["manifest"], names=NATIVE_NAMES)
    sampler = _node_id(api, "KSampler")
    shift = _node_id(api, "ModelSamplingSD3")
    connector = _node_id(api, "ReViSEConnector")
    api["900"] = {"class_type": "WanContextWindowsManual", "inputs": {
        "model": [shift, 0], "context_length": 5, "context_overlap": 4, "context_schedule": "standard_static",
        "context_stride": 1, "closed_loop": False, "fuse_method": "pyramid", "freenoise": False}}
    api["901"] = {"class_type": "ReViSEContextWindows", "inputs": {"model": ["900", 0], "cond": [connector, 0]}}
    api[sampler]["inputs"]["model"] = ["901", 0]
    entry, _ = _run(server, api)
    assert any("images" in out or "video" in out or "animated" in out for out in entry["outputs"].values())
    log = server["log"].read_text()
    assert "Using context windows 2 with overlap 1" in log, log[-3000:]
    assert "ReViSE context rebuilt for the window of latent frames [1, 2]" in log, log[-3000:]


def test_cancel_in_the_trainer_saves_and_says_so_on_the_node(server):
    """Cancel (POST /interrupt, what the frontend's button sends) during training: the run ends interrupted,
    the last finished step is on disk, and the trainer node shows which one and how to continue."""
    api = tiny_api(ROOT / "workflows" / FINETUNE, server["manifest"])
    trainer = _node_id(api, "ReViSEUSOTrainer")
    api[trainer]["inputs"].update(steps=1000, output_name="cancelled_run")
    progressed = [0]

    def cancel_after_two_steps(messages: _Messages) -> None:
        steps = [m["data"]["value"] for m in messages.text if m.get("type") == "progress" and m["data"]["node"] == trainer]
        if steps and steps[-1] >= 2 and not progressed[0]:
            progressed[0] = steps[-1]
            request = urllib.request.Request(f"{server['url']}/interrupt", data=b"{}", method="POST",
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=30).close()  # answers 200 with an empty body

    _, messages = _run(server, api, on_message=cancel_after_two_steps, expect="error")
    text = _node_texts(messages, trainer)[-1]
    assert text.startswith("Cancelled after step ") and "is saved in" in text and "turn 'resume' on" in text, text
    saved = int(text.split("Cancelled after step ")[1].split(" ")[0])
    assert progressed[0] <= saved < 1000
    run = server["output"] / "revise_training" / "cancelled_run"
    assert any(p.name == f"step_{saved:06d}" for p in run.rglob("step_*")), sorted(run.rglob("step_*"))


def test_previews_switch_to_taehv_when_lighttaew2_1_is_present(server):
    """With the preview method 'taesd' and models/vae_approx/lighttaew2_1*, ComfyUI's previewer for Wan2.1 is
    TAEHV (ComfyUI builds it as a VAE, which it logs; the ReViSE edit workflow builds no other ComfyUI VAE);
    with latent2rgb no VAE is built. Both for the ReViSE Sampler, through ComfyUI's own previewer."""
    api = tiny_api(ROOT / "workflows" / EDIT, server["manifest"])

    def vaes_built() -> int:
        return server["log"].read_text().count("VAE load device")

    before = vaes_built()
    _, latent2rgb = _run(server, api, {"preview_method": "latent2rgb"})
    assert _previews(latent2rgb) and vaes_built() == before
    _, taehv = _run(server, api, {"preview_method": "taesd"})
    assert _previews(taehv) and vaes_built() > before, "no TAEHV previewer was built"
    assert "could not find models/vae_approx" not in server["log"].read_text()


def test_native_wan_call_and_sampling_equal_ours(native_kit, tmp_path):
    """One call of ComfyUI's Wan (the converted file through its own loader, latent format and flow
    parameterisation) on our conditioning equals our DiT call (fp32: |diff| <= 1e-4 of the output's scale);
    KSampler euler + normal equals the ReViSE Sampler's euler (same noise, cfg = guidance + 1 against
    official guidance). ComfyUI's uni_pc / uni_pc_bh2 are other UniPC variants: reported, not asserted."""
    from safetensors.torch import load_file, save_file

    from revise_core.dit import load_dit
    from revise_core.editor import EditSettings, ReviseEditor
    from revise_core.model_sets import EditModels
    from revise_core.sampler import SamplerConfig, initial_noise, sample
    from revise_core.video import synthetic_clip

    encoders = EditModels.load(native_kit["model_set"], with_dit=False)
    dit = load_dit(native_kit["dit_file"])
    encoders.dit = dit
    with torch.no_grad():
        condition = ReviseEditor(encoders).condition(synthetic_clip(num_frames=9, height=64, width=64).frames,
                                                     "make the sky red", EditSettings())
    positive, negative, _ = _classes()["ReViSEWanConditioning"]().convert(condition)
    shape = tuple(condition.source_latents.shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    sigma, steps, guidance, shift = 0.7, 4, 3.0, 5.0
    noise = initial_noise(shape, 7)
    inputs = tmp_path / "inputs.safetensors"
    save_file({"x": x, "sigma": torch.tensor([sigma]), "cond": positive[0][0], "uncond": negative[0][0],
               "noise": noise, "steps": torch.tensor([steps]), "cfg": torch.tensor([guidance + 1.0])}, str(inputs))
    out = tmp_path / "outputs.safetensors"
    run = subprocess.run([os.environ.get("COMFYUI_PYTHON", sys.executable), str(ROOT / "tests" / "comfy_native_check.py"),
                          COMFYUI, str(native_kit["dit_file"]), str(inputs), str(out), str(shift)],
                         capture_output=True, text=True, env=_server_env(), cwd=COMFYUI)
    _check(run)
    comfy = load_file(str(out))
    with torch.no_grad():
        velocity = dit(hidden_states=x, timestep=torch.tensor([sigma * 1000]), encoder_hidden_states=condition.cond,
                       return_dict=False)[0]
        ours = x - sigma * velocity  # ComfyUI's apply_model returns the denoised estimate in its model space
        scale = ours.abs().max()
        assert (comfy["denoised"] - ours).abs().max() <= 1e-4 * scale
        config = SamplerConfig(steps=steps, guidance_scale=guidance, shift=shift, scheduler="euler",
                               guidance_mode="official")
        euler = condition.denormalize(sample(dit, condition.cond, condition.uncond, noise=noise, config=config))
        assert (comfy["sample_euler_normal"] - euler).abs().max() <= 1e-4 * euler.abs().max()
        unipc = condition.denormalize(sample(dit, condition.cond, condition.uncond, noise=noise,
                                             config=SamplerConfig(steps=steps, guidance_scale=guidance, shift=shift,
                                                                  guidance_mode="official", sigma_schedule="official")))
    print(f"one Wan call: max |diff| {(comfy['denoised'] - ours).abs().max():.3g} of {scale:.3g}; "
          f"euler + normal: {(comfy['sample_euler_normal'] - euler).abs().max():.3g} of {euler.abs().max():.3g}")
    for name in ("sample_uni_pc_bh2_simple", "sample_uni_pc_simple", "sample_euler_simple"):
        print(f"{name} vs ReViSE Sampler (unipc, official sigmas): max |diff| "
              f"{(comfy[name] - unipc).abs().max():.3g} of {unipc.abs().max():.3g}")

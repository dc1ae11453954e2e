"""ComfyUI manages ReViSE's models: patchers, one load request per node, no unload_all_models.

Two layers:
- in the default suite, a fake `comfy` (model_management, model_patcher, utils, latent_formats),
  `folder_paths` and `latent_preview` injected into sys.modules records what the nodes ask ComfyUI for;
- with COMFYUI_PATH pointing at a ComfyUI checkout, tests/comfy_memory_check.py runs the nodes against
  ComfyUI's real memory manager on the CPU with a pretended GPU of chosen free memory, in a subprocess
  (COMFYUI_PYTHON: its interpreter, default this one; COMFYUI_PYTHONPATH: extra import path for it).
"""

from __future__ import annotations

import copy
import importlib.machinery
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import ROOT, ROOT_PACKAGE

bridge = ROOT_PACKAGE.nodes.comfy_bridge
common = ROOT_PACKAGE.nodes.common
COMFYUI = os.environ.get("COMFYUI_PATH")
TINY = {"dit": "wan_tiny_comfyui.safetensors", "vae": "wan_2.1_vae_tiny.safetensors", "t5": "umt5_tiny.safetensors",
        "vlm": "tiny-qwen2_5-vl", "connector": "revise_connector_tiny.safetensors"}
# The fake ComfyUI's devices per kind: distinct, so the tests see which function each model's came from.
DIT_DEVICE, VAE_DEVICE, TEXT_DEVICE, CPU = (torch.device("cpu", 1), torch.device("cpu", 2), torch.device("cpu", 3),
                                            torch.device("cpu"))
HOLDERS = {"dit": "ReViSEDiT", "vae": "ReViSEVAE", "t5": "ReViSET5", "vlm": "ReViSEVLM", "connector": "ReViSEConnector"}


def test_nothing_in_the_nodes_unloads_every_model():
    for path in sorted((ROOT / "nodes").glob("*.py")):
        text = path.read_text()
        assert "unload_all_models" not in text, path.name
        assert "free_memory_for_loading" not in text, path.name


# --- a fake ComfyUI ----------------------------------------------------------------------------------


class FakePatcher:
    """comfy.model_patcher.ModelPatcher's surface that the bridge uses."""

    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size
        self.loaded = 0

    def model_size(self):
        return self.size

    def loaded_size(self):
        return self.loaded


class FakeCorePatcher(FakePatcher):
    """What v0.12+ names comfy.model_patcher.CoreModelPatcher."""


class Loaded:
    """comfy.model_management.LoadedModel: equal when it holds the same patcher."""

    def __init__(self, patcher):
        self.model, self.device = patcher, patcher.load_device

    def __eq__(self, other):
        return self.model is other.model


class FakeComfy:
    def __init__(self, model_dirs: dict, output: Path):
        self.modules: dict[str, types.ModuleType] = {}
        self.calls: list[dict] = []
        self.freed: list[tuple] = []
        self.novram = False
        mm = self.module("comfy.model_management")
        mm.current_loaded_models = []
        mm.get_torch_device = lambda: DIT_DEVICE
        mm.unet_offload_device = lambda: CPU
        mm.vae_device = lambda: VAE_DEVICE
        mm.vae_offload_device = lambda: CPU
        mm.text_encoder_device = lambda: TEXT_DEVICE
        mm.text_encoder_offload_device = lambda: CPU
        mm.load_models_gpu = self.load_models_gpu
        mm.free_memory = self.free_memory
        mm.soft_empty_cache = lambda force=False: None
        mm.throw_exception_if_processing_interrupted = lambda: None
        mm.processing_interrupted = lambda: False
        mm.InterruptProcessingException = type("InterruptProcessingException", (Exception,), {})

        def unload_all_models():
            raise AssertionError("unload_all_models() called")

        mm.unload_all_models = unload_all_models
        self.mm = mm
        mp = self.module("comfy.model_patcher")
        mp.ModelPatcher, mp.CoreModelPatcher = FakePatcher, FakeCorePatcher
        self.mp = mp
        utils = self.module("comfy.utils")
        utils.ProgressBar = lambda total: types.SimpleNamespace(update_absolute=lambda *args: None)
        formats = self.module("comfy.latent_formats")
        formats.Wan21 = object
        self.module("latent_preview").get_previewer = lambda device, latent_format: None
        comfy = self.module("comfy")
        comfy.__path__ = []
        comfy.model_management, comfy.model_patcher, comfy.utils, comfy.latent_formats = mm, mp, utils, formats
        folders = self.module("folder_paths")
        folders.folder_names_and_paths = {name: (list(map(str, paths)), set()) for name, paths in model_dirs.items()}
        folders.models_dir = str(output.parent / "models")
        folders.add_model_folder_path = lambda name, path, is_default=False: None
        folders.get_folder_paths = lambda name: folders.folder_names_and_paths[name][0]
        folders.get_output_directory = lambda: str(output)

    def module(self, name: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib's find_spec reads it
        self.modules[name] = module
        return module

    def load_models_gpu(self, models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        self.calls.append({"models": sorted(type(p.model).__name__ for p in models), "patchers": list(models),
                           "memory_required": memory_required, "force_full_load": force_full_load,
                           "inference_mode": torch.is_inference_mode_enabled()})
        for patcher in models:
            if Loaded(patcher) not in self.mm.current_loaded_models:
                self.mm.current_loaded_models.insert(0, Loaded(patcher))
            patcher.loaded = 0 if self.novram else patcher.model_size()

    def free_memory(self, memory_required, device, keep_loaded=()):
        self.freed.append((memory_required, device, [loaded.model for loaded in keep_loaded]))
        if memory_required < 1e30:
            return []
        out = [lm for lm in self.mm.current_loaded_models if lm.device == device and lm not in keep_loaded]
        for loaded in out:
            loaded.model.loaded = 0
            self.mm.current_loaded_models.remove(loaded)
        return out

    def loaded(self, patcher) -> bool:
        return any(loaded.model is patcher for loaded in self.mm.current_loaded_models)


@pytest.fixture
def fake_comfy(tiny_model_dirs, tmp_path, monkeypatch):
    comfy = FakeComfy(tiny_model_dirs, tmp_path / "output")
    for name, module in comfy.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    assert bridge.in_comfyui()
    return comfy


def run(node: str, *args):
    """A node call as ComfyUI's executor makes it (under inference mode)."""
    cls = ROOT_PACKAGE.NODE_CLASS_MAPPINGS[node]
    with torch.inference_mode():
        return getattr(cls(), cls.FUNCTION)(*args)


def load_all(device: str = "auto") -> dict:
    return {
        "dit": run("ReViSEDiTLoader", TINY["dit"], "auto", "fp32", device)[0],
        "vae": run("ReViSEVAELoader", TINY["vae"], "fp32", device)[0],
        "t5": run("ReViSET5Loader", TINY["t5"], "tokenizer", "fp32", device)[0],
        "vlm": run("ReViSEVLMLoader", TINY["vlm"], "fp32", device)[0],
        "connector": run("ReViSEConnectorLoader", TINY["connector"], "none", "auto", "fp32", device)[0],
    }


def patcher(model):
    return bridge.existing_patcher(getattr(model, "model", model))


def edit_calls(comfy: FakeComfy, models: dict) -> dict:
    """The edit chain node by node: each node's load requests."""
    calls, images = {}, torch.rand(9, 64, 64, 3, generator=torch.Generator().manual_seed(0))

    def step(name, node, *args):
        start = len(comfy.calls)
        result = run(node, *args)
        calls[name] = comfy.calls[start:]
        return result

    latent, frames = step("encode", "ReViSEVAEEncode", models["vae"], images, 9, 64, 64, "crop", "trim")
    vlm_cond, _ = step("vlm", "ReViSEVLMEncode", models["vlm"], frames, "make it red", "none", 2, 8)
    (cond,) = step("connector", "ReViSEConnector", models["connector"], models["t5"], models["vae"], vlm_cond, latent,
                   512)
    (sampled,) = step("sampler", "ReViSESampler", models["dit"], cond, 1, 3.0, 5.0, "euler", 0)
    step("decode", "ReViSEVAEDecode", models["vae"], sampled, False)
    calls["shapes"] = {"pixels": (1, 3, 9, 64, 64), "latent": tuple(cond.source_latents.shape)}
    return calls


# --- the default suite: what the nodes ask of ComfyUI -------------------------------------------------


def test_each_loaded_model_gets_one_core_patcher_on_its_kinds_devices(fake_comfy):
    models = load_all()
    devices = {"dit": DIT_DEVICE, "connector": DIT_DEVICE, "vae": VAE_DEVICE, "t5": TEXT_DEVICE, "vlm": TEXT_DEVICE}
    for kind, model in models.items():
        p, module = patcher(model), getattr(model, "model", model)
        assert type(p) is FakeCorePatcher, kind  # CoreModelPatcher where ComfyUI has one
        assert type(p.model).__name__ == HOLDERS[kind] and p.model.inner is module
        assert (p.load_device, p.offload_device) == (devices[kind], CPU), kind
        assert module.revise_compute_device == devices[kind]
        assert p.model_size() == sum(t.nbytes for t in (*module.parameters(), *module.buffers()))
    assert fake_comfy.calls == [] and fake_comfy.mm.current_loaded_models == []  # loaded by the nodes, when used
    text = models["t5"].model  # tied embedding counted once
    assert patcher(models["t5"]).model_size() < sum(t.nbytes for t in text.state_dict().values())


def test_the_device_widget_wins_and_older_comfyui_gets_a_plain_patcher(fake_comfy, monkeypatch):
    monkeypatch.delattr(fake_comfy.mp, "CoreModelPatcher")
    dit = run("ReViSEDiTLoader", TINY["dit"], "auto", "fp32", "cpu")[0]
    vae = run("ReViSEVAELoader", TINY["vae"], "fp32", "cpu")[0]
    for model in (dit, vae):
        assert type(patcher(model)) is FakePatcher
        assert (patcher(model).load_device, patcher(model).offload_device) == (CPU, CPU)


def test_model_set_loader_registers_all_five(fake_comfy):
    outputs = run("ReViSEModelSetLoader", "revise_ckpt", "fp32", "auto", True)
    assert [type(patcher(model).model).__name__ for model in outputs] == list(HOLDERS.values())
    assert [patcher(model).load_device for model in outputs] == [DIT_DEVICE, VAE_DEVICE, TEXT_DEVICE, TEXT_DEVICE,
                                                                  DIT_DEVICE]


def test_one_load_request_per_node_with_every_model_it_uses(fake_comfy):
    models = load_all()
    calls = edit_calls(fake_comfy, models)
    assert {name: [c["models"] for c in calls[name]] for name in ("encode", "vlm", "connector", "sampler", "decode")} \
        == {"encode": [["ReViSEVAE"]], "vlm": [["ReViSEVLM"]], "connector": [["ReViSEConnector", "ReViSET5"]],
            "sampler": [["ReViSEDiT"]], "decode": [["ReViSEVAE"]]}
    assert all(c["force_full_load"] and not c["inference_mode"] for c in fake_comfy.calls)
    # ComfyUI's own estimates for the Wan 2.1 VAE and DiT (fp32); 0 (ComfyUI's minimum) for the encoders
    t, h, w = calls["shapes"]["latent"][2:]
    assert calls["encode"][0]["memory_required"] == 1400 * 9 * 64 * 64 * 4
    assert calls["decode"][0]["memory_required"] == 2800 * min(8, 4 * (t - 1) + 1) * h * w * 64 * 4
    dim = models["dit"].config.num_attention_heads * models["dit"].config.attention_head_dim
    assert calls["sampler"][0]["memory_required"] == int(t * h * w * 4 * 0.01 * 2**20 * dim / 2222)
    assert calls["vlm"][0]["memory_required"] == calls["connector"][0]["memory_required"] == 0
    # afterwards nothing: every model stays registered and loaded
    assert all(fake_comfy.loaded(patcher(model)) and patcher(model).loaded_size() > 0 for model in models.values())
    assert fake_comfy.freed == []


def test_best_of_n_requests_its_five_models_in_one_call(fake_comfy):
    models = load_all()
    frames, _, _ = run("ReViSEBestOfEdit", models["dit"], models["vae"], models["t5"], models["vlm"],
                       models["connector"], torch.rand(9, 64, 64, 3), "make it red", 1, 1, 3.0, 5.0, 0, 9, 64, 64)
    assert frames.shape[0] == 9
    assert [c["models"] for c in fake_comfy.calls] == [sorted(HOLDERS.values())]
    call = fake_comfy.calls[0]
    assert call["memory_required"] == common.clip_memory(models["dit"], models["vae"], 9, 64, 64) > 0
    assert [p for p in call["patchers"]] == [patcher(models[k]) for k in ("dit", "vae", "t5", "vlm", "connector")]


def test_novram_stops_the_node_with_a_clear_error(fake_comfy):
    dit = run("ReViSEDiTLoader", TINY["dit"], "auto", "fp32", "auto")[0]
    fake_comfy.novram = True  # ComfyUI's --novram: a load budget of 0.1 byte, nothing of ours moves
    with pytest.raises(RuntimeError, match=r"did not load the DiT \(WanTransformer3DModel.*--novram.*device 'cpu'"):
        with common.using(dit):
            pass
    p = patcher(dit)
    p.is_dynamic = lambda: True  # dynamic VRAM streams by design: not checked
    with common.using(dit):
        pass


def test_a_copy_gets_its_own_patcher_and_a_new_patcher_replaces_the_old_one(fake_comfy):
    dit = run("ReViSEDiTLoader", TINY["dit"], "auto", "fp32", "auto")[0]
    vae = run("ReViSEVAELoader", TINY["vae"], "fp32", "auto")[0]
    with common.using(dit, vae):
        pass
    original = patcher(dit)
    twin = copy.deepcopy(dit)
    assert patcher(twin) is None and patcher(dit) is original
    assert bridge.patcher_of(twin) is not original and bridge.patcher_of(twin).model.inner is twin
    assert type(bridge.patcher_of(twin).model).__name__ == "ReViSEDiT"
    # the stream-placement hook: a new size replaces the patcher; ComfyUI unloads the old one, and only it
    streamed = bridge.make_patcher(dit, kind="dit", size=1234)
    assert streamed.model_size() == 1234 and patcher(dit) is streamed
    assert not fake_comfy.loaded(original) and fake_comfy.loaded(patcher(vae))
    assert fake_comfy.freed[-1][:2] == (1e30, DIT_DEVICE) and patcher(vae) in fake_comfy.freed[-1][2]


def test_trainer_models_are_handed_over_and_its_outputs_registered(fake_comfy, tmp_path):
    from trainer.demo import write_demo_data

    models = load_all(device="cpu")
    with common.using(*models.values()):
        pass
    ours = {kind: patcher(model) for kind, model in models.items()}
    manifest = write_demo_data(tmp_path / "data", count=2)
    fake_comfy.calls.clear()
    dit_out, connector_out, report, _ = run(
        "ReViSEUSOTrainer", models["dit"], models["vae"], models["t5"], models["vlm"], models["connector"],
        str(manifest), "memory", "sft", 1, 0.0, 0.5, 1e-4, "lora", 4, 1, 5, 32, 32, 0, False)
    assert '"steps": 1' in report
    assert fake_comfy.calls == []  # the trainer places them: no load request
    assert not any(fake_comfy.loaded(p) for p in ours.values())  # ComfyUI unloaded exactly those for the run
    for model, kind in ((dit_out, "dit"), (connector_out, "connector")):
        assert patcher(model) is not None and patcher(model) is not ours[kind] and patcher(model).model.inner is model


def test_the_trainer_run_frees_room_on_its_device(fake_comfy, monkeypatch):
    modules = [torch.nn.Linear(4, 4) for _ in range(3)]
    for module in modules:
        module.revise_compute_device = DIT_DEVICE
        bridge.register(module, "dit")
    with common.using(modules[2]):
        pass
    user = FakePatcher(torch.nn.Linear(2, 2), DIT_DEVICE, CPU, size=10)
    fake_comfy.load_models_gpu([user])
    with bridge.placed_by_caller(modules[:1], unloaded=modules[1:], device=DIT_DEVICE, memory_required=4096):
        pass
    assert fake_comfy.freed[-1] == (4096, DIT_DEVICE, [])
    assert fake_comfy.freed[0][:2] == (1e30, DIT_DEVICE) and fake_comfy.freed[0][2] == [user]
    assert fake_comfy.loaded(user) and not fake_comfy.loaded(patcher(modules[2]))


# --- outside ComfyUI: as before ---------------------------------------------------------------------------


class Recording(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.moves: list[str] = []

    def to(self, device):
        self.moves.append(str(device))
        return self


def test_outside_comfyui_models_visit_their_device_for_the_block_only():
    assert not bridge.in_comfyui()
    first, second = Recording(), Recording()
    first.revise_compute_device = second.revise_compute_device = torch.device("meta")
    with common.using(first, second, None, memory_required=123):
        assert first.moves == second.moves == ["meta"]
    assert first.moves == second.moves == ["meta", "cpu"]
    assert bridge.existing_patcher(first) is None
    # a loader's model rests in host memory; the compute device is the kind's (no ComfyUI: CUDA if any)
    module = Recording()
    bridge.place(module, "vae", bridge.compute_device("auto", "vae"))
    assert module.moves == ["cpu"] and bridge.existing_patcher(module) is None
    assert module.revise_compute_device.type == ("cuda" if torch.cuda.is_available() else "cpu")


# --- a real ComfyUI ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not COMFYUI or not (Path(COMFYUI) / "main.py").is_file(),
                    reason="set COMFYUI_PATH to a ComfyUI checkout to run the nodes against its memory manager")
@pytest.mark.parametrize("scenario", ["registers", "evicts", "user_model", "novram", "training"])
def test_real_comfyui_memory_manager(scenario, tiny_dir):
    env = dict(os.environ)
    extra = os.environ.get("COMFYUI_PYTHONPATH")
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, env.get("PYTHONPATH")]))
    run_ = subprocess.run([os.environ.get("COMFYUI_PYTHON", sys.executable), str(ROOT / "tests" / "comfy_memory_check.py"),
                           COMFYUI, str(tiny_dir), scenario], capture_output=True, text=True, env=env, cwd=COMFYUI,
                          timeout=900)
    output = run_.stdout + run_.stderr
    assert run_.returncode == 0 and f"PASSED {scenario}" in run_.stdout, \
        "\n".join(line for line in output.splitlines() if not re.match(r"DEBUG:root:(lowvram|freed)", line))[-6000:]

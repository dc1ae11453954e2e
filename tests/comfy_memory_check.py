"""Runs inside a ComfyUI checkout's Python (tests/test_comfy_memory.py starts it; not a test module itself).

    python comfy_memory_check.py COMFYUI_PATH TINY_DIR SCENARIO

Imports ComfyUI's real `comfy.model_management` / `comfy.model_patcher` in CPU mode (`args.cpu`, ComfyUI's
own unit-test idiom), registers the tiny model folders with `folder_paths`, imports ReViSE as ComfyUI
imports a custom-node folder and runs the nodes as ComfyUI's executor does (under inference mode). A GPU is
pretended: the load-device functions answer `DEV` (cpu:1, which ComfyUI's `load_models_gpu` treats as a
device of its own, since it differs from cpu), and `get_free_memory(DEV)` is `CAPACITY[0]` minus what every
patcher ever loaded holds on DEV (its `loaded_size()`), so a small capacity makes ComfyUI evict. Prints
`PASSED <scenario>`.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import weakref
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DEV = torch.device("cpu", 1)
CAPACITY = [float(2**50)]  # bytes of the pretended device; scenarios lower it
RECORDS: list[logging.LogRecord] = []
PATCHERS: weakref.WeakSet = weakref.WeakSet()  # every patcher load_models_gpu saw: what holds DEV's memory
CALLS: list[dict] = []  # every load_models_gpu call: the holders' class names, memory_required, force_full_load
TINY = {"dit": "wan_tiny_comfyui.safetensors", "vae": "wan_2.1_vae_tiny.safetensors", "t5": "umt5_tiny.safetensors",
        "vlm": "tiny-qwen2_5-vl", "connector": "revise_connector_tiny.safetensors"}


class _Records(logging.Handler):
    def emit(self, record):
        RECORDS.append(record)


def setup(comfyui: str, tiny_dir: str):
    sys.path.insert(0, comfyui)
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management as mm
    import folder_paths

    logging.getLogger().setLevel(logging.DEBUG)
    logging.getLogger().addHandler(_Records())
    tiny = Path(tiny_dir)
    for name, subdirs in {"diffusion_models": ["dit", "connector"], "vae": ["vae"], "text_encoders": ["t5"],
                          "vlm": ["vlm"], "revise": ["."]}.items():
        for sub in subdirs:
            folder_paths.add_model_folder_path(name, str(tiny / sub))

    for name in ("get_torch_device", "vae_device", "text_encoder_device"):
        setattr(mm, name, lambda: DEV)
    real_free = mm.get_free_memory

    def get_free_memory(dev=None, torch_free_too=False):
        if dev is None or torch.device(dev) != DEV:
            return real_free(dev, torch_free_too)
        # Not the registry: load_models_gpu takes a re-requested model out of it while it frees memory
        used = sum(p.loaded_size() for p in PATCHERS if p.load_device == DEV)
        free = CAPACITY[0] - used
        return (free, free) if torch_free_too else free

    mm.get_free_memory = get_free_memory
    real_load = mm.load_models_gpu

    def load_models_gpu(models, memory_required=0, **kwargs):
        PATCHERS.update(models)
        CALLS.append({"models": sorted(type(p.model).__name__ for p in models), "memory_required": memory_required,
                      "force_full_load": kwargs.get("force_full_load", False)})
        return real_load(models, memory_required=memory_required, **kwargs)

    mm.load_models_gpu = load_models_gpu

    def never(*args, **kwargs):
        raise AssertionError("unload_all_models() was called")

    mm.unload_all_models = never
    spec = importlib.util.spec_from_file_location("ComfyUI_ReViSE", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["ComfyUI_ReViSE"] = package
    spec.loader.exec_module(package)
    assert package.nodes.comfy_bridge.in_comfyui()
    return mm, package


def run(node: str, mappings, *args):
    """One node call as ComfyUI's executor makes it (under inference mode)."""
    cls = mappings[node]
    with torch.inference_mode():
        return getattr(cls(), cls.FUNCTION)(*args)


def load_all(m, device: str = "auto") -> dict:
    return {
        "dit": run("ReViSEDiTLoader", m, TINY["dit"], "auto", "fp32", device)[0],
        "vae": run("ReViSEVAELoader", m, TINY["vae"], "fp32", device)[0],
        "t5": run("ReViSET5Loader", m, TINY["t5"], "tokenizer", "fp32", device)[0],
        "vlm": run("ReViSEVLMLoader", m, TINY["vlm"], "fp32", device)[0],
        "connector": run("ReViSEConnectorLoader", m, TINY["connector"], "none", "auto", "fp32", device)[0],
    }


def edit(m, models: dict) -> dict:
    """The edit chain node by node; each node's load_models_gpu calls are recorded."""
    out = {}
    images = torch.rand(9, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    start = len(CALLS)
    out["latent"], frames = run("ReViSEVAEEncode", m, models["vae"], images, 9, 64, 64, "crop", "trim")
    out["calls_encode"] = CALLS[start:]
    start = len(CALLS)
    out["vlm_cond"], _ = run("ReViSEVLMEncode", m, models["vlm"], frames, "make it red", "none", 2, 8)
    out["calls_vlm"] = CALLS[start:]
    start = len(CALLS)
    (out["cond"],) = run("ReViSEConnector", m, models["connector"], models["t5"], models["vae"], out["vlm_cond"],
                         out["latent"], 512)
    out["calls_connector"] = CALLS[start:]
    start = len(CALLS)
    (out["sampled"],) = run("ReViSESampler", m, models["dit"], out["cond"], 1, 3.0, 5.0, "euler", 0)
    out["calls_sampler"] = CALLS[start:]
    start = len(CALLS)
    (out["pixels"],) = run("ReViSEVAEDecode", m, models["vae"], out["sampled"], False)
    out["calls_decode"] = CALLS[start:]
    return out


def patcher(module):
    from ComfyUI_ReViSE.nodes import comfy_bridge

    return comfy_bridge.existing_patcher(getattr(module, "model", module))


def loaded(mm, p) -> bool:
    return any(lm.model is p for lm in mm.current_loaded_models)


def scenario_registers(mm, package):
    """Each loader's model gets one patcher on its kind's devices; one load_models_gpu call per node with
    every model it uses, force_full_load, its activation estimate; the device widget wins."""
    import comfy.model_patcher as mp

    m = package.NODE_CLASS_MAPPINGS
    kinds = {"dit": DEV, "vae": torch.device("cpu", 2), "t5": torch.device("cpu", 3), "vlm": torch.device("cpu", 3),
             "connector": DEV}
    mm.vae_device = lambda: kinds["vae"]
    mm.text_encoder_device = lambda: kinds["t5"]
    models = load_all(m)
    holders = {"dit": "ReViSEDiT", "vae": "ReViSEVAE", "t5": "ReViSET5", "vlm": "ReViSEVLM", "connector": "ReViSEConnector"}
    for kind, model in models.items():
        p = patcher(model)
        assert type(p) is getattr(mp, "CoreModelPatcher", mp.ModelPatcher), type(p)
        assert type(p.model).__name__ == holders[kind] and p.model.inner is getattr(model, "model", model)
        assert p.load_device == kinds[kind] and p.offload_device == torch.device("cpu"), (kind, p.load_device)
        assert not loaded(mm, p), f"{kind} loaded before a node used it"
    out = edit(m, models)
    assert [c["models"] for c in out["calls_encode"]] == [["ReViSEVAE"]], out["calls_encode"]
    assert [c["models"] for c in out["calls_vlm"]] == [["ReViSEVLM"]]
    assert [c["models"] for c in out["calls_connector"]] == [["ReViSEConnector", "ReViSET5"]], out["calls_connector"]
    assert [c["models"] for c in out["calls_sampler"]] == [["ReViSEDiT"]]
    assert [c["models"] for c in out["calls_decode"]] == [["ReViSEVAE"]]
    assert all(c["force_full_load"] for c in CALLS)
    assert out["calls_encode"][0]["memory_required"] == 1400 * 9 * 64 * 64 * 4  # ComfyUI's Wan VAE estimate, fp32
    assert out["calls_decode"][0]["memory_required"] == 2800 * 8 * 8 * 8 * 64 * 4
    for kind, model in models.items():
        p = patcher(model)
        assert loaded(mm, p) and p.loaded_size() == p.model_size() > 0, kind
    start = len(CALLS)
    best = run("ReViSEBestOfEdit", m, models["dit"], models["vae"], models["t5"], models["vlm"], models["connector"],
               torch.rand(9, 64, 64, 3), "make it red", 1, 1, 3.0, 5.0, 0, 9, 64, 64)
    assert best[0].shape[0] == 9
    assert [c["models"] for c in CALLS[start:]] == [sorted(holders.values())], CALLS[start:]
    cpu_dit = run("ReViSEDiTLoader", m, TINY["dit"], "auto", "fp32", "cpu")[0]
    assert patcher(cpu_dit).load_device == torch.device("cpu")
    assert cpu_dit.revise_compute_device == torch.device("cpu")


def scenario_evicts(mm, package):
    """Scarce memory: loading the VAE makes ComfyUI unload part of the DiT, loading the DiT back unloads
    the whole VAE, and a node that needs an evicted model gets it back whole."""
    from ComfyUI_ReViSE.nodes import common

    m = package.NODE_CLASS_MAPPINGS
    models = load_all(m)
    dit, vae = patcher(models["dit"]), patcher(models["vae"])
    first = edit(m, models)
    D, V = dit.model_size(), vae.model_size()
    assert loaded(mm, dit) and loaded(mm, vae)

    def extra(memory_required):
        return max(mm.minimum_inference_memory(), memory_required + mm.extra_reserved_memory())

    # 1. Only the DiT on the device, then the VAE asks for room: half the DiT must go.
    mm.free_memory(1e30, DEV)  # ComfyUI's own call: the device empty
    assert not mm.current_loaded_models
    run("ReViSESampler", m, models["dit"], first["cond"], 1, 3.0, 5.0, "euler", 0)
    assert dit.loaded_size() == D
    decode_memory = common.vae_decode_memory(models["vae"], first["sampled"]["samples"].shape)
    CAPACITY[0] = 1.1 * V + extra(decode_memory) + D / 2
    del RECORDS[:]
    (pixels,) = run("ReViSEVAEDecode", m, models["vae"], first["sampled"], False)
    messages = [r.getMessage() for r in RECORDS]
    assert "Unloading ReViSEDiT" in messages, messages
    assert any(message.startswith("Unloaded partially") for message in messages), messages
    assert loaded(mm, dit) and dit.model.model_lowvram and 0 < dit.loaded_size() < D, dit.loaded_size()
    assert vae.loaded_size() == V
    assert torch.equal(pixels, first["pixels"])
    # 2. The DiT back whole, with no room for the VAE beside it: ComfyUI unloads the whole VAE, which leaves
    #    its registry, and loads the rest of the DiT.
    sample_memory = common.dit_memory(models["dit"], first["cond"].source_latents.shape)
    CAPACITY[0] = 1.1 * (D - dit.loaded_size()) + extra(sample_memory) + dit.loaded_size() - 16
    del RECORDS[:]
    (sampled,) = run("ReViSESampler", m, models["dit"], first["cond"], 1, 3.0, 5.0, "euler", 0)
    messages = [r.getMessage() for r in RECORDS]
    assert "Unloading ReViSEVAE" in messages, messages
    assert not loaded(mm, vae) and vae.loaded_size() == 0
    assert loaded(mm, dit) and dit.loaded_size() == D and not dit.model.model_lowvram
    assert torch.equal(sampled["samples"], first["sampled"]["samples"])
    # 3. Plenty of memory again: the VAE comes back whole, nothing else moves.
    CAPACITY[0] = float(2**50)
    del RECORDS[:]
    (pixels,) = run("ReViSEVAEDecode", m, models["vae"], sampled, False)
    messages = [r.getMessage() for r in RECORDS]
    assert "Requested to load ReViSEVAE" in messages and not any(x.startswith("Unload") for x in messages), messages
    assert vae.loaded_size() == V and dit.loaded_size() == D
    assert torch.equal(pixels, first["pixels"])


def scenario_user_model(mm, package):
    """A user's own ModelPatcher stays loaded while ReViSE loads and runs all its models (the old
    unload_all_models() before every large load evicted it)."""
    import comfy.model_patcher as mp

    user = mp.ModelPatcher(torch.nn.Sequential(torch.nn.Linear(64, 64)), DEV, torch.device("cpu"))
    mm.load_models_gpu([user])
    assert user.loaded_size() == user.model_size() > 0
    m = package.NODE_CLASS_MAPPINGS
    models = load_all(m)
    edit(m, models)
    run("ReViSEModelSetLoader", m, "revise_ckpt", "fp32", "auto", True)
    assert loaded(mm, user) and user.loaded_size() == user.model_size(), "the user's model was unloaded"
    ours = [patcher(model) for model in models.values()]
    assert all(loaded(mm, p) for p in ours)
    assert mm.loaded_models()[-1] is user  # ComfyUI's order: most recently loaded first


def scenario_novram(mm, package):
    """--novram: ComfyUI keeps models that are not made of its ops off the device; the node says so."""
    m = package.NODE_CLASS_MAPPINGS
    models = load_all(m)
    out = edit(m, models)
    mm.free_memory(1e30, DEV)
    mm.vram_state = mm.VRAMState.NO_VRAM
    is_cpu = mm.is_device_cpu
    mm.is_device_cpu = lambda device: is_cpu(device) and torch.device(device) != DEV  # DEV is a GPU here
    try:
        run("ReViSESampler", m, models["dit"], out["cond"], 1, 3.0, 5.0, "euler", 0)
    except RuntimeError as error:
        message = str(error)
        assert "DiT" in message and "--novram" in message and "device 'cpu'" in message, message
        assert patcher(models["dit"]).loaded_size() == 0
    else:
        raise AssertionError("no error under --novram")
    # A model its loader puts on the CPU is not the device's: it runs.
    cpu_dit = run("ReViSEDiTLoader", m, TINY["dit"], "auto", "fp32", "cpu")[0]
    (sampled,) = run("ReViSESampler", m, cpu_dit, out["cond"], 1, 3.0, 5.0, "euler", 0)
    assert torch.equal(sampled["samples"], out["sampled"]["samples"])


def scenario_training(mm, package):
    """The trainer moves its models itself: ComfyUI unloads exactly those for the run and frees room; the
    trained models come back with patchers of their own; the next nodes reload what they need."""
    import os
    import tempfile

    from trainer.demo import write_demo_data

    m = package.NODE_CLASS_MAPPINGS
    models = load_all(m, device="cpu")  # the trainer computes on the DiT's device: a real one here
    out = edit(m, models)
    ours = {kind: patcher(model) for kind, model in models.items()}
    assert all(loaded(mm, p) for p in ours.values())
    work = Path(tempfile.mkdtemp())
    manifest = write_demo_data(work / "data", count=2)
    import folder_paths

    folder_paths.set_output_directory(str(work / "output"))
    os.environ["REVISE_OUTPUT_DIR"] = str(work / "output")
    freed = []
    free_memory = mm.free_memory
    mm.free_memory = lambda required, device, keep_loaded=[]: (freed.append((required, device, len(keep_loaded))),
                                                                free_memory(required, device, keep_loaded))[1]
    dit_out, connector_out, report, _ = run(
        "ReViSEUSOTrainer", m, models["dit"], models["vae"], models["t5"], models["vlm"], models["connector"],
        str(manifest), "memory", "sft", 1, 0.0, 0.5, 1e-4, "lora", 4, 1, 5, 32, 32, 0, False)
    assert '"steps": 1' in report, report
    assert not any(loaded(mm, p) for p in ours.values()), "a model the trainer moved stayed registered as loaded"
    assert freed and all(device == torch.device("cpu") for _, device, _ in freed), freed
    for model, kind in ((dit_out, "dit"), (connector_out, "connector")):
        p = patcher(model)
        assert p is not None and p is not ours[kind] and p.model.inner is model, kind
    (sampled,) = run("ReViSESampler", m, dit_out, out["cond"], 1, 3.0, 5.0, "euler", 0)
    run("ReViSEVAEDecode", m, models["vae"], sampled, False)
    assert loaded(mm, patcher(dit_out)) and loaded(mm, ours["vae"])


def main(comfyui: str, tiny_dir: str, scenario: str) -> None:
    mm, package = setup(comfyui, tiny_dir)
    globals()[f"scenario_{scenario}"](mm, package)
    print(f"PASSED {scenario}")


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Runs inside a ComfyUI checkout's Python (tests/test_real_comfyui.py starts it; not a test module itself).

    python comfy_native_check.py COMFYUI_PATH DIT_FILE INPUTS.safetensors OUTPUT.safetensors SHIFT

Loads DIT_FILE with ComfyUI's own `load_diffusion_model` (what UNETLoader does) in fp32, applies
`ModelSamplingSD3` (shift), then writes:
- `denoised`: one `apply_model` call on INPUTS' `x`, `sigma` and `cond` (ComfyUI's Wan21 latent format and
  flow parameterisation included);
- `sample_<sampler>_<scheduler>`: ComfyUI's sampling from INPUTS' `noise` with `cond` / `uncond` as positive
  / negative CONDITIONING, `steps` and `cfg` from INPUTS, on a zero latent (raw VAE space out).
"""

from __future__ import annotations

import sys

COMBOS = (("euler", "normal"), ("euler", "simple"), ("uni_pc_bh2", "simple"), ("uni_pc", "simple"), ("uni_pc_bh2", "normal"))


def main(comfyui: str, dit_file: str, inputs_path: str, output_path: str, shift: str) -> None:
    sys.path.insert(0, comfyui)
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management as mm
    import comfy.sample
    import comfy.sd
    import torch
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3
    from safetensors.torch import load_file, save_file

    inputs = load_file(inputs_path)
    patcher = comfy.sd.load_diffusion_model(dit_file, model_options={"dtype": torch.float32})
    patched = ModelSamplingSD3().patch(patcher, float(shift))[0]
    mm.load_models_gpu([patched])
    results = {}
    with torch.inference_mode():
        sigma = inputs["sigma"].reshape(1)
        results["denoised"] = patched.model.apply_model(inputs["x"], sigma, c_crossattn=inputs["cond"]).float()
        positive, negative = [[inputs["cond"], {}]], [[inputs["uncond"], {}]]
        steps, cfg = int(inputs["steps"].item()), float(inputs["cfg"].item())
        latent = torch.zeros_like(inputs["noise"])
        for sampler, scheduler in COMBOS:
            results[f"sample_{sampler}_{scheduler}"] = comfy.sample.sample(
                patched, inputs["noise"], steps, cfg, sampler, scheduler, positive, negative, latent,
                denoise=1.0, disable_pbar=True, seed=0).float()
    save_file({k: v.contiguous() for k, v in results.items()}, output_path)


if __name__ == "__main__":
    main(*sys.argv[1:])

"""ReViSE ComfyUI nodes: thin wrappers over `revise_core`, grouped by concern.

Importing this package imports torch and revise_core's light modules only; diffusers / transformers load
when a node first runs.
"""

from . import comfy_bridge, critic, edit, loaders, native, training

comfy_bridge.register_folders()

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in (loaders, edit, native, critic, training):
    NODE_CLASS_MAPPINGS.update(_module.NODES)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.DISPLAY_NAMES)

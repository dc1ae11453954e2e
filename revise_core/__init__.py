"""ReViSE core: pure PyTorch on diffusers + transformers; never imports ComfyUI.

Importing this package is cheap on purpose (ComfyUI start-up): submodules import diffusers and
transformers only inside the functions that need them.
"""

__version__ = "0.1.0"

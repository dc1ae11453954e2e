"""ReViSE for ComfyUI: reason-informed video editing with a Wan2.1 DiT, a VLM connector and a self-critic.

ComfyUI imports this file at start-up. It must stay cheap: the node modules import torch only, and
diffusers / transformers are imported lazily when a node first runs.
"""

import os
import sys

# ComfyUI imports this folder as a package but does not put it on sys.path, while `revise_core` and
# `trainer` use absolute imports (so `python -m trainer.uso` works from a clone). Appending (not
# prepending) keeps ComfyUI's own top-level modules (e.g. `nodes`) first.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
else:
    # Imported as a lone module, not as a package: pytest does this with the root `__init__.py` of a clone whose
    # folder name is not a valid package name (the README's `ComfyUI-ReViSE`, a name with spaces or a leading
    # digit). There is no package to import the nodes relative to; ComfyUI always imports a package (the tests
    # import the root the same way, tests/conftest.py).
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = None

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

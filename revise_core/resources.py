"""Where the shipped configs are: one answer for a clone, an editable install and an installed wheel.

The repository keeps them in `configs/` next to `revise_core/` (a clone in ComfyUI's custom_nodes, or
`pip install -e .`, which imports `revise_core/` from the clone). A wheel carries the same folder inside the
package, as `revise_core/configs/` (pyproject.toml maps `configs/` there), because site-packages has no
repository around it. Nothing here imports more than pathlib: variants, prompts and few-shot files are read
at import time by light modules.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# In order: inside the package (an installed wheel), then next to it (a clone, or an editable install of one).
# The package's own copy comes first: a site-packages folder may well hold another project's top-level
# `configs/`, while a clone never has `revise_core/configs/`.
CANDIDATES = (_PACKAGE / "configs", _PACKAGE.parent / "configs")


def _find() -> Path:
    for root in CANDIDATES:
        if (root / "models").is_dir():
            return root
    # Neither exists (a damaged install): the clone's place, so that readers' errors name a real location.
    return CANDIDATES[-1]


CONFIG_ROOT = _find()


def config_path(*parts: str) -> Path:
    """A file or folder under the shipped configs, e.g. `config_path("models", "umt5-xxl", "config.json")`."""
    return CONFIG_ROOT.joinpath(*parts)

"""ComfyUI start-up stays fast: importing the extension pulls in neither diffusers nor transformers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Import the repository root the way ComfyUI does (a package from its __init__.py, under a folder
# name), plus every core module, then report which heavy libraries ended up in sys.modules.
PROBE = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location(
    "ComfyUI_ReViSE", r"{ROOT / '__init__.py'}", submodule_search_locations=[r"{ROOT}"])
module = importlib.util.module_from_spec(spec)
sys.modules["ComfyUI_ReViSE"] = module
spec.loader.exec_module(module)
assert isinstance(module.NODE_CLASS_MAPPINGS, dict)
import revise_core, revise_core.checkpoints, revise_core.variants, revise_core.dit, revise_core.vae
import revise_core.text, revise_core.vlm, revise_core.connector, revise_core.wan_keys
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("diffusers", "transformers"))
print("HEAVY:" + ",".join(heavy[:5]))
"""


def test_package_root_and_core_modules_do_not_import_diffusers_or_transformers():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr
    line = [l for l in result.stdout.splitlines() if l.startswith("HEAVY:")][0]
    assert line == "HEAVY:", f"heavy imports at start-up: {line}"

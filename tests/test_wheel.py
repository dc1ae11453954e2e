"""A built wheel works on its own: it carries the packages and the shipped configs, and a documented demo runs
from it, outside the checkout.

The wheel is built from a copy of what pyproject.toml packs (`--no-build-isolation`: the installed setuptools, no
download; a copy, so that no build/ or egg-info folder lands in the checkout) and installed with `--no-deps` into a
venv that sees this environment's packages (torch, transformers, ...) but not the checkout: it runs from tmp_path
with PYTHONPATH unset, and the editable install of the checkout, if any, must not shadow the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _start(args: list, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH")}
    return subprocess.Popen([str(a) for a in args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(process: subprocess.Popen, timeout: int = 300) -> str:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, f"{process.args}\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return stdout


def _run(args: list, cwd: Path) -> str:
    return _finish(_start(args, cwd))


def _sources(tmp_path: Path) -> Path:
    """The files the build reads: the packages' top folders, the mapped folders, the readme and the licence."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    mapped = setuptools.get("package-dir", {})
    folders = {package.split(".")[0] for package in setuptools["packages"] if package not in mapped}
    folders |= {folder.split("/")[0] for folder in mapped.values()}
    files = ["pyproject.toml", PYPROJECT["project"]["readme"], *PYPROJECT["project"]["license-files"]]
    source = tmp_path / "source"
    for name in sorted(folders):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in files:
        shutil.copy2(ROOT / name, source / name)
    return source


def test_the_wheel_carries_the_configs_and_runs_a_demo_outside_the_checkout(tmp_path):
    source = _sources(tmp_path)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", tmp_path / "dist",
          source], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("comfyui_revise-*.whl")

    # Every module of the packed packages and every shipped config file is in the wheel; `nodes` never is.
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {name.split("/")[0] for name in names}
    modules = {p.relative_to(source).as_posix() for folder in ("revise_core", "trainer")
               for p in (source / folder).rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    configs = {"revise_core/" + p.relative_to(source).as_posix()
               for p in (source / "configs").rglob("*") if p.is_file()}
    assert configs and configs <= names, sorted(configs - names)
    assert "nodes" not in top and "configs" not in top, top
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)

    venv = tmp_path / "venv"
    # No pip of its own (faster): this environment's pip, seen through --system-site-packages, installs into it.
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], cwd=tmp_path)
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import json, sys, revise_core, trainer\n"
        "from revise_core import resources\n"
        "from revise_core.variants import KNOWN_VARIANTS\n"
        "from revise_core.data.rave import load_fewshot\n"
        "from revise_core.vlm.qwen3_vl import omnivideo2_prompts\n"
        "print(json.dumps({'prefix': sys.prefix, 'revise_core': revise_core.__file__, 'trainer': trainer.__file__,\n"
        "                  'configs': str(resources.CONFIG_ROOT),\n"
        "                  'variants': len([v.load_config() for v in KNOWN_VARIANTS]),\n"
        "                  'fewshot': len(load_fewshot()), 'prompts': len(omnivideo2_prompts())}))\n"
    )
    # The cheapest documented demo (README: `python -m revise_core.critic --demo --json`), from outside the checkout;
    # it runs while the probe does.
    demo = _start([python, "-m", "revise_core.critic", "--demo", "--json"], cwd=elsewhere)
    try:
        found = json.loads(_run([python, "-c", probe], cwd=elsewhere).strip().splitlines()[-1])
        site = Path(found["prefix"]).resolve()
        assert site == venv.resolve(), found
        for key in ("revise_core", "trainer", "configs"):  # the wheel's copies, not the checkout's
            assert Path(found[key]).resolve().is_relative_to(site), (key, found[key], site)
        assert Path(found["configs"]).name == "configs" and Path(found["configs"]).parent.name == "revise_core"
        assert found["variants"] > 0 and found["fewshot"] > 0 and found["prompts"] > 0, found

        report = json.loads(_finish(demo))
        assert 0.0 < report["p_yes"] < 1.0 and set(report["per_dimension"]) == {
            "edit_accuracy", "preservation_consistency", "generation_naturalness", "generation_realism"}, report
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()

"""The repository contract: README commands, CI script, packaging metadata."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Fresh machine", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    assert len(blocks) == 2, f"README's fresh-machine section must have exactly two commands, found {blocks}"
    return blocks[0].strip(), blocks[1].strip()


def test_ci_runs_exactly_the_readme_commands():
    install, test = _readme_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert f"{install} || exit 1" in ci_lines
    assert test in ci_lines
    assert ci_lines.index(f"{install} || exit 1") < ci_lines.index(test)


def test_ci_treats_no_tests_collected_as_failure():
    script = (ROOT / ".ci" / "run").read_text()
    assert '"$status" -eq 5' in script and "exit 1" in script


def test_readme_install_pins_cpu_torch_but_pyproject_does_not():
    install, _ = _readme_commands()
    assert '"torch==2.13.0"' in install
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_reqs = [d for d in project["dependencies"] if re.match(r"torch\b", d)]
    assert torch_reqs and all("==" not in d for d in torch_reqs), torch_reqs


def test_pyproject_declares_the_required_stack_and_comfy_metadata():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = {re.split(r"[<>=!\[ ]", d, maxsplit=1)[0].lower() for d in data["project"]["dependencies"]}
    required = {"torch", "diffusers", "transformers", "safetensors", "einops", "numpy", "tqdm", "av"}
    assert required <= names, required - names
    # Optional at run time, so extras (tests/test_optional_extras.py); kornia is used nowhere.
    assert not names & {"matplotlib", "tensorboard", "kornia"}, names
    extras = data["project"]["optional-dependencies"]
    assert extras["plots"] == ["matplotlib>=3.11.2"] and extras["tensorboard"] == ["tensorboard>=2.21.0"]
    assert {"matplotlib", "tensorboard", "setuptools"} <= {re.split(r"[<>=!\[ ]", d, maxsplit=1)[0]
                                                          for d in extras["test"]}
    assert "pytest" in " ".join(data["project"]["optional-dependencies"]["test"])
    assert any(d.startswith("comfyui-frontend-package") for d in data["project"]["optional-dependencies"]["frontend"])


# What ComfyUI 0.8.0's requirements.txt pins with == (the rest it asks for with >= or not at all).
COMFYUI_PINNED = {"comfyui-frontend-package", "comfyui-workflow-templates", "comfyui-embedded-docs"}


def test_installing_the_extension_cannot_change_comfyuis_pinned_packages():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in data["project"]["dependencies"]}
    assert not names & COMFYUI_PINNED, names & COMFYUI_PINNED
    assert "comfyui-frontend-package" not in " ".join(data["project"]["optional-dependencies"]["test"])
    assert {"PublisherId", "DisplayName"} <= set(data["tool"]["comfy"])
    # `nodes` must never be installed as a top-level package: ComfyUI owns that module name.
    assert not [p for p in data["tool"]["setuptools"]["packages"] if p.split(".")[0] == "nodes"]


def _package_folders() -> set[str]:
    """What the wheel must pack: every folder of revise_core/ and trainer/ with an __init__.py, and configs/ (as
    revise_core.configs) with each of its folders whose name Python could import."""
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("revise_core", "trainer")
             for p in (ROOT / top).rglob("__init__.py") if "__pycache__" not in p.parts}
    for folder in [ROOT / "configs", *(p for p in (ROOT / "configs").rglob("*") if p.is_dir())]:
        parts = folder.relative_to(ROOT).parts
        if all(part.isidentifier() for part in parts):
            found.add(".".join(("revise_core", *parts)))
    return found


def test_the_explicit_package_list_is_every_package_folder():
    """pyproject.toml lists the packages (a `find` cannot add the mapped revise_core.configs): a package folder
    added, moved or removed must be named there too."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, folders = set(setuptools["packages"]), _package_folders()
    assert listed == folders, (f"add to [tool.setuptools].packages: {sorted(folders - listed)}; "
                               f"remove: {sorted(listed - folders)}")
    assert setuptools["package-dir"] == {"revise_core.configs": "configs"}


def test_configs_are_found_next_to_the_package_in_a_checkout():
    from revise_core import resources
    from revise_core.data.rave import FEWSHOT_FILE
    from revise_core.variants import CONFIG_ROOT

    assert resources.CONFIG_ROOT == ROOT / "configs" and CONFIG_ROOT == ROOT / "configs" / "models"
    assert FEWSHOT_FILE.is_file() and FEWSHOT_FILE.is_relative_to(ROOT / "configs")


def test_license_is_the_apache_2_0_text_that_pyproject_declares():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) == 202


def test_shipped_configs_are_valid_json_for_every_variant():
    from revise_core.variants import KNOWN_VARIANTS

    for variant in KNOWN_VARIANTS:
        assert isinstance(variant.load_config(), dict), variant.name


def test_requirements_txt_is_pyprojects_dependency_list():
    """ComfyUI-Manager and the registry install requirements.txt, pip install -e . reads pyproject.toml."""
    listed = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    assert listed == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


@pytest.mark.parametrize("folder", ["ComfyUI-ReViSE", pytest.param("2 ComfyUI ReViSE", marks=pytest.mark.slow)])
def test_the_test_command_works_in_a_clone_whose_name_is_not_a_package_name(folder, tmp_path):
    """The README clones into ComfyUI-ReViSE: pytest then imports the root __init__.py as a lone module (the
    folder's name is no package name), whose relative import of the nodes must not run."""
    import shutil
    import subprocess
    import sys

    clone = tmp_path / folder
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache",
                                                                 "runs", "output", "*.mp4"))
    # `-n 0`: one process is enough for one file (the folder's name matters here, not the workers)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                          "tests/test_repository.py", "-k", "not clone_whose_name"], cwd=clone, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "passed" in run.stdout


def test_ruff_is_clean_with_the_configured_rules():
    """pyflakes, import order and bugbear (pyproject.toml's [tool.ruff]); ruff comes with the test extra."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert {"F", "I", "B"} <= set(config["tool"]["ruff"]["lint"]["select"])
    assert any(spec.startswith("ruff") for spec in config["project"]["optional-dependencies"]["test"])
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


"""The workflows as ComfyUI's Templates dialog shows them (frontend 1.35.9): an extension's template is only
its file name, shown as the title and again as the description, and `<name>.jpg` as its thumbnail in a
square card (workflowTemplatesStore.ts, useTemplateWorkflows.ts, WorkflowTemplateSelectorDialog.vue)."""

from __future__ import annotations

import re
import sys

import pytest

from conftest import ROOT

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
THUMBNAIL_SIZE = (512, 512)  # square like the card (aspect-square), 2x its 256 CSS px (max-h-64)
TITLE_CHARACTERS = 32  # one line of the card's title (text-sm in a 15rem card) holds about this many


def _module(name: str):
    sys.path.insert(0, str(ROOT / "workflows"))
    return __import__(name)


def test_every_template_has_a_square_jpeg_thumbnail():
    from PIL import Image

    assert len(WORKFLOWS) == 8
    for path in WORKFLOWS:
        # the frontend asks for /api/workflow_templates/<module>/<name>.jpg (mediaSubtype 'jpg', fixed)
        with Image.open(path.with_suffix(".jpg")) as thumbnail:
            assert (thumbnail.format, thumbnail.size) == ("JPEG", THUMBNAIL_SIZE), path.name
    assert {p.stem for p in (ROOT / "workflows").glob("*.jpg")} == {p.stem for p in WORKFLOWS}, "a stray thumbnail"


def test_the_thumbnail_script_draws_every_template_and_its_pictures_are_current():
    """Each shipped JPEG is what workflows/thumbnails.py draws now (within JPEG and font-rendering noise):
    a changed figure in the script or in build.py's CPU estimate needs `python workflows/thumbnails.py`."""
    import numpy as np
    from PIL import Image

    thumbnails, build = _module("thumbnails"), _module("build")
    assert set(thumbnails.PICTURES) == {p.stem for p in WORKFLOWS} == {n.removesuffix(".json") for n in build.WORKFLOWS}
    for path in WORKFLOWS:
        drawn = np.asarray(thumbnails.draw(path.stem), dtype=np.float32)
        with Image.open(path.with_suffix(".jpg")) as stored:
            difference = np.abs(np.asarray(stored.convert("RGB"), dtype=np.float32) - drawn).mean()
        assert difference < 3, f"{path.with_suffix('.jpg').name} is stale: run python workflows/thumbnails.py"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_template_names_read_as_titles(path):
    """The name is the title (shown as it is) and the description (with - and _ as spaces): words, no
    underscores; and it goes unescaped into the frontend's URLs and onto every file system, so letters,
    digits, spaces and hyphens only."""
    name = path.stem
    assert re.fullmatch(r"ReViSE [A-Za-z0-9 -]+", name), name
    assert len(name) <= TITLE_CHARACTERS, f"'{name}' is cut off in the card's one-line title"


def test_the_docs_name_every_template():
    docs = (ROOT / "docs" / "comfyui.md").read_text(encoding="utf-8")
    assert all(f"**{path.stem}**" in docs for path in WORKFLOWS)


def test_cpu_notes_quote_the_measured_figure_scaled_by_flops():
    """The notes' CPU hours: the measured block time x blocks x passes x steps, scaled by FLOPs (build.py)."""
    build = _module("build")
    same_size = build.cpu_seconds(33, 640, 352, 40)
    assert same_size == pytest.approx(build.CPU_BLOCK_SECONDS * build.DIT_BLOCKS * 2 * 40)
    assert build.cpu_seconds(17, 640, 352, 40) < same_size  # fewer tokens, fewer FLOPs
    notes = [node["widgets_values"][0] for node in build.edit_workflow()["nodes"] if node.get("title") == "On a CPU"]
    assert len(notes) == 1 and "14 h" in notes[0] and "workflows/cpu_step_time.py" in notes[0]

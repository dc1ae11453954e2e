"""`models.json`: a folder's description of its model set (paths relative to the folder, and configs).

Light on purpose (nothing beyond checkpoints.py, no diffusers or transformers): the loaders, the converter, the
test kit and ComfyUI's model-folder scan read or write this file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from . import checkpoints as ckpt

logger = logging.getLogger(__name__)

MODELS_FILE = "models.json"
# models.json entries: paths relative to its folder, and configs (a variant name, a config file, or the config).
PATH_ENTRIES = ("dit", "vae", "t5", "t5_tokenizer", "vlm", "connector", "special_tokens")
CONFIG_ENTRIES = ("dit_config", "vae_config", "t5_config", "connector_config")


def check_models_file(folder: Path, spec: dict) -> None:
    """Every problem of a models.json at once, naming the entry: paths must be strings, configs strings or
    objects. A path outside the folder is used (users share one model between sets, by `../` or a symlink)
    but said in a warning, since a models.json from elsewhere decides what is read; nothing it names is ever
    unpickled (weights load with weights_only or from safetensors)."""
    where = folder / MODELS_FILE
    problems = []
    for key in PATH_ENTRIES:
        value = spec.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"'{key}' must be a path relative to the folder (a string), got {value!r:.60}")
            continue
        target = (folder / value).resolve()
        if folder.resolve() not in target.parents:
            logger.warning("%s: '%s' points outside the model set's folder (%s); it is used as given", where, key,
                           target)
    for key in CONFIG_ENTRIES:
        value = spec.get(key)
        if value is not None and not isinstance(value, (str, dict)):
            problems.append(f"'{key}' must be a variant name, a config file or a config object, got {value!r:.60}")
    unknown = sorted(set(spec) - set(PATH_ENTRIES) - set(CONFIG_ENTRIES))
    if unknown:
        logger.warning("%s: entries %s are not used (known: %s)", where, unknown, [*PATH_ENTRIES, *CONFIG_ENTRIES])
    if problems:
        raise ckpt.CheckpointError(f"{where}: " + "; ".join(problems))


def write_models_file(folder: str | os.PathLike, entries: dict[str, str]) -> Path:
    """Write `models.json` (paths relative to `folder`) describing a model set for `EditModels.load`."""
    path = Path(folder) / MODELS_FILE
    path.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path

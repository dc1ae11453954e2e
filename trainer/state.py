"""Resumable training checkpoints: trainable weights, optimizer, scheduler, RNG and step, atomically.

Layout: <output>/checkpoints/step_000100/{trainable,optimizer,rng}.safetensors + state.json +
checksums.json, written into a `.tmp` folder and renamed, then `latest.json` is replaced (also
atomically). A crash at any point leaves the previous checkpoint intact; a checkpoint damaged later (a
truncated copy, a bad disk) fails its checksums and the newest intact one is used instead, with a
warning. Everything is safetensors or JSON: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from revise_core import checkpoints as ckpt
from revise_core import jsonio

logger = logging.getLogger(__name__)

LATEST = "latest.json"
CHECKSUMS = "checksums.json"
# What a run folder holds besides its checkpoints (a fresh run must not mix with, or delete, another run's).
RUN_FILES = ("metrics.jsonl", "tensorboard", "final", "curves.png", "curves.csv")


class ResumeError(ValueError):
    """A run cannot be resumed (nothing to resume, no intact checkpoint, or changed settings)."""


class RunExistsError(ValueError):
    """A fresh run was asked to write into a folder that already holds a run."""


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def gather(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full (unsharded, CPU) model and optimizer state dicts; a collective call under DDP / FSDP.

    torch.distributed.checkpoint's state-dict API names everything by parameter path, with or without a
    DDP / FSDP2 wrapper, so one checkpoint format serves every strategy.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save(output_dir: str | os.PathLike, step: int, *, model_state: dict, optimizer_state: dict, trainable: list[str],
         scheduler, config: dict, metrics: dict, keep: int = 3, scaler: torch.amp.GradScaler | None = None,
         dataset: dict[str, str] | None = None) -> Path:
    """Write a checkpoint from gathered state dicts (call on one process). `dataset`: the manifest's
    fingerprint per row (dataset_fingerprint), which a resume compares."""
    root = checkpoint_root(output_dir)
    final = root / f"step_{step:06d}"
    tmp = root / f"step_{step:06d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    ckpt.save_safetensors({name: model_state[name] for name in trainable}, tmp / "trainable.safetensors",
                          format_name="revise.trainer.trainable")
    optimizer_tensors, optimizer_meta = _flatten_optimizer(optimizer_state)
    ckpt.save_safetensors(optimizer_tensors, tmp / "optimizer.safetensors", format_name="revise.trainer.optimizer")
    ckpt.save_safetensors(_rng_tensors(), tmp / "rng.safetensors", format_name="revise.trainer.rng")
    state = {"step": step, "config": config, "scheduler": _encode_scalars(scheduler.state_dict()), "optimizer": optimizer_meta,
             "python_random": _python_random_state(), "trainable": trainable, "metrics": metrics,
             "grad_scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
             "dataset": dataset}
    (tmp / "state.json").write_text(jsonio.dumps(state, indent=2) + "\n", encoding="utf-8")
    # Written last: a checkpoint is intact exactly when every file still has the digest it had here.
    sums = {path.name: _sha256(path) for path in sorted(tmp.iterdir())}
    (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=2) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_json_atomic(root / LATEST, {"step": step, "path": final.name})
    _prune(root, keep)
    logger.info("saved checkpoint %s", final)
    return final


def latest(output_dir: str | os.PathLike) -> Path | None:
    """The newest intact checkpoint (None when the run has none). A damaged newest one is skipped with a
    warning that names what is wrong; ResumeError when checkpoints exist but none is intact."""
    root = checkpoint_root(output_dir)
    candidates = sorted((p for p in root.glob("step_*") if p.is_dir() and p.name[5:].isdigit()),
                        key=lambda p: int(p.name[5:]), reverse=True)
    if not candidates:
        return None
    problems = []
    for path in candidates:
        problem = verify(path)
        if problem is None:
            if problems:
                logger.warning("using %s: newer checkpoints are damaged (%s)", path, "; ".join(problems))
            return path
        problems.append(problem)
    raise ResumeError(f"no intact checkpoint under {root}: {'; '.join(problems)}")


def verify(path: Path) -> str | None:
    """None if the checkpoint folder is intact, else what is wrong with it."""
    sums_path = path / CHECKSUMS
    if not sums_path.is_file():
        return f"{path.name}: no {CHECKSUMS} (incomplete)"
    try:
        sums = json.loads(sums_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return f"{path.name}: unreadable {CHECKSUMS} ({error})"
    for name in ("state.json", "trainable.safetensors", "optimizer.safetensors", "rng.safetensors"):
        if name not in sums:
            return f"{path.name}: {CHECKSUMS} does not cover {name}"
    for name, digest in sums.items():
        file = path / name
        if not file.is_file():
            return f"{path.name}/{name} is missing"
        if _sha256(file) != digest:
            return f"{path.name}/{name} does not match its checksum (damaged or truncated)"
    return None


def run_exists(output_dir: str | os.PathLike) -> list[str]:
    """What of a previous run a folder holds (empty list: nothing)."""
    out = Path(output_dir)
    found = [name for name in RUN_FILES if (out / name).exists()]
    if checkpoint_root(out).is_dir() and any(checkpoint_root(out).iterdir()):
        found.insert(0, "checkpoints")
    return found


def remove_run(output_dir: str | os.PathLike) -> None:
    """Delete a previous run's checkpoints, metrics, logs and exports (what --overwrite asks for)."""
    out = Path(output_dir)
    for path in [checkpoint_root(out)] + [out / name for name in RUN_FILES]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    logger.warning("removed the previous run in %s (overwrite)", out)


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
         trainable: list[str], scaler: torch.amp.GradScaler | None = None) -> dict:
    """Restore a checkpoint written by `save` into live (possibly wrapped / sharded) objects; every process
    calls it. Returns the checkpoint's state.json."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    path = Path(path)
    state = ckpt.read_json(path / "state.json", what="trainer state")
    weights = ckpt.read_state_dict(path / "trainable.safetensors").tensors
    if sorted(state["trainable"]) != sorted(trainable) or set(weights) != set(trainable):
        raise ckpt.CheckpointError(
            f"{path}: the checkpoint's trainable parameters differ from this run's ({len(weights)} vs "
            f"{len(trainable)} tensors); was it written with another train mode or LoRA setting?"
        )
    optimizer_state = _unflatten_optimizer(ckpt.read_state_dict(path / "optimizer.safetensors").tensors,
                                           state["optimizer"])
    set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=optimizer_state,
                   options=StateDictOptions(full_state_dict=True, strict=False))
    scheduler.load_state_dict(_decode_scalars(state["scheduler"]))
    if scaler is not None and scaler.is_enabled() and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])
    _restore_rng(ckpt.read_state_dict(path / "rng.safetensors").tensors, state["python_random"])
    logger.info("resumed from %s (step %d)", path, state["step"])
    return state


# Optimizer-state tensor subclasses a checkpoint may rebuild (torchao's 8-bit AdamW states: int8 codes, block
# scales and the quantisation map). Rebuilt from their plain inner tensors by this list only, never by a name
# read from the file.
STATE_SUBCLASSES = {"OptimState8bit": ("torchao.optim.subclass_8bit", "OptimState8bit")}


def dataset_fingerprint(triplets) -> dict[str, str]:
    """Per manifest row: a digest of its instruction, its videos' paths, sizes and modification times (not
    their bytes: cheap for any dataset). A resumed run compares them with the checkpoint's."""
    rows = {}
    for triplet in triplets:
        parts = [triplet.instruction, triplet.subset, triplet.category]
        for path in (triplet.source, triplet.target):
            if path is None:
                parts.append(None)
                continue
            stat = Path(path).stat()
            parts.append([str(path), stat.st_size, stat.st_mtime_ns])
        rows[triplet.id] = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]
    return rows


def dataset_changes(saved: dict[str, str] | None, current: dict[str, str]) -> list[str]:
    """What differs between a checkpoint's dataset and this run's, row by row (empty: the same)."""
    if saved is None:  # a checkpoint written before the fingerprint existed
        return []
    added = sorted(set(current) - set(saved))
    removed = sorted(set(saved) - set(current))
    changed = sorted(k for k in set(saved) & set(current) if saved[k] != current[k])
    out = []
    for label, ids in (("added", added), ("removed", removed), ("changed", changed)):
        if ids:
            out.append(f"{len(ids)} {label} ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})")
    return out


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state keyed by parameter path -> flat tensors ('state/<param>/<name>') + JSON metadata.

    A quantised state (a tensor subclass in STATE_SUBCLASSES) is stored as its inner tensors
    ('state/<param>/<name>/<inner>') plus its type and attributes, so that it resumes bit for bit."""
    tensors, scalars, subclasses = {}, {}, {}
    for param, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and type(value).__name__ in STATE_SUBCLASSES:
                names, attributes = value.__tensor_flatten__()
                for name in names:
                    tensors[f"state/{param}/{key}/{name}"] = getattr(value, name).detach().clone()
                subclasses[f"{param}/{key}"] = {"type": type(value).__name__,
                                                "attributes": [_json_attribute(a) for a in attributes]}
            elif isinstance(value, torch.Tensor):
                if type(value) not in (torch.Tensor, torch.nn.Parameter):
                    raise TypeError(f"optimizer state '{param}/{key}' is a {type(value).__name__}, which checkpoints "
                                    f"cannot store (known quantised states: {sorted(STATE_SUBCLASSES)})")
                tensors[f"state/{param}/{key}"] = value
            else:
                scalars[f"{param}/{key}"] = value
    return tensors, {"param_groups": _encode_scalars(state_dict["param_groups"]), "scalars": scalars,
                     "subclasses": subclasses}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[str, dict] = {}
    subclasses = meta.get("subclasses", {})
    inner: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        _, param, key = name.split("/", 2)
        owner, _, part = key.rpartition("/")
        if owner and f"{param}/{owner}" in subclasses:
            inner.setdefault(f"{param}/{owner}", {})[part] = tensor
        else:
            state.setdefault(param, {})[key] = tensor
    for name, spec in subclasses.items():
        if spec.get("type") not in STATE_SUBCLASSES:
            raise ckpt.CheckpointError(f"optimizer state '{name}' has the unknown type {spec.get('type')!r}; known: "
                                       f"{sorted(STATE_SUBCLASSES)}")
        module, cls_name = STATE_SUBCLASSES[spec["type"]]
        cls = getattr(importlib.import_module(module), cls_name)
        param, key = name.split("/", 1)
        attributes = [_attribute_from_json(a) for a in spec["attributes"]]
        state.setdefault(param, {})[key] = cls.__tensor_unflatten__(inner.get(name, {}), attributes, None, None)
    for name, value in meta.get("scalars", {}).items():
        param, key = name.split("/", 1)
        state.setdefault(param, {})[key] = value
    return {"state": state, "param_groups": _decode_scalars(meta["param_groups"])}


def _encode_scalars(value):
    """torchao's optimizers keep the learning rate as a 0-d fp32 tensor (in their param groups and so in the
    scheduler's base and last rates), which JSON cannot hold: {"tensor": value}, decoded by _decode_scalars."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return {"tensor": value.item()}
    if isinstance(value, dict):
        return {key: _encode_scalars(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_encode_scalars(item) for item in value)
    return value


def _decode_scalars(value):
    if isinstance(value, dict):
        if set(value) == {"tensor"}:
            return torch.tensor(value["tensor"], dtype=torch.float32)
        return {key: _decode_scalars(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode_scalars(item) for item in value]
    return value


def _json_attribute(value):
    return {"dtype": str(value).removeprefix("torch.")} if isinstance(value, torch.dtype) else value


def _attribute_from_json(value):
    if isinstance(value, dict) and set(value) == {"dtype"}:
        return getattr(torch, value["dtype"])
    return value


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state(),
               "numpy": torch.from_numpy(np.frombuffer(json.dumps(_numpy_state()).encode(), dtype=np.uint8).copy())}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{index}"] = cuda_state
    return tensors


def _numpy_state() -> list:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _python_random_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _restore_rng(tensors: dict[str, torch.Tensor], python_state: list) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    kind, keys, pos, has_gauss, cached = json.loads(bytes(tensors["numpy"].numpy()).decode())
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = python_state
    random.setstate((version, tuple(internal), gauss))
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("cuda_")]
        if states:
            torch.cuda.set_rng_state_all(states)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old)

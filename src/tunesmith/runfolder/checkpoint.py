"""The run folder on disk: made ready before training, filled atomically at the end.

A run folder counts as finished when it holds `metrics.json`; that file is written last, and the
exported model is written to a temporary folder and renamed into place, so a crash never leaves
a folder that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from transformers import PreTrainedTokenizerBase

from tunesmith.runfolder.layout import (
    CHECKPOINTS,
    CONFIG,
    DECISIONS,
    META_FILE,
    METRICS,
    METRICS_LOG,
    MODEL,
    STEP_PREFIX,
    step_folders,
)


def prepare_output_dir(path: Path) -> None:
    """Clear an earlier run's files (checkpoints too) and create the folder; the caller has
    checked that they may go (layout.check_output_dir, or a resume that found nothing)."""
    for name in (MODEL, METRICS, METRICS_LOG, CONFIG, DECISIONS, "tensorboard", CHECKPOINTS):
        target = path / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def export_model(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, path: Path, meta: dict
) -> None:
    """A `save_pretrained` folder (safetensors) that `transformers.pipeline` loads as is."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / META_FILE, meta)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


# ---- training checkpoints: everything needed to continue exactly where a run stopped ----
#
# output_dir/checkpoints/step-00000120/   model.safetensors  optimizer.pt  scheduler.pt
#                                         rng.pt  state.json  manifest.json (written last)
#                                         scaler.pt (fp16 only: the gradient scaler's state)
# output_dir/checkpoints/best.safetensors  the weights of the best evaluation (one file, replaced
#                                         atomically, so there is always exactly one best)
#
# Folders are written under a .tmp name, fsynced, and renamed into place; the manifest lists each
# file's size and sha256, so a truncated or half-copied checkpoint is detected and skipped.


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _seal(tmp: Path, final: Path) -> None:
    """Write the manifest, flush every file to disk, then rename the folder into place."""
    files = sorted(p for p in tmp.iterdir() if p.is_file())
    manifest = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    for p in [*files, tmp / "manifest.json"]:
        with p.open("rb") as f:
            os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a power cut
    finally:
        os.close(dir_fd)


def verify(folder: Path) -> str | None:
    """None when every file the manifest lists is present and intact, else what is wrong."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return "no manifest.json (the save did not finish)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "manifest.json is unreadable"
    for name, expected in manifest.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, expected {expected['bytes']}"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rng_states: list[dict],
    state: dict,
    keep_last: int,
    scaler: Any = None,
) -> Path:
    """A complete, verified step folder; older step folders beyond `keep_last` are removed."""
    root = run_dir / CHECKPOINTS
    final = root / f"{STEP_PREFIX}{step:08d}"
    tmp = root / (final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_states, tmp / "rng.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    _seal(tmp, final)
    for old in step_folders(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def best_weights(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS / "best.safetensors"


def save_best(run_dir: Path, model: torch.nn.Module, step: int) -> None:
    final = best_weights(run_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    save_model(model, str(tmp), metadata={"step": str(step)})
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def load_weights(model: torch.nn.Module, weights: Path) -> None:
    """Load a safetensors file into `model`; strict, so a mismatched file raises."""
    load_model(model, str(weights), strict=True)


def find_resumable(run_dir: Path, log: Callable[[str], None]) -> Path | None:
    """The newest intact step folder; each newer one passed over is logged with the reason."""
    for cut_short in sorted((run_dir / CHECKPOINTS).glob(f"{STEP_PREFIX}*.tmp")):
        log(f"checkpoint {cut_short.name} was cut short while saving; skipped")
    for folder in reversed(step_folders(run_dir)):
        problem = verify(folder)
        if problem is None:
            return folder
        log(f"checkpoint {folder.name} is damaged ({problem}); skipped, taking the one before")
    return None


def load_training_state(folder: Path) -> tuple[dict, dict, dict, list[dict]]:
    """(state, optimizer state, scheduler state, per-rank RNG states) of a step folder.

    `weights_only=True`: these files hold tensors and plain containers only, and nothing in a
    checkpoint folder is allowed to run code when loaded.
    """
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    optimizer = torch.load(folder / "optimizer.pt", weights_only=True)
    scheduler = torch.load(folder / "scheduler.pt", weights_only=True)
    rng = torch.load(folder / "rng.pt", weights_only=True)
    return state, optimizer, scheduler, rng


def load_scaler_state(folder: Path) -> dict | None:
    path = folder / "scaler.pt"
    return torch.load(path, weights_only=True) if path.exists() else None


def capture_rng() -> dict:
    """This process's random generators (Python, NumPy, torch CPU and CUDA) as plain data."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(saved: dict) -> None:
    version, mt, gauss = saved["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(saved["torch"])
    if saved["cuda"]:
        torch.cuda.set_rng_state_all(saved["cuda"])

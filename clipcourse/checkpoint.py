"""Checkpoint files: written atomically, read without running any code (lesson 06).

A checkpoint holds everything `train` needs to continue as if it had never stopped: the model, the
optimiser's moments, the step, τ, the history, the batch order's random state and torch's random
state (`train.TrainState.state_dict`). The `train.Checkpoint` callback writes one every `every`
steps, at the end and when Ctrl-C stops training; `train.train(..., resume=path)` picks the run up
again. This module only knows the file, not what training puts in it.

Two things can go wrong with files, and both are handled here:

- A crash or a full disk halfway through a write must not destroy the last good checkpoint. So we
  write a temporary file next to it, flush it to the disk (fsync), and only then rename it over the
  old one: on POSIX a rename within one directory is atomic (on Windows `os.replace` is the closest
  thing), so the path always holds a complete checkpoint, old or new.
- `torch.load` unpickles, and unpickling can call any Python function: a checkpoint downloaded from
  somewhere can run code on your machine. We load with `weights_only=True`, which only rebuilds
  tensors, numbers, strings, lists and dicts, and refuses anything else.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

FORMAT = "clipcourse-checkpoint-1"   # what a checkpoint says it is, so that other files are refused


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> Path:
    """Write `checkpoint` to `path` atomically: a temporary file, fsync, then a rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **checkpoint}, f)
            f.flush()
            os.fsync(f.fileno())               # the bytes are on the disk before the name points at them
        os.replace(tmp, path)                  # atomic: `path` is the old checkpoint or the new one
        if os.name == "posix":                 # make the rename itself survive a power cut
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        if os.path.exists(tmp):                # the write failed or was interrupted: leave no litter
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`, refusing anything but plain data (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"refused to load {path}: it holds Python objects other than tensors, numbers, strings, lists "
            f"and dicts, and unpickling them could run arbitrary code. Only load such a file with "
            f"torch.load(weights_only=False) if you trust where it came from.\n{error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"{path} is not a clipcourse checkpoint (no format {FORMAT!r}); for a bare model "
                         f"state_dict use model.load_state_dict(torch.load(path, weights_only=True))")
    return checkpoint

"""Execute lessons top to bottom in a fresh kernel and store them with their outputs.

    python tools/execute_notebooks.py notebooks/04_the_contrastive_loss.ipynb    # in place
    python tools/execute_notebooks.py notebooks/*.ipynb                          # every lesson
    python tools/execute_notebooks.py notebooks/06*.ipynb --output-dir /tmp/run  # a copy elsewhere

Each notebook runs in a new kernel started from this process's environment, with the same
settings the test suite gives nbval's kernels (OMP_WAIT_POLICY=PASSIVE, see conftest.py) and a
fixed PYTHONHASHSEED. Execution counts come out in order (1, 2, 3, ...); per-cell execution
timestamps (metadata.execution) are not recorded, a cell's consecutive prints are stored as one output
however the kernel flushed them, and the ids of the widgets whose state is stored are renamed in order
of appearance, so that re-executing a lesson changes only what its cells print and draw. A cell that
raises stops that notebook, and it is not written.

Run it on the machine whose outputs you want to store, without a CPU profile: nbval compares the
stored outputs with a fresh run under every profile of the README's test command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

KERNEL_ENV = {"OMP_WAIT_POLICY": "PASSIVE",   # as conftest.py sets it for the test kernels
              "PYTHONHASHSEED": "0"}          # the same set and dict orders in every run


def strip_timestamps(nb: nbformat.NotebookNode) -> None:
    """Remove the per-cell execution timestamps Jupyter and nbclient record."""
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)


def stable_widget_ids(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """Rename the random ids of stored widget models to ids derived from `name` and their place.

    Models are numbered as they are reached from the cells' outputs, following the references in
    their state; any left over are numbered in the order of their state's text.
    """
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    if not state:
        return nb
    ref = re.compile(r"IPY_MODEL_([0-9a-f]{32})")
    order: list[str] = []
    queue = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
             for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    while queue:
        model_id = queue.pop(0)
        if model_id in state and model_id not in order:
            order.append(model_id)
            queue += ref.findall(json.dumps(state[model_id], sort_keys=True))
    left = [m for m in state if m not in order]
    order += sorted(left, key=lambda m: ref.sub("IPY_MODEL_", json.dumps(state[m], sort_keys=True)))
    new = {old: uuid.uuid5(uuid.NAMESPACE_URL, f"clipcourse/{name}/{k}").hex for k, old in enumerate(order)}
    text = re.sub("|".join(map(re.escape, new)), lambda m: new[m.group()], nbformat.writes(nb))
    return nbformat.reads(text, as_version=4)


def execute(path: Path, output: Path, timeout: int) -> float:
    """Run `path` top to bottom in a fresh kernel and write the result to `output`; return seconds."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)          # widget state of an earlier run; this run stores its own, if any
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.resolve().parent)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    strip_timestamps(nb)
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})   # one stdout block per cell, however it was flushed
    nb = stable_widget_ids(nb, path.name)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    if counts != list(range(1, len(counts) + 1)):
        raise RuntimeError(f"{path}: execution counts out of order: {counts}")
    nbformat.validate(nb)
    nbformat.write(nb, output)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--output-dir", type=Path, help="write executed copies here instead of in place")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    args = parser.parse_args(argv)
    for key, value in KERNEL_ENV.items():
        os.environ.setdefault(key, value)
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for path in args.notebooks:
        output = args.output_dir / path.name if args.output_dir else path
        seconds = execute(path, output, args.timeout)
        total += seconds
        print(f"{path.name:42s} {seconds:6.1f} s -> {output}", flush=True)
    print(f"{'total':42s} {total:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

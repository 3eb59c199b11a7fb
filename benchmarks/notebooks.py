"""Time and peak memory of every lesson, each run top to bottom in a fresh kernel.

    python benchmarks/notebooks.py            # all notebooks
    python benchmarks/notebooks.py 05 06      # the ones whose names start so

Peak memory counts every process the lesson runs: the kernel and any worker processes it starts
(lesson 07's sweep trains in one worker per core). A sampler sums the proportional set size (PSS:
shared library pages split between the processes that map them) of all descendants of this script
every 0.2 s and keeps the largest sum (Linux /proc). The kernel's own ru_maxrss is reported beside
it. The budget for the whole course is 180 s and 2 GiB on a 2-core machine. Writes
benchmarks/notebooks.json.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
PEAK_CELL = "import resource; print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"


def _descendants(root: int) -> list[int]:
    """Process ids of every descendant of `root`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


class PeakMemory:
    """Samples the summed PSS of all descendant processes in a thread; `.peak_kb` is the largest."""

    def __init__(self, every: float = 0.2):
        self.every, self.peak_kb, self.most_processes = every, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            pids = _descendants(os.getpid())
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(p) for p in pids))
            self.most_processes = max(self.most_processes, len(pids))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_notebook(path: Path, timeout: int = 600) -> dict:
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    with PeakMemory() as memory:
        t0 = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - t0
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    kernel_kb = int(text.split()[-1])
    return {"notebook": path.name, "seconds": round(seconds, 1), "peak_mib": round(memory.peak_kb / 1024),
            "kernel_maxrss_mib": round(kernel_kb / 1024), "processes": memory.most_processes}


def main(prefixes: list[str]) -> list[dict]:
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if prefixes:
        paths = [p for p in paths if any(p.name.startswith(x) for x in prefixes)]
    rows = []
    for path in paths:
        rows.append(run_notebook(path))
        r = rows[-1]
        print(f"{r['notebook']:42s} {r['seconds']:6.1f} s {r['peak_mib']:6d} MiB (all processes, PSS; "
              f"kernel max RSS {r['kernel_maxrss_mib']} MiB, {r['processes']} processes)", flush=True)
    total = sum(r["seconds"] for r in rows)
    peak = max((r["peak_mib"] for r in rows), default=0)
    print(f"{'total':42s} {total:6.1f} s {peak:6d} MiB (max)  budget: 180 s, 2048 MiB")
    if not prefixes:
        (ROOT / "benchmarks" / "notebooks.json").write_text(json.dumps(
            {"rows": rows, "total_s": round(total, 1), "peak_mib": peak}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

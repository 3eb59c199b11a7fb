"""Time and peak memory of every lesson, each run top to bottom in a fresh kernel.

    python benchmarks/notebooks.py            # all notebooks
    python benchmarks/notebooks.py 05 06      # the ones whose names start so

Peak memory counts every process the lesson runs: the kernel and any worker processes it starts
(lesson 07's sweep trains in one worker per core). A sampler sums the proportional set size (PSS:
shared library pages split between the processes that map them) of all descendants of this script
every 0.2 s and keeps the largest sum (Linux /proc). The kernel's own ru_maxrss is reported beside
it. Each lesson runs twice, one run right after the other: as a learner's kernel runs it here
(precision "auto": bfloat16 where the CPU has it natively) and with CLIPCOURSE_PRECISION=float32, as
on a CPU without bfloat16 (skipped where "auto" already means float32). The budget for the whole
course is 180 s and 2 GiB on a 2-core machine. Writes benchmarks/notebooks.json.
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


def run_notebook(path: Path, timeout: int = 600, precision: str | None = None) -> dict:
    """Run one lesson in a fresh kernel; `precision` sets CLIPCOURSE_PRECISION for that kernel."""
    old = os.environ.pop("CLIPCOURSE_PRECISION", None)
    if precision:
        os.environ["CLIPCOURSE_PRECISION"] = precision
    try:
        return _run_notebook(path, timeout)
    finally:
        os.environ.pop("CLIPCOURSE_PRECISION", None)
        if old is not None:
            os.environ["CLIPCOURSE_PRECISION"] = old


def _run_notebook(path: Path, timeout: int) -> dict:
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


def _report(rows: list[dict], label: str) -> tuple[float, int]:
    total = sum(r["seconds"] for r in rows)
    peak = max((r["peak_mib"] for r in rows), default=0)
    print(f"{'total (' + label + ')':42s} {total:6.1f} s {peak:6d} MiB (max)  budget: 180 s, 2048 MiB")
    return round(total, 1), peak


def main(prefixes: list[str]) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import _precisions, cpu_info

    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if prefixes:
        paths = [p for p in paths if any(p.name.startswith(x) for x in prefixes)]
    info = cpu_info()
    print(f"CPU: {info['cpu']}, {info['cpu_family_model']} ({', '.join(info['cpu_extensions'])}); "
          f"native bfloat16: {info['native_bfloat16']}")
    runs = {p: [] for p in _precisions()}
    for path in paths:
        for precision, rows in runs.items():
            rows.append(run_notebook(path, precision=None if precision == "auto" else precision))
            r = rows[-1]
            print(f"{r['notebook']:34s} {precision:>7s} {r['seconds']:6.1f} s {r['peak_mib']:6d} MiB (all "
                  f"processes, PSS; kernel max RSS {r['kernel_maxrss_mib']} MiB, {r['processes']} processes)",
                  flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), **info}
    for precision, rows in runs.items():
        total, peak = _report(rows, precision)
        block = {"rows": rows, "total_s": total, "peak_mib": peak}
        if precision == "auto":
            result.update(block)
        else:
            result[precision] = block
    if "float32" not in result:
        result["float32"] = {k: result[k] for k in ("rows", "total_s", "peak_mib")}
    if not prefixes:
        (ROOT / "benchmarks" / "notebooks.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

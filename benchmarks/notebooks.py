"""Time and peak memory of every lesson, each run top to bottom in a fresh kernel.

    python benchmarks/notebooks.py            # all notebooks
    python benchmarks/notebooks.py 05 06      # the ones whose names start so

Peak memory is the kernel process's maximum resident set size (ru_maxrss), read by a cell appended
to an in-memory copy of the notebook (the files are not changed). The budget for the whole course is
180 s and 2 GiB on a 2-core machine. Writes benchmarks/notebooks.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
PEAK_CELL = "import resource; print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"


def run_notebook(path: Path, timeout: int = 600) -> dict:
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    peak_kb = int(text.split()[-1])
    return {"notebook": path.name, "seconds": round(seconds, 1), "peak_mib": round(peak_kb / 1024)}


def main(prefixes: list[str]) -> list[dict]:
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if prefixes:
        paths = [p for p in paths if any(p.name.startswith(x) for x in prefixes)]
    rows = []
    for path in paths:
        rows.append(run_notebook(path))
        print(f"{rows[-1]['notebook']:42s} {rows[-1]['seconds']:6.1f} s {rows[-1]['peak_mib']:6d} MiB", flush=True)
    total = sum(r["seconds"] for r in rows)
    peak = max((r["peak_mib"] for r in rows), default=0)
    print(f"{'total':42s} {total:6.1f} s {peak:6d} MiB (max)  budget: 180 s, 2048 MiB")
    if not prefixes:
        (ROOT / "benchmarks" / "notebooks.json").write_text(json.dumps(
            {"rows": rows, "total_s": round(total, 1), "peak_mib": peak}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])

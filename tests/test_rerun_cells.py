"""Running a cell a second time, as learners do (Shift-Enter twice, or going back one cell), changes nothing.

Each lesson below runs in a fresh kernel with every code cell executed twice in a row (cell k, cell k
again, then cell k + 1). No run may raise, and every cell nbval compares must print, both times, what
the stored lesson shows. A cell that draws from the global random generator without seeding itself, or
a training loop that continues from where its last run stopped, fails here (lessons 04, 05, 06 and 09
each had one). The lessons whose cells are quick run whole; the others up to the cells that once failed.
"""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
IGNORE = "# NBVAL_IGNORE_OUTPUT"
# lesson: id of the last code cell to run twice (None: the whole lesson); about 45 s in all on two cores
LESSONS = {"00": None, "01": None, "02": None, "03": None, "04": None,
           "05": "9434627a",    # row_stats on the batch of the gradient check
           "06": "10c864b8",    # the hand-written loop against train.train
           "09": "c8a77882"}    # the batch of lesson 04, under SigLIP's loss


def _sanitize_rules():
    lines = (ROOT / "tests" / "nbval_sanitize.cfg").read_text(encoding="utf-8").splitlines()
    regexes = [line.removeprefix("regex: ") for line in lines if line.startswith("regex: ")]
    replaces = [line.removeprefix("replace: ") for line in lines if line.startswith("replace: ")]
    return list(zip(regexes, replaces, strict=True))


def _text(outputs, rules):
    """What nbval compares: the streams (each one block, as stored) and the text of results, sanitized."""
    streams = {"stdout": "", "stderr": ""}
    data = []
    for out in outputs:
        if out["output_type"] == "stream":
            streams[out["name"]] += "".join(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            data += ["".join(out["data"][k]) for k in ("text/plain", "text/html") if k in out["data"]]
    text = "\n".join([streams["stdout"], streams["stderr"], *data])
    for regex, replace in rules:
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.slow
@pytest.mark.parametrize("lesson", sorted(LESSONS))
def test_every_cell_can_be_run_twice(lesson, tmp_path, monkeypatch):
    path = next((ROOT / "notebooks").glob(f"{lesson}_*.ipynb"))
    monkeypatch.setenv("CLIPCOURSE_RESULTS", str(tmp_path / "claims.json"))   # not the course's results file
    monkeypatch.setenv("PYTHONHASHSEED", "0")                                   # as tools/execute_notebooks.py
    nb = nbformat.read(path, as_version=4)
    rules = _sanitize_rules()
    stored = {cell.id: _text(cell.outputs, rules) for cell in nb.cells if cell.cell_type == "code"}
    nb.metadata.pop("widgets", None)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    problems = []
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            for run in ("first", "second"):
                cell.outputs = []
                client.execute_cell(cell, index)
                errors = [f"{o['ename']}: {o['evalue']}" for o in cell.outputs if o["output_type"] == "error"]
                if errors:
                    problems.append(f"cell {index} ({cell.id}), {run} run: {errors[0]}")
                elif IGNORE not in cell.source and _text(cell.outputs, rules) != stored[cell.id]:
                    problems.append(f"cell {index} ({cell.id}), {run} run, prints other than the stored lesson:\n"
                                    f"{_text(cell.outputs, rules)[:500]}\nstored:\n{stored[cell.id][:500]}")
            if problems or cell.id == LESSONS[lesson]:
                break
    assert not problems, f"{path.name}, every code cell run twice in a row:\n" + "\n".join(problems)

"""The lessons' solutions and the nbgrader classroom version (tools/classroom.py, classroom/solutions/).

* every exercise has a reference solution that changes only its TODO lines, and the lesson shows it in a
  collapsed "Show a solution" cell that says exactly what the solutions file says;
* the solved path: each lesson with every exercise solved runs top to bottom under strict nbval, every
  checker says ✅ Correct and every other cell prints what the stored (unsolved) lesson shows — so an
  exercise whose solution breaks a later cell (lesson 08's `ensemble` once shadowed a tensor) fails here;
* no exercise rebinds a name the lesson's own cells set and read elsewhere, so a learner who solves it and
  then runs an earlier cell again gets the lesson's value, not the exercise's (lesson 05's `tau` once did);
* the instructor guide's reading estimates are the lessons' own counts (`tools/classroom.py reading-times`),
  and the guide quotes each lesson's own estimate as the lesson states it;
* the nbgrader instructor version and its release say what notebooks/ says outside the solutions;
* the whole classroom cycle on lesson 04: instructor version, `nbgrader generate_assignment`, a right and
  a wrong submission, `nbgrader autograde`, their scores.
"""

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from markdown_tables import table_rows

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
INSERT = "python tools/classroom.py insert-solutions"


def _load_tool():
    spec = importlib.util.spec_from_file_location("classroom_tool", ROOT / "tools" / "classroom.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module            # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


classroom = _load_tool()
lesson_ids = dict(ids=lambda p: p.name[:2])


@pytest.mark.parametrize("path", NOTEBOOKS, **lesson_ids)
def test_every_exercise_has_a_solution_that_fills_only_its_todos(path):
    nb, exs, sols = classroom.exercises_of(path)          # raises ClassroomError, saying what does not fit
    assert exs, f"{path.name} has no exercise (a code cell with a TODO followed by its checker cell)"
    classroom.solved_notebook(nb, exs, sols, path.name)    # the checkers' stored outputs say "not attempted"


@pytest.mark.parametrize("path", NOTEBOOKS, **lesson_ids)
def test_the_lesson_shows_each_solution(path):
    nb, exs, _ = classroom.exercises_of(path)
    shown = classroom.reveal_cells(nb)
    missing = [e.id for e in exs if e.id not in shown]
    assert not missing, (f"{path.name} has no 'Show a solution' cell for {missing}; run `{INSERT}` (it only "
                         f"adds markdown cells, the lesson need not be executed again)")
    want = classroom.with_solutions_shown(nb, exs)
    assert nbformat.writes(want) == nbformat.writes(nb), (
        f"{path.name}: a 'Show a solution' cell is not where it belongs (right under its checker) or does not "
        f"say what classroom/solutions/lesson{path.name[:2]}.py says; run `{INSERT}`")


def test_reveal_cell_is_collapsed_markdown():
    e = classroom.Exercise("04", "check_clip_loss", 0, 1, solution="def f():\n    return 1")
    cell = classroom.reveal_cell(e)
    assert cell.cell_type == "markdown" and cell.metadata == {"clipcourse": {"solution_for": "lesson04.check_clip_loss"}}
    assert cell.source.startswith("<details><summary>") and cell.source.endswith("</details>")
    assert "```python\ndef f():\n    return 1\n```" in cell.source


def test_a_solution_may_not_touch_lines_without_a_todo():
    learner = "x = torch.ones(3)\n\nanswer = None  # TODO: the sum of x"
    assert classroom.instructor_cell(learner, "x = torch.ones(3)\n\nanswer = x.sum()") == (
        "x = torch.ones(3)\n\n# TODO: the sum of x\n### BEGIN SOLUTION\nanswer = x.sum()\n### END SOLUTION")
    with pytest.raises(classroom.ClassroomError, match="not its TODO lines"):
        classroom.solution_hunks(learner, "x = torch.zeros(3)\n\nanswer = x.sum()")
    with pytest.raises(classroom.ClassroomError, match="unchanged"):
        classroom.solution_hunks(learner, learner)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)


def _names(source: str) -> tuple[set[str], set[str]]:
    """The names a cell binds in the notebook's namespace (not inside a def or a comprehension), and the
    names it reads anywhere (a function reads its globals when it is called)."""
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    local = {id(n) for scope in ast.walk(tree) if isinstance(scope, _SCOPES)
             for n in ast.walk(scope) if n is not scope}
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
             and id(n) not in local}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
              and id(n) not in local}
    bound |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
              and id(n) not in local for a in n.names}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, ast.ExceptHandler) and n.name and id(n) not in local}
    bound |= {n.target.id for n in ast.walk(tree) if isinstance(n, ast.NamedExpr)}    # := binds outside a comprehension
    own = {id(n) for comp in ast.walk(tree) if isinstance(comp, _SCOPES[4:])          # a comprehension's loads
           for targets in [{t.id for g in comp.generators for t in ast.walk(g.target) if isinstance(t, ast.Name)}]
           for n in ast.walk(comp) if isinstance(n, ast.Name) and n.id in targets}  # of its own loop variables
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
            and id(n) not in own}
    read |= {n.target.id for n in ast.walk(tree) if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name)}
    return bound, read


def test_names_a_cell_binds_and_reads():
    bound, read = _names("x = [t * 2 for t in ts]\nfor k in ks: y = k\ndef f(a):\n    z = a + w\n    return z\n"
                         "import numpy as np\ntry:\n    pass\nexcept ValueError as err:\n    pass\n"
                         "n += 1\nif (m := 3): pass\n%matplotlib inline")
    assert bound == {"x", "k", "y", "f", "np", "err", "n", "m"}
    assert {"ts", "ks", "k", "w", "n"} <= read and "t" not in read   # a comprehension's own variable is no read


@pytest.mark.parametrize("path", NOTEBOOKS, **lesson_ids)
def test_no_exercise_rebinds_a_name_the_lesson_reads_elsewhere(path):
    """Re-running an earlier cell after solving an exercise works: the exercise (as set, and solved) binds no
    name that a teaching cell binds and another teaching cell reads without binding it itself, nor one that a
    teaching cell binds and the exercise's check reads (lesson 02's `scene` once was both the lesson's and
    the exercise's: re-running the lesson's cell made the check grade a right caption as wrong)."""
    nb, exs, _ = classroom.exercises_of(path)
    own = {i for e in exs for i in (e.cell, e.check_cell)}
    cells = {i: _names(c.source) for i, c in enumerate(nb.cells) if c.cell_type == "code" and i not in own}
    clashes = []
    for e in exs:
        checked = _names(nb.cells[e.check_cell].source)[1]          # what the exercise's check reads
        for name in sorted(_names(nb.cells[e.cell].source)[0] | _names(e.solution)[0]):
            setters = [i for i, (bound, _) in cells.items() if name in bound]
            readers = [i for i, (bound, read) in cells.items() if name in read and name not in bound]
            if setters and readers:
                clashes.append(f"{e.id} binds {name!r}, which cell(s) {setters} set and {readers} read")
            elif setters and name in checked:      # re-running a setter changes what the check grades against
                clashes.append(f"{e.id} binds {name!r}, which its check reads and cell(s) {setters} also set")
    assert not clashes, (f"{path.name}: after the exercise, running those cells again would use the exercise's "
                         f"value; give the exercise's variable a name of its own: " + "; ".join(clashes))


GUIDE = ROOT / "docs" / "instructor_guide.md"
OWN_ESTIMATE = re.compile(r"\*\*(?:Estimated time|Time):\*\* (?:about )?(\d+) minutes")


def test_the_guides_reading_estimates_are_the_lessons_counts():
    """Reading estimates go stale as lessons change (lesson 07's code lines once moved under a fixed guide):
    every lesson's row holds `reading-times`' count and the lesson's own estimate, the 00–08 total row their
    sums, and the pre-reading plan the 01–03 figures."""
    guide = GUIDE.read_text(encoding="utf-8")
    rows = {k: v for k, v in table_rows(guide, "reading estimate").items() if k != "all"}
    assert sorted(rows) == [classroom.lesson_of(p) for p in NOTEBOOKS], sorted(rows)
    counts, own, stale = {}, {}, []
    for path in NOTEBOOKS:
        lesson = classroom.lesson_of(path)
        counts[lesson] = classroom.reading(path)
        stated = OWN_ESTIMATE.search(nbformat.read(path, as_version=4).cells[0].source)
        assert stated, f"{path.name}: the first cell states no '**Time:** about N minutes'"
        own[lesson] = int(stated.group(1))
        row = rows[lesson]
        estimate = next(v for k, v in row.items() if k.startswith("reading estimate"))
        if not estimate.startswith(counts[lesson].guide_cell()):
            stale.append(f"{lesson}: guide {estimate!r}, count {counts[lesson].guide_cell()!r}")
        quoted = row["lesson's own estimate"]
        if quoted != f"{own[lesson]} min":
            stale.append(f"{lesson}: guide quotes {quoted!r}, lesson says {own[lesson]} min")
    first = [k for k in counts if k <= "08"]
    total_reading = round(sum(counts[k].minutes for k in first))
    total_row = re.search(r"^\| \*\*all \(00–08\)\*\* \|.*\| \*\*(\d+) min\*\* \| \*\*≈ (\d+) min\*\* \|$", guide,
                          re.M)
    assert total_row, "the guide's 'all (00–08)' row with the two time totals is missing"
    if (int(total_row.group(1)), int(total_row.group(2))) != (sum(own[k] for k in first), total_reading):
        stale.append(f"total row: {total_row.group(1)} / ≈ {total_row.group(2)} min, counts "
                     f"{sum(own[k] for k in first)} / ≈ {total_reading} min")
    pre = " + ".join(str(round(counts[k].minutes)) for k in ("01", "02", "03"))
    if f"({pre} min)" not in guide:
        stale.append(f"the pre-reading plan should quote lessons 01–03 as ({pre} min)")
    assert not stale, ("docs/instructor_guide.md is stale (`python tools/classroom.py reading-times` gives the "
                       "counts): " + "; ".join(stale))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, **lesson_ids)
def test_solved_path_under_strict_nbval(path, tmp_path):
    """Issue 10.1 / 11.2: the lesson with every exercise solved, every later cell run, under strict nbval."""
    nb, exs, sols = classroom.exercises_of(path)
    solved = tmp_path / path.name
    nbformat.write(classroom.solved_notebook(nb, exs, sols, path.name), solved)
    sanitize = tmp_path / "solved_sanitize.cfg"
    sanitize.write_text((ROOT / "tests" / "nbval_sanitize.cfg").read_text(encoding="utf-8") + "\n"
                        + classroom.SOLVED_SANITIZE, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")    # not the course's settings
    env = {**os.environ, "CLIPCOURSE_ROOT": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "pytest", str(solved), "--nbval", "--nbval-current-env",
                          "--nbval-sanitize-with", str(sanitize), "-p", "no:cacheprovider", "-q",
                          "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, (f"{path.name} with its exercises solved ({[e.id for e in exs]}) fails under "
                                 f"strict nbval:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}")
    assert " passed" in run.stdout and " failed" not in run.stdout, run.stdout[-2000:]


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_instructor_version_and_release_match_the_lessons(tmp_path):
    """The instructor version is generated from notebooks/ + the solutions; nbgrader's release of it says
    what notebooks/ says, with each solution turned into a stub under its TODO and no hidden test left."""
    written = classroom.write_source(tmp_path, NOTEBOOKS)
    assert [p.parent.name for p in written] == [f"lesson{p.name[:2]}" for p in NOTEBOOKS]
    classroom.generate_release(tmp_path, [p.parent.name for p in written])
    for path in NOTEBOOKS:
        learner, exs, _ = classroom.exercises_of(path)
        source = nbformat.read(tmp_path / "source" / f"lesson{path.name[:2]}" / path.name, as_version=4)
        release = nbformat.read(tmp_path / "release" / f"lesson{path.name[:2]}" / path.name, as_version=4)
        shown = set(classroom.reveal_cells(learner).values())
        learner_cells = [c for i, c in enumerate(learner.cells) if i not in shown]
        assert not classroom.reveal_cells(source) and not classroom.reveal_cells(release)
        assert [c.cell_type for c in release.cells] == [c.cell_type for c in learner_cells]
        by_source = {id(learner.cells[e.cell]): e for e in exs}
        checks = {id(learner.cells[e.check_cell]) for e in exs}
        for k, (mine, theirs, src) in enumerate(zip(learner_cells, release.cells, source.cells)):
            where = f"{path.name}, cell {k}"
            if id(mine) in by_source:
                e = by_source[id(mine)]
                assert "### BEGIN SOLUTION" in src.source and src.metadata.nbgrader["solution"], where
                assert theirs.source == classroom.release_cell(mine.source, e.solution), where
                assert theirs.metadata.nbgrader["grade_id"] == "answer_" + e.checker.removeprefix("check_")
            elif id(mine) in checks:
                assert "### BEGIN HIDDEN TESTS" in src.source and src.metadata.nbgrader["grade"], where
                assert theirs.source == mine.source, where
                assert theirs.metadata.nbgrader["points"] == classroom.POINTS, where
            else:
                assert theirs.source == mine.source, where
                assert "nbgrader" not in src.metadata, where
        text = nbformat.writes(release)
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "Show a solution"):
            assert marker not in text, f"{path.name}: the release contains {marker!r}"
        assert all(not c.outputs for c in _code(release)), f"{path.name}: the release keeps outputs"


@pytest.mark.slow
def test_nbgrader_cycle_on_lesson_04(tmp_path):
    """generate_assignment, a wrong and a right submission, autograde, the scores (all with nbgrader's CLI)."""
    path = next(p for p in NOTEBOOKS if p.name.startswith("04_"))
    _, exs, _ = classroom.exercises_of(path)
    classroom.write_source(tmp_path, [path])
    env = {**os.environ, "CLIPCOURSE_ROOT": str(ROOT)}

    def nbgrader(*args):
        run = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, f"nbgrader {' '.join(args)}:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"

    nbgrader("generate_assignment", "lesson04", "--force")
    release = tmp_path / "release" / "lesson04" / path.name
    stub = classroom.CODE_STUB.split("\n")[-1]
    wrong_body = ("    logits = image_features @ text_features.T     # forgot / temperature\n"
                  "    labels = torch.arange(len(logits))\n"
                  "    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2")
    for student, solved in (("right", True), ("wrong", False)):
        nb = nbformat.read(release, as_version=4)
        cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
        assert len(cells) == len(exs) == 1 and stub in cells[0].source
        # the right learner pasted the revealed solution over the cell; the wrong one forgot to divide by τ
        cells[0].source = exs[0].solution if solved else cells[0].source.replace(
            cells[0].source[cells[0].source.index("    # YOUR CODE HERE"):], wrong_body)
        (tmp_path / "submitted" / student / "lesson04").mkdir(parents=True)
        nbformat.write(nb, tmp_path / "submitted" / student / "lesson04" / path.name)
    nbgrader("autograde", "lesson04")

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        scores = {s: (gb.find_submission("lesson04", s).score, gb.find_submission("lesson04", s).max_score)
                  for s in ("right", "wrong")}
    assert scores == {"right": (1.0, 1.0), "wrong": (0.0, 1.0)}, scores
    graded = nbformat.read(tmp_path / "autograded" / "wrong" / "lesson04" / path.name, as_version=4)
    errors = [o for c in _code(graded) for o in c.outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "AssertionError", errors       # the hidden test, nothing else
    assert "the checker does not say ✅ Correct: ❌ Not yet" in errors[0].evalue, errors[0].evalue

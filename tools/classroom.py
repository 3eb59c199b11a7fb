"""The lessons' reference solutions, the solved path, and the nbgrader classroom version.

    python tools/classroom.py insert-solutions                  # the "Show a solution" cells in notebooks/
    python tools/classroom.py solved --output-dir /tmp/solved   # lessons with every exercise solved
    python tools/classroom.py source                            # nbgrader instructor version in classroom/
    python tools/classroom.py release                           # ... and the learners' release (nbgrader)
    python tools/classroom.py reading-times                     # the instructor guide's reading estimates

One source of truth each: `notebooks/` holds the learner's version (every exercise `answer = None  # TODO`,
runs top to bottom), `classroom/solutions/lessonNN.py` the reference solutions. A solutions file is a list
of sections `# %% check_<name>`, each the exercise cell whose checker is `exercises.lessonNN.check_<name>`,
with the solution in place of the lines that hold a TODO (nothing else may differ). A section
`# %% output of the cell containing "<text>"` gives, as comment lines, what a later cell prints once the
exercise is solved (when that differs from its stored output).

Everything else is generated from those two and checked by tests/test_classroom.py:

* insert-solutions: after each checker cell, a collapsed markdown cell ("Show a solution (try first!)")
  holding the solved exercise cell, tagged `{"clipcourse": {"solution_for": "lessonNN.check_<name>"}}`.
  Markdown only: the lesson need not be executed again.
* solved: copies of the lessons with every exercise cell replaced by its solution, stored outputs kept
  except the checkers' (expected: "✅ Correct.") and the declared later outputs, for strict nbval with the
  extra sanitize rule SOLVED_SANITIZE (the text after "✅ Correct." is the checker's own business).
* source: an nbgrader course directory (nbgrader_config.py, source/lessonNN/<lesson>.ipynb): each exercise
  cell a solution cell whose solution sits between `### BEGIN SOLUTION` / `### END SOLUTION` under its TODO,
  each checker cell a graded, locked test cell (1 point) whose hidden test asserts the checker says
  ✅ Correct; the "Show a solution" cells left out and outputs cleared.
* release: `nbgrader generate_assignment` for each lesson: release/lessonNN/<lesson>.ipynb, where each
  solution region became a `raise NotImplementedError(...)` stub under its TODO and the hidden tests are gone.
  Learners' copies come back in submitted/<student>/lessonNN/; `nbgrader autograde lessonNN` grades them.
* reading-times: each lesson's reading estimate, as docs/instructor_guide.md quotes it (a test keeps the two
  equal): prose words at WORDS_PER_MINUTE, code lines at CODE_LINES_PER_MINUTE, plus fixed minutes per graded
  exercise and per prediction.
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
SOLUTIONS_DIR = ROOT / "classroom" / "solutions"
COURSE_DIR = ROOT / "classroom"

PREDICTION = "prediction = None  # TODO"   # predict, then run (exercises.predictions): compared, not graded
CHECK_CALL = re.compile(r"^exercises\.lesson(\d\d)\.(check_\w+)\(")
SECTION = re.compile(r"^# %% (.+)$")
OUTPUT_SECTION = re.compile(r'^output of the cell containing "(.+)"$')
NOT_ATTEMPTED = re.compile(r"⏳ Not attempted yet\.[\s\S]*")
CORRECT = "✅ Correct."
# added to the course's nbval sanitize rules for the solved lessons: a checker's verdict is compared, its
# explanation (which may quote the answer) is not
SOLVED_SANITIZE = "[checker verdict]\nregex: ✅ Correct\\.[\\s\\S]*\nreplace: ✅ Correct.\n"
POINTS = 1
CODE_STUB = ('# YOUR CODE HERE (the TODO above says what; the check below says when it is right)\n'
             'raise NotImplementedError("replace this line with your code")')
NBGRADER_CONFIG = f'''\
"""nbgrader configuration of the clipcourse classroom, written by tools/classroom.py."""

c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "clipcourse"
c.ClearSolutions.code_stub = {{"python": {CODE_STUB!r}}}
c.Execute.timeout = 900              # seconds per cell while autograding (nbgrader's default is 30 s)
'''


class ClassroomError(Exception):
    """The lessons and the solutions files do not fit together; the message says how."""


@dataclass
class Exercise:
    lesson: str                 # "04"
    checker: str                # "check_clip_loss"
    cell: int                   # index of the exercise cell (the code cell with the TODO) in nb.cells
    check_cell: int             # index of the checker cell
    solution: str = ""          # the exercise cell with the solution in place

    @property
    def id(self) -> str:
        return f"lesson{self.lesson}.{self.checker}"


@dataclass
class Solutions:
    cells: dict[str, str] = field(default_factory=dict)       # checker -> solved exercise cell
    outputs: dict[str, str] = field(default_factory=dict)     # text in a later cell -> what it prints solved


def lesson_of(path: Path) -> str:
    return path.name[:2]


def lesson_paths(names: list[str] | None = None) -> list[Path]:
    """The lessons named (by path or by number, "04"), or all of notebooks/NN_*.ipynb."""
    if not names:
        return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    out = []
    for name in names:
        path = Path(name)
        if not path.suffix:
            found = sorted(NOTEBOOKS_DIR.glob(f"{name.zfill(2)}_*.ipynb"))
            if len(found) != 1:
                raise ClassroomError(f"no single lesson {name!r} in {NOTEBOOKS_DIR}")
            path = found[0]
        out.append(path)
    return out


def read_solutions(lesson: str, solutions_dir: Path = SOLUTIONS_DIR) -> Solutions:
    """Parse classroom/solutions/lessonNN.py (the module docstring gives the format)."""
    path = solutions_dir / f"lesson{lesson}.py"
    if not path.is_file():
        raise ClassroomError(f"{path} is missing: every lesson with an exercise needs its reference solutions")
    sols, name, lines = Solutions(), None, []

    def close():
        if name is None:
            return
        text = "\n".join(lines).strip("\n")
        match = OUTPUT_SECTION.match(name)
        if match:
            body = [re.sub(r"^# ?", "", line) for line in text.splitlines()]
            sols.outputs[match.group(1)] = "\n".join(body) + "\n"
        elif re.fullmatch(r"check_\w+", name):
            if name in sols.cells:
                raise ClassroomError(f"{path}: two sections for {name}")
            sols.cells[name] = text
        else:
            raise ClassroomError(f"{path}: section '# %% {name}' is neither a checker name nor "
                                 f'\'output of the cell containing "..."\'')

    for line in path.read_text(encoding="utf-8").splitlines():
        match = SECTION.match(line)
        if match:
            close()
            name, lines = match.group(1).strip(), []
        elif name is not None:
            lines.append(line)
    close()
    return sols


def find_exercises(nb: nbformat.NotebookNode, lesson: str) -> list[Exercise]:
    """Each code cell holding a TODO, with the checker cell that must follow it."""
    found = []
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    for k, i in enumerate(code):
        if "TODO" not in nb.cells[i].source or nb.cells[i].source.startswith(PREDICTION):
            continue                          # a predict-then-run cell is not graded: it has no right answer
        nxt = code[k + 1] if k + 1 < len(code) else None
        match = CHECK_CALL.match(nb.cells[nxt].source.strip()) if nxt is not None else None
        if not match or match.group(1) != lesson:
            raise ClassroomError(f"lesson {lesson}: the exercise cell\n{nb.cells[i].source}\nis not followed by a "
                                 f"code cell calling exercises.lesson{lesson}.check_...(...)")
        found.append(Exercise(lesson, match.group(2), i, nxt))
    return found


def exercises_of(path: Path, solutions_dir: Path = SOLUTIONS_DIR) -> tuple[nbformat.NotebookNode, list[Exercise],
                                                                          Solutions]:
    """A lesson, its exercises with their solutions, and the solutions file; raise if they do not fit."""
    nb = nbformat.read(path, as_version=4)
    lesson = lesson_of(path)
    exs = find_exercises(nb, lesson)
    if not exs:
        return nb, exs, Solutions()
    sols = read_solutions(lesson, solutions_dir)
    names = [e.checker for e in exs]
    missing = [n for n in names if n not in sols.cells]
    extra = [n for n in sols.cells if n not in names]
    if missing or extra or len(set(names)) != len(names):
        raise ClassroomError(f"lesson {lesson}: exercises in {path.name}: {names}; solutions in "
                             f"{solutions_dir / f'lesson{lesson}.py'}: {list(sols.cells)} (missing {missing}, "
                             f"no exercise for {extra})")
    for e in exs:
        e.solution = sols.cells[e.checker]
        solution_hunks(nb.cells[e.cell].source, e.solution, e.id)    # raises if it changes more than the TODOs
    return nb, exs, sols


# ------------------------------------------------------------------------------------- reading estimates

WORDS_PER_MINUTE = 150          # prose, the "Show a solution" cells left out
CODE_LINES_PER_MINUTE = 15      # non-blank, non-comment code lines: about 4 s a line to read
MINUTES_PER_EXERCISE = 5        # a graded exercise (a TODO cell with its checker)
MINUTES_PER_PREDICTION = 2      # a predict-then-run cell


@dataclass
class Reading:
    """What a learner reads and does in one lesson; `minutes` is the guide's estimate."""
    words: int
    code_lines: int
    exercises: int
    predictions: int

    @property
    def minutes(self) -> float:
        return (self.words / WORDS_PER_MINUTE + self.code_lines / CODE_LINES_PER_MINUTE
                + MINUTES_PER_EXERCISE * self.exercises + MINUTES_PER_PREDICTION * self.predictions)

    def guide_cell(self) -> str:
        """The estimate as the guide's tables write it: '≈ 20 min (1,676 w, 54 l, 1 ex)'."""
        parts = [f"{self.words:,} w", f"{self.code_lines} l", f"{self.exercises} ex"]
        if self.predictions:
            parts.append(f"{self.predictions} pred")
        return f"≈ {round(self.minutes)} min ({', '.join(parts)})"


def reading(path: Path) -> Reading:
    """Count a lesson's prose words, code lines, graded exercises and predictions."""
    nb, exs, _ = exercises_of(path)
    words = code_lines = predictions = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            if not cell.metadata.get("clipcourse", {}).get("solution_for"):
                words += len(re.findall(r"\S+", cell.source))
        elif cell.cell_type == "code":
            predictions += cell.source.startswith(PREDICTION)
            code_lines += sum(1 for line in cell.source.splitlines()
                              if line.strip() and not line.strip().startswith("#"))
    return Reading(words, code_lines, len(exs), predictions)


# ---------------------------------------------------------------------------------------------- the diff


def solution_hunks(learner: str, solved: str, what: str = "") -> list[tuple[int, int, list[str]]]:
    """Where the solved cell differs from the learner's: (first line, end line, new lines) of the learner
    cell, each hunk replacing lines that hold a TODO (with `return None` and blank lines beside them)."""
    old, new = learner.splitlines(), solved.splitlines()
    hunks = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        replaced = old[i1:i2]
        todo = [line for line in replaced if "TODO" in line]
        others = [line for line in replaced if "TODO" not in line and line.strip() not in ("", "return None")]
        if not todo or others:
            raise ClassroomError(
                f"{what}: the solution changes lines of the exercise cell that are not its TODO lines:\n"
                + "\n".join(f"- {line}" for line in replaced) + "\n" + "\n".join(f"+ {line}" for line in new[j1:j2])
                + "\n(edit the solutions file so that it repeats the exercise cell as the lesson has it)")
        hunks.append((i1, i2, new[j1:j2]))
    if not hunks:
        raise ClassroomError(f"{what}: the solution is the exercise cell unchanged")
    return hunks


def _todo_comments(lines: list[str]) -> list[str]:
    return [line[line.index("#"):] for line in lines if "# TODO" in line]


def _indent(lines: list[str]) -> str:
    first = next((line for line in lines if line.strip()), "")
    return first[:len(first) - len(first.lstrip())]


def instructor_cell(learner: str, solved: str, what: str = "") -> str:
    """The exercise cell for nbgrader: each TODO kept as a comment, the solution under it between
    ### BEGIN SOLUTION and ### END SOLUTION."""
    old, out, pos = learner.splitlines(), [], 0
    for i1, i2, new in solution_hunks(learner, solved, what):
        out += old[pos:i1]
        indent = _indent(old[i1:i2])
        out += [indent + c for c in _todo_comments(old[i1:i2])]
        out += [indent + "### BEGIN SOLUTION", *new, indent + "### END SOLUTION"]
        pos = i2
    return "\n".join(out + old[pos:])


def release_cell(learner: str, solved: str, code_stub: str = CODE_STUB) -> str:
    """What `nbgrader generate_assignment` must make of the exercise cell: each TODO kept, the stub under it."""
    old, out, pos = learner.splitlines(), [], 0
    for i1, i2, _ in solution_hunks(learner, solved):
        out += old[pos:i1]
        indent = _indent(old[i1:i2])
        out += [indent + c for c in _todo_comments(old[i1:i2])]
        out += [indent + line for line in code_stub.split("\n")]
        pos = i2
    return "\n".join(out + old[pos:])


def graded_check_cell(source: str, what: str = "") -> str:
    """The checker cell for nbgrader: a hidden test asserting the checker says ✅, then the cell itself."""
    try:
        body = ast.parse(source).body
    except SyntaxError as err:
        raise ClassroomError(f"{what}: the checker cell does not parse: {err}") from err
    if len(body) != 1 or not isinstance(body[0], ast.Expr):
        raise ClassroomError(f"{what}: the checker cell must be the one call exercises.lessonNN.check_...(...)")
    call = source.strip()
    return ("### BEGIN HIDDEN TESTS\n"
            f"_feedback = {call}\n"
            "assert _feedback, f\"autograder: the checker does not say ✅ Correct: {_feedback}\"\n"
            "### END HIDDEN TESTS\n"
            f"{call}")


# ---------------------------------------------------------------------------------------------- the notebooks


def reveal_cell(e: Exercise) -> nbformat.NotebookNode:
    """The collapsed "Show a solution" markdown cell for an exercise."""
    fence = "```"
    source = ("<details><summary>Show a solution (try first!)</summary>\n\n"
              f"{fence}python\n{e.solution}\n{fence}\n\n"
              "Paste it over the exercise cell, run it, then run the check again.\n\n</details>")
    cell = nbformat.v4.new_markdown_cell(source, metadata={"clipcourse": {"solution_for": e.id}})
    cell.id = f"solution-{e.lesson}-{e.checker.removeprefix('check_')}"[:64].replace("_", "-")
    return cell


def reveal_cells(nb: nbformat.NotebookNode) -> dict[str, int]:
    """The "Show a solution" cells in a notebook: exercise id -> cell index."""
    return {c.metadata["clipcourse"]["solution_for"]: i for i, c in enumerate(nb.cells)
            if c.metadata.get("clipcourse", {}).get("solution_for")}


def with_solutions_shown(nb: nbformat.NotebookNode, exs: list[Exercise]) -> nbformat.NotebookNode:
    """The notebook with one up-to-date "Show a solution" cell right under each checker (others removed)."""
    nb = copy.deepcopy(nb)
    ids = {e.id for e in exs}
    keep = [c for c in nb.cells if c.metadata.get("clipcourse", {}).get("solution_for") is None]
    stale = [c.metadata["clipcourse"]["solution_for"] for c in nb.cells
             if c.metadata.get("clipcourse", {}).get("solution_for") not in (None, *ids)]
    if stale:
        print(f"removing solution cells for exercises that are gone: {stale}", file=sys.stderr)
    checks = {id(nb.cells[e.check_cell]): e for e in exs}
    cells = []
    for c in keep:
        cells.append(c)
        if id(c) in checks:
            cells.append(reveal_cell(checks[id(c)]))
    nb.cells = cells
    return nb


def solved_notebook(nb: nbformat.NotebookNode, exs: list[Exercise], sols: Solutions,
                    what: str = "") -> nbformat.NotebookNode:
    """The lesson with every exercise solved, its stored outputs as expected of a solved run."""
    nb = copy.deepcopy(nb)
    for e in exs:
        nb.cells[e.cell].source = e.solution
        check = nb.cells[e.check_cell]
        texts = [o for o in check.outputs if NOT_ATTEMPTED.search(_output_text(o))]
        if len(texts) != 1:
            raise ClassroomError(f"{e.id}: the stored output of the checker cell should say '⏳ Not attempted "
                                 f"yet' once (the lesson is stored unsolved); it is {check.outputs!r}")
        _set_output_text(texts[0], NOT_ATTEMPTED.sub(CORRECT, _output_text(texts[0])))
    for needle, printed in sols.outputs.items():
        hits = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
        if len(hits) != 1:
            raise ClassroomError(f"{what}: {len(hits)} code cells contain {needle!r} (the solutions file "
                                 f"declares what that cell prints once solved); expected exactly one")
        hits[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
    return nb


def _output_text(output) -> str:
    if "text" in output:
        return "".join(output["text"])
    return "".join(output.get("data", {}).get("text/plain", ""))


def _set_output_text(output, text: str) -> None:
    if "text" in output:
        output["text"] = text
    else:
        output["data"]["text/plain"] = text


def instructor_notebook(nb: nbformat.NotebookNode, exs: list[Exercise]) -> nbformat.NotebookNode:
    """The nbgrader source version: solution cells, graded test cells, no reveal cells, no outputs."""
    nb = copy.deepcopy(nb)
    for e in exs:
        cell = nb.cells[e.cell]
        cell.source = instructor_cell(cell.source, e.solution, e.id)
        cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "task": False,
                                     "grade_id": "answer_" + e.checker.removeprefix("check_"), "schema_version": 3}
        check = nb.cells[e.check_cell]
        check.source = graded_check_cell(check.source, e.id)
        check.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "task": False,
                                      "points": POINTS, "grade_id": e.checker, "schema_version": 3}
    nb.cells = [c for c in nb.cells if not c.metadata.get("clipcourse", {}).get("solution_for")]
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nb.metadata.pop("widgets", None)
    return nb


def assignment_name(path: Path) -> str:
    return f"lesson{lesson_of(path)}"


def write_source(course_dir: Path, paths: list[Path], solutions_dir: Path = SOLUTIONS_DIR) -> list[Path]:
    """Write nbgrader_config.py and source/lessonNN/<lesson>.ipynb for each lesson with exercises."""
    course_dir.mkdir(parents=True, exist_ok=True)
    (course_dir / "nbgrader_config.py").write_text(NBGRADER_CONFIG, encoding="utf-8")
    written = []
    for path in paths:
        nb, exs, _ = exercises_of(path, solutions_dir)
        if not exs:
            continue
        out = course_dir / "source" / assignment_name(path) / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        source = instructor_notebook(nb, exs)
        nbformat.validate(source)
        nbformat.write(source, out)
        written.append(out)
    return written


def generate_release(course_dir: Path, assignments: list[str]) -> None:
    """`nbgrader generate_assignment` for each lesson, in this process, with the course's nbgrader_config.py."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config()
    config.CourseDirectory.root = str(course_dir.resolve())
    api = NbGraderAPI(config=config)
    for name in assignments:
        result = api.generate_assignment(name, force=True)
        if not result["success"]:
            raise ClassroomError(f"nbgrader generate_assignment {name} failed:\n{result.get('error', '')}\n"
                                 f"{result.get('log', '')}")


# ---------------------------------------------------------------------------------------------- the commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = {}
    cmd["insert"] = sub.add_parser("insert-solutions", help="write the 'Show a solution' cells into the lessons")
    cmd["solved"] = sub.add_parser("solved", help="write solved copies of the lessons (for nbval)")
    cmd["solved"].add_argument("--output-dir", type=Path, required=True)
    cmd["source"] = sub.add_parser("source", help="write the nbgrader instructor version")
    cmd["release"] = sub.add_parser("release", help="the instructor version, then nbgrader generate_assignment")
    for name in ("source", "release"):
        cmd[name].add_argument("--course-dir", type=Path, default=COURSE_DIR,
                               help=f"the nbgrader course directory (default {COURSE_DIR})")
    cmd["reading"] = sub.add_parser("reading-times", help="print each lesson's reading estimate, as the guide has it")
    for p in cmd.values():
        p.add_argument("lessons", nargs="*", help="lesson numbers (04) or notebook paths; default: every lesson")
    args = parser.parse_args(argv)
    try:
        paths = lesson_paths(args.lessons)
        if args.command == "insert-solutions":
            for path in paths:
                nb, exs, _ = exercises_of(path)
                new = with_solutions_shown(nb, exs)
                if nbformat.writes(new) != nbformat.writes(nb):
                    nbformat.validate(new)
                    nbformat.write(new, path)
                    print(f"{path.name}: {len(exs)} solution cell(s) written")
                else:
                    print(f"{path.name}: up to date")
        elif args.command == "reading-times":
            total = 0.0
            for path in paths:
                r = reading(path)
                total += r.minutes
                print(f"{lesson_of(path)}  {r.guide_cell()}")
            print(f"all  ≈ {round(total)} min")
        elif args.command == "solved":
            args.output_dir.mkdir(parents=True, exist_ok=True)
            for path in paths:
                nb, exs, sols = exercises_of(path)
                nbformat.write(solved_notebook(nb, exs, sols, path.name), args.output_dir / path.name)
            (args.output_dir / "solved_sanitize.cfg").write_text(
                (ROOT / "tests" / "nbval_sanitize.cfg").read_text(encoding="utf-8") + "\n" + SOLVED_SANITIZE,
                encoding="utf-8")
            print(f"{len(paths)} solved lessons in {args.output_dir}; run them with\n  python -m pytest "
                  f"{args.output_dir} --nbval --nbval-current-env --nbval-sanitize-with "
                  f"{args.output_dir / 'solved_sanitize.cfg'} -p no:cacheprovider")
        else:
            written = write_source(args.course_dir, paths)
            for out in written:
                print(f"instructor version: {out}")
            if args.command == "release":
                generate_release(args.course_dir, [p.parent.name for p in written])
                print(f"learner release in {args.course_dir / 'release'}")
    except ClassroomError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

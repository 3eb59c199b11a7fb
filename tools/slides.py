"""Lecture slide decks (reveal.js) made from the stored lessons, with nbconvert.

    python tools/slides.py                                     # every lesson -> docs/slides/NN_<name>.slides.html
    python tools/slides.py notebooks/04_the_contrastive_loss.ipynb --output-dir /tmp/slides
    python tools/slides.py --reveal-dir node_modules/reveal.js # copy a local reveal.js beside the decks

One source of truth: the decks are made from `notebooks/` as stored (prose, figures and printed results of
the last validated run); no lesson is executed and no notebook is changed. The slide structure is set on a
copy in memory, as `slideshow.slide_type` metadata, by one rule:

* a `#` or `##` heading starts a slide, a `###` heading a sub-slide (reveal.js: "down"). A markdown cell
  holding a heading further down is split there first;
* prose (markdown) is kept; code cells keep their outputs (figures, printed numbers, verdicts) but not their
  code, except short code (at most SHORT_CODE_LINES lines, no figure: plotting code is not the point) under a
  "by hand" heading, which is the lecture's derivation; code shown there leaves out its `exercises.expect(...)`
  guards. Code cells without outputs (imports, setup) are left out;
* left out entirely, so that they are not even in the HTML: the "Show a solution" cells (metadata
  `{"clipcourse": {"solution_for": ...}}`), every code cell holding a TODO or using `exercises.` for anything
  but `exercises.expect(` (exercise cells, checkers `exercises.lessonNN.check_...`, prediction prompts and
  their feedback `exercises.predictions...`), and, under an "Exercise" heading, everything but the heading's
  own cell (the exercise's statement). A results cell that ends with `exercises.expect(...)` guards (a check
  that a trained model's numbers hold on any computer, silent when they do) is a results cell: it is kept.

The decks are nbconvert's reveal.js slides (`SlidesExporter`) with a small template of our own
(tools/slides_templates/clipcourse_reveal) that loads reveal.js with plain <script> tags instead of
require.js and jQuery from a CDN. reveal.js itself is not bundled with nbconvert or any installed package:

* `--reveal-dir DIR` (an unpacked reveal.js 4 or 5 package: `npm pack reveal.js@4` and untar it, or
  `npm install reveal.js@4`) copies what the decks need into `<output-dir>/reveal.js/` and points the decks
  there: they then present fully offline;
* otherwise the decks load reveal.js from `--reveal-prefix` (default: nbconvert's own, a CDN). Without
  network the deck still opens as a readable page, one slide after the other, that prints one slide per page.

Formulas are typeset by MathJax from nbconvert's CDN default (`--mathjax-url` to change it); offline they
show as their TeX source.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
TEMPLATES = Path(__file__).resolve().parent / "slides_templates"
TEMPLATE_NAME = "clipcourse_reveal"
DEFAULT_OUTPUT = REPO / "docs" / "slides"
# nbconvert's own default (SlidesExporter's template); used only when no local reveal.js is given.
CDN_REVEAL_PREFIX = "https://unpkg.com/reveal.js@4.0.2"
LOCAL_REVEAL = "reveal.js"
SHORT_CODE_LINES = 12
HIDE_INPUT_TAG = "clipcourse-slides-hide-input"

_HEADING = re.compile(r"^(#{1,3}) +(\S.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_EXPECT = re.compile(r"\bexercises\.expect\(")


class SlidesError(Exception):
    """A lesson or a reveal.js folder that cannot be used; the message says why."""


def _split_at_headings(source: str) -> list[str]:
    """A markdown cell's source cut before each `#`/`##`/`###` heading line (not inside code fences)."""
    pieces: list[list[str]] = [[]]
    in_fence = False
    for line in source.splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence and _HEADING.match(line) and any(s.strip() for s in pieces[-1]):
            pieces.append([])
        pieces[-1].append(line)
    return ["".join(p).strip("\n") for p in pieces if "".join(p).strip()]


def _heading(source: str) -> tuple[int, str] | None:
    """(level, text) of the heading a markdown piece starts with, or None."""
    first = source.lstrip("\n").split("\n", 1)[0]
    m = _HEADING.match(first)
    return (len(m.group(1)), m.group(2).strip()) if m else None


def _is_solution(cell) -> bool:
    return "solution_for" in (cell.get("metadata", {}).get("clipcourse") or {})


def _is_exercise_code(cell) -> bool:
    """An exercise, checker or prediction cell: a TODO, or `exercises.` used for anything but `expect(`."""
    source = _EXPECT.sub("", cell.source)
    return "TODO" in source or "exercises." in source


def _is_expect(node) -> bool:
    """Is this statement a bare `exercises.expect(...)` call?"""
    call = node.value if isinstance(node, ast.Expr) else None
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "expect"
            and isinstance(call.func.value, ast.Name) and call.func.value.id == "exercises")


def _without_expect(source: str) -> str:
    """The code with its `exercises.expect(...)` statements left out, for showing on a slide.

    A statement is left out only where others remain in its block (the code shown still reads as Python);
    code that does not parse (IPython magics) is returned as it is."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    drop: set[int] = set()
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list) or not block or not isinstance(block[0], ast.stmt):
                continue
            if all(_is_expect(stmt) for stmt in block):
                continue
            for stmt in block:
                if _is_expect(stmt):
                    drop.update(range(stmt.lineno - 1, stmt.end_lineno))
    if not drop:
        return source
    return "\n".join(line for k, line in enumerate(source.splitlines()) if k not in drop).rstrip("\n")


def lecture_notebook(nb):
    """A copy of `nb` with only the lecture's cells, each with `slideshow.slide_type` set (see the module doc)."""
    import nbformat

    deck = copy.deepcopy(nb)
    cells = []
    # per heading level 1..3: is it an "Exercise" heading, is it a "by hand" heading
    exercise = {1: False, 2: False, 3: False}
    by_hand = {1: False, 2: False, 3: False}
    for cell in deck.cells:
        if _is_solution(cell):
            continue
        if cell.cell_type == "markdown":
            for piece in _split_at_headings(cell.source):
                head = _heading(piece)
                in_exercise = any(exercise.values())
                if head:
                    level, text = head
                    for deeper in range(level, 4):
                        exercise[deeper] = by_hand[deeper] = False
                    exercise[level] = text.lower().startswith("exercise")
                    by_hand[level] = "by hand" in text.lower()
                    slide_type = "subslide" if level == 3 else "slide"
                elif in_exercise:
                    continue  # the exercise's discussion after its statement: not for the lecture
                else:
                    slide_type = "-"
                new = nbformat.v4.new_markdown_cell(piece)
                new.metadata["slideshow"] = {"slide_type": slide_type}
                if cell.get("attachments"):
                    new["attachments"] = cell["attachments"]
                cells.append(new)
        elif cell.cell_type == "code":
            if any(exercise.values()) or _is_exercise_code(cell) or not cell.get("outputs"):
                continue
            shown = _without_expect(cell.source)
            lines = [line for line in shown.splitlines() if line.strip()]
            figure = any("image/png" in out.get("data", {}) for out in cell.outputs)
            show_code = (
                any(by_hand.values())
                and not figure
                and len(lines) <= SHORT_CODE_LINES
                and not any(line.lstrip().startswith(("%", "!")) for line in lines)
            )
            cell.metadata = {"slideshow": {"slide_type": "-"}}
            if show_code:
                cell.source = shown
            else:
                cell.metadata["tags"] = [HIDE_INPUT_TAG]
            cells.append(cell)
        # raw cells: left out
    deck.cells = cells
    return deck


def _exporter(reveal_prefix: str, mathjax_url: str | None):
    from nbconvert import SlidesExporter
    from traitlets.config import Config

    c = Config()
    c.SlidesExporter.extra_template_basedirs = [str(TEMPLATES)]
    c.SlidesExporter.template_name = TEMPLATE_NAME
    c.SlidesExporter.reveal_url_prefix = reveal_prefix
    c.SlidesExporter.reveal_scroll = True
    c.SlidesExporter.exclude_input_prompt = True
    c.SlidesExporter.exclude_output_prompt = True
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {HIDE_INPUT_TAG}
    if mathjax_url:
        c.SlidesExporter.mathjax_url = mathjax_url
    return SlidesExporter(config=c)


def copy_reveal(reveal_dir: Path, output_dir: Path) -> Path:
    """Copy reveal.js's dist/ and notes plugin from an unpacked reveal.js package into output_dir/reveal.js."""
    reveal_dir = Path(reveal_dir)
    needed = [reveal_dir / "dist" / "reveal.js", reveal_dir / "dist" / "reveal.css",
              reveal_dir / "plugin" / "notes" / "notes.js"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise SlidesError(
            f"{reveal_dir} is not an unpacked reveal.js 4 or 5 package (missing: {', '.join(missing)}). "
            "Get one with `npm pack reveal.js@4 && tar xzf reveal.js-4*.tgz` (the folder is `package/`)."
        )
    target = output_dir / LOCAL_REVEAL
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(reveal_dir / "dist", target / "dist", ignore=shutil.ignore_patterns("*.map", "*.esm.js"))
    shutil.copytree(reveal_dir / "plugin" / "notes", target / "plugin" / "notes",
                    ignore=shutil.ignore_patterns("*.esm.js"))
    for extra in ("LICENSE",):
        if (reveal_dir / extra).is_file():
            shutil.copy2(reveal_dir / extra, target / extra)
    return target


def resolve_lessons(names: list[str]) -> list[Path]:
    """Lesson paths from the command line: paths, file names in notebooks/, or number prefixes ("04")."""
    if not names:
        found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
        if not found:
            raise SlidesError(f"no lessons found in {NOTEBOOKS}")
        return found
    paths = []
    for name in names:
        path = Path(name)
        if path.is_file():
            paths.append(path)
            continue
        candidates = [NOTEBOOKS / name] if (NOTEBOOKS / name).is_file() else sorted(NOTEBOOKS.glob(f"{name}_*.ipynb"))
        if len(candidates) != 1:
            raise SlidesError(
                f"lesson not found: {name!r} (give a notebook path, a file name in {NOTEBOOKS}, or a lesson "
                f"number such as 04)"
            )
        paths.append(candidates[0])
    for path in paths:
        if path.suffix != ".ipynb":
            raise SlidesError(f"not a notebook: {path}")
    return paths


def build_deck(lesson: Path, output_dir: Path, reveal_prefix: str = CDN_REVEAL_PREFIX,
               mathjax_url: str | None = None) -> Path:
    """Write output_dir/<lesson stem>.slides.html for one stored lesson; return its path."""
    import nbformat

    lesson = Path(lesson)
    if not lesson.is_file():
        raise SlidesError(f"lesson not found: {lesson}")
    nb = nbformat.read(lesson, as_version=4)
    deck = lecture_notebook(nb)
    body, _ = _exporter(reveal_prefix, mathjax_url).from_notebook_node(
        deck, resources={"metadata": {"name": lesson.stem}}
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / f"{lesson.stem}.slides.html"
    out.write_text(body, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lessons", nargs="*",
                        help="lesson notebooks, file names in notebooks/ or numbers such as 04 (default: all)")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help="default: docs/slides")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--reveal-dir", type=Path,
                       help="an unpacked reveal.js 4/5 package, copied beside the decks for offline presenting")
    where.add_argument("--reveal-prefix", default=None,
                       help=f"URL or relative path of reveal.js for the decks (default: {CDN_REVEAL_PREFIX}, "
                            f"or {LOCAL_REVEAL!r} when a copy is already beside the decks)")
    parser.add_argument("--mathjax-url", default=None, help="where MathJax 2 is loaded from (default: nbconvert's)")
    args = parser.parse_args(argv)

    try:
        lessons = resolve_lessons(args.lessons)
        output_dir = args.output_dir
        if args.reveal_dir is not None:
            copy_reveal(args.reveal_dir, output_dir)
            prefix = LOCAL_REVEAL
        elif args.reveal_prefix is not None:
            prefix = args.reveal_prefix
        elif (output_dir / LOCAL_REVEAL / "dist" / "reveal.js").is_file():
            prefix = LOCAL_REVEAL
        else:
            prefix = CDN_REVEAL_PREFIX
        for lesson in lessons:
            out = build_deck(lesson, output_dir, prefix, args.mathjax_url)
            print(f"{lesson.name} -> {out}")
    except SlidesError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if prefix == CDN_REVEAL_PREFIX:
        print(f"reveal.js is loaded from {prefix} when a deck is viewed; to present offline, rebuild with "
              "--reveal-dir <an unpacked reveal.js package> (see docs/instructor_guide.md, 'Slides').")
    return 0


if __name__ == "__main__":
    sys.exit(main())

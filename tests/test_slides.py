"""Lecture slide decks made from the stored lessons (tools/slides.py): structure, figures, nothing given away."""

from __future__ import annotations

import html
import importlib.util
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ["00_welcome.ipynb", "04_the_contrastive_loss.ipynb", "07_learnable_temperature.ipynb",
           "11_binding_and_hard_negatives.ipynb"]
EXPECT = re.compile(r"\bexercises\.expect\(")


def _load_tool():
    spec = importlib.util.spec_from_file_location("slides_tool", ROOT / "tools" / "slides.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


slides = _load_tool()


class _Sections(HTMLParser):
    """The reveal.js structure: for each top-level <section>, the headings of its sub-sections."""

    def __init__(self):
        super().__init__()
        self.depth = 0
        self.heading = None
        self.tops: list[list[str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.depth += 1
            if self.depth == 1:
                self.tops.append([])
        elif tag in ("h1", "h2", "h3") and self.depth:
            self.heading = tag
            self.tops[-1].append(tag + " ")

    def handle_endtag(self, tag):
        if tag == "section":
            self.depth -= 1
        elif tag == self.heading:
            self.heading = None

    def handle_data(self, data):
        if self.heading:
            self.tops[-1][-1] += data.replace("\u00b6", "")  # nbconvert's anchor link "¶"


def _text(page: str) -> str:
    """The visible text of the deck's body, tags removed, whitespace collapsed."""
    body = page[page.index('<div class="reveal">'):]
    body = re.sub(r"<(script|style)\b.*?</\1>", "", body, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def _headings(nb, prefix: str) -> list[str]:
    """The lesson's markdown headings of one level, outside code fences."""
    found = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        fenced = False
        for line in cell.source.splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                fenced = not fenced
            elif not fenced and line.startswith(prefix):
                found.append(line[len(prefix):].strip())
    return found


def _is_exercise(cell) -> bool:
    """An exercise, checker or prediction cell: a TODO, or `exercises.` used for anything but `expect(`."""
    rest = EXPECT.sub("", cell.source)
    return cell.cell_type == "code" and ("TODO" in rest or "exercises." in rest)


def _printed(cell) -> list[str]:
    """The lines a code cell printed (its stream outputs), whitespace collapsed, blank lines left out."""
    text = "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def _code_lines(source: str) -> list[str]:
    """Distinctive lines of code: long enough not to occur in prose by chance."""
    lines = []
    for line in source.splitlines():
        line = " ".join(line.split("#")[0].split()) if "TODO" not in line else " ".join(line.split())
        if len(line) >= 20:
            lines.append(line)
    return lines


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    built = {}
    for name in LESSONS:
        path = slides.build_deck(ROOT / "notebooks" / name, out)
        built[name] = (nbformat.read(ROOT / "notebooks" / name, as_version=4), path.read_text(encoding="utf-8"))
    return built


@pytest.mark.parametrize("name", LESSONS)
def test_one_slide_per_heading(decks, name):
    nb, page = decks[name]
    parser = _Sections()
    parser.feed(page)
    titles = _headings(nb, "# ")
    h2 = _headings(nb, "## ")
    h3 = _headings(nb, "### ")
    assert len(titles) == 1
    assert len(parser.tops) == 1 + len(h2), "one slide for the title and one per ## heading"
    # each slide opens with its heading, in the lesson's order; ### headings are its sub-slides
    assert [top[0] for top in parser.tops] == ["h1 " + titles[0].replace("\\", "")] + ["h2 " + h for h in h2]
    assert sorted(h for top in parser.tops for h in top[1:]) == sorted("h3 " + h for h in h3)


@pytest.mark.parametrize("name", LESSONS)
def test_figures_kept_solutions_and_exercise_code_left_out(decks, name):
    nb, page = decks[name]
    text = _text(page)
    figures = [out["data"]["image/png"].replace("\n", "") for cell in nb.cells if cell.cell_type == "code"
               for out in cell.outputs if "image/png" in out.get("data", {})]
    assert figures, "the lesson has figures"
    for png in figures:
        assert f"data:image/png;base64,{png}" in page
    solutions = [cell for cell in nb.cells if "solution_for" in (cell.metadata.get("clipcourse") or {})]
    exercise_cells = [cell for cell in nb.cells if cell.cell_type == "code" and "TODO" in cell.source]
    checkers = [cell for cell in nb.cells if _is_exercise(cell) and "TODO" not in cell.source]
    assert solutions and exercise_cells and checkers
    assert "Show a solution" not in text
    prose = " ".join(" ".join(cell.source.split()) for cell in nb.cells if cell.cell_type == "markdown")
    for cell in solutions + exercise_cells + checkers:
        for line in _code_lines(cell.source):
            if line not in prose:                    # an exercise's statement may quote a line ("set answer = ...")
                assert line not in text, f"exercise or solution code on a slide: {line!r}"
    for cell in checkers:                            # their feedback ("⏳ Not attempted yet ...") is left out too
        for out in cell.outputs:
            feedback = " ".join(str(out.get("data", {}).get("text/plain", out.get("text", ""))).split())
            assert not feedback or feedback not in text, f"a checker's or prediction's feedback on a slide: {feedback!r}"
    for block in re.findall(r"<pre\b.*?</pre>", page, flags=re.S):  # code on the slides (prose may say "# TODO")
        assert "TODO" not in block, "a TODO line of code on a slide"
    # the setup cell's code is not shown; printed results are
    assert "torch.manual_seed(0)" not in text


def test_by_hand_code_shown_other_code_hidden(decks):
    _, page = decks["04_the_contrastive_loss.ipynb"]
    text = _text(page)
    assert "logits = sims / tau" in text            # "Build it by hand": short code, on the slide
    assert "CLIP loss 0.8218" in text                 # ... with what it printed
    assert "import open_clip" not in text             # other code: only its output
    assert "by hand 0.8218 | clipcourse 0.8218 | open_clip 0.8218" in text
    assert "plt.subplots" not in text                 # plotting code is not shown, its figure is


@pytest.mark.parametrize("name", LESSONS)
def test_results_cells_with_expect_guards_are_kept(decks, name):
    """A results cell that ends with `exercises.expect(...)` guards is a results cell, not an exercise: what it
    printed is on the slides, and its guards are not."""
    nb, page = decks[name]
    text = _text(page)
    guarded = [cell for cell in nb.cells if cell.cell_type == "code" and EXPECT.search(cell.source)
               and not _is_exercise(cell) and cell.outputs]
    for cell in guarded:
        for line in _printed(cell):
            assert line in text, f"a printed result left off the slides: {line!r}"
    for block in re.findall(r"<pre\b.*?</pre>", page, flags=re.S):
        assert "exercises.expect" not in html.unescape(re.sub(r"<[^>]+>", "", block)), "a guard's code on a slide"


def test_verdicts_on_the_slides(decks):
    """The lessons' printed verdicts, as stored, are on the slides: lesson 07's C4, C5 and C6, lesson 11's."""
    for name, starts, count in (("07_learnable_temperature.ipynb", ("C4 ", "C5 ", "C6 "), 3),
                                ("11_binding_and_hard_negatives.ipynb", ("hard negatives improve binding at τ = ",
                                                                         "plain captions leave binding"), 3)):
        nb, page = decks[name]
        text = _text(page)
        verdicts = [line for cell in nb.cells if cell.cell_type == "code" for line in _printed(cell)
                    if line.startswith(starts)]
        assert len(verdicts) == count, f"{name}: the stored verdict lines changed: {verdicts}"
        for line in verdicts:
            assert line in text, f"{name}: a verdict left off the slides: {line!r}"


def test_which_code_cells_a_deck_keeps():
    """Exercise cells, checkers and prediction cells are left out; results cells guarded by expect are kept."""
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell

    def printed(source, text):
        cell = code(source)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        return cell

    nb = nbformat.v4.new_notebook(cells=[
        md("# Lesson"),
        md("## Build it by hand"),
        printed('acc = 0.9\nprint(f"accuracy {acc}")\nexercises.expect("accuracy", acc, at_least=0.5)',
                "accuracy 0.9\n"),
        printed('for t in (1, 2):\n    exercises.expect("t", t, at_least=0)', "loop only\n"),
        printed("exercises.lesson04.check_clip_loss(my_clip_loss)", "checker feedback\n"),
        printed("exercises.predictions.best_fixed_tau(prediction, TAUS, 0.1, [])", "prediction feedback\n"),
        printed('answer = None  # TODO\nexercises.expect("x", 1, at_least=0)', "todo output\n"),
        printed('import clipcourse.exercises.lesson04\nexercises.expect("x", 1, at_least=0)', "setup output\n"),
    ])
    deck = slides.lecture_notebook(nb)
    kept = [cell for cell in deck.cells if cell.cell_type == "code"]
    assert [cell.outputs[0]["text"] for cell in kept] == ["accuracy 0.9\n", "loop only\n"]
    shown, loop = kept
    assert slides.HIDE_INPUT_TAG not in shown.metadata.get("tags", [])       # short code under "by hand"
    assert shown.source == 'acc = 0.9\nprint(f"accuracy {acc}")'             # ... without its guard
    assert "exercises.expect" in loop.source                                # a block of guards alone stays Python
    assert nb.cells[2].source.endswith("at_least=0.5)"), "the deck is made on a copy"


def test_notebooks_not_modified(tmp_path):
    path = ROOT / "notebooks" / LESSONS[0]
    before = path.read_bytes()
    nb = nbformat.read(path, as_version=4)
    slides.lecture_notebook(nb)
    assert path.read_bytes() == before
    assert nb == nbformat.read(path, as_version=4), "the deck is made on a copy"


def test_missing_lesson_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "slides.py"), "notebooks/99_no_such_lesson.ipynb",
         "--output-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "lesson not found" in result.stderr and "99_no_such_lesson" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
    with pytest.raises(slides.SlidesError, match="lesson not found"):
        slides.build_deck(tmp_path / "missing.ipynb", tmp_path)


def test_reveal_dir_copied_and_used_offline(tmp_path):
    fake = tmp_path / "package"
    for rel in ("dist/reveal.js", "dist/reveal.css", "dist/theme/simple.css", "plugin/notes/notes.js"):
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text("/* stand-in */")
    out = tmp_path / "slides"
    assert slides.main(["00", "--output-dir", str(out), "--reveal-dir", str(fake)]) == 0
    page = (out / "00_welcome.slides.html").read_text(encoding="utf-8")
    assert (out / "reveal.js" / "dist" / "reveal.js").is_file()
    assert (out / "reveal.js" / "plugin" / "notes" / "notes.js").is_file()
    assert '<script src="reveal.js/dist/reveal.js">' in page
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
    assert [src for src in scripts if "mathjax" not in src] == ["reveal.js/dist/reveal.js",
                                                                 "reveal.js/plugin/notes/notes.js"]
    assert "unpkg.com" not in page
    with pytest.raises(slides.SlidesError, match="not an unpacked reveal.js"):
        slides.copy_reveal(tmp_path / "nothing", out)

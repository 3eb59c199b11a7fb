"""Lessons 00-02, second review: lesson 00's environment check runs before anything it checks is imported
and names what is missing; every lesson states the time its reading estimate gives; lesson 02's caption
checker takes the captions ShapesWorld's templates write, and only those."""

import ast
import builtins
import importlib.metadata
import importlib.util
import itertools
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from clipcourse import data
from clipcourse.exercises import lesson02

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
INSTALL = "pip install -r requirements.txt -e ."        # the README's first command, without starting JupyterLab


# --- lesson 00: the environment check ---------------------------------------------------------

def _code_cells(name):
    cells = json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def _check_cells():
    """Lesson 00's code cells up to the one that prints the verdict ("environment OK")."""
    cells = _code_cells("00_welcome.ipynb")
    last = next(k for k, src in enumerate(cells) if "environment OK" in src)
    return cells[:last + 1]


def _top_level_imports(src):
    for node in ast.parse(src).body:                # imports inside an `if` run only once the check allows them
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module.split(".")[0]


def test_lesson00_the_check_runs_before_anything_it_checks_is_imported():
    """A learner without matplotlib once got an ImportError from the setup cell, before the check could run."""
    cells = _check_cells()
    assert "find_spec" in "".join(cells)
    for src in cells:
        assert not any(line.lstrip().startswith(("%", "!")) for line in src.splitlines()), \
            f"a magic before the check ran (%matplotlib needs matplotlib):\n{src}"
        outside = [m for m in _top_level_imports(src) if m not in sys.stdlib_module_names]
        assert not outside, f"the check cells import {outside} before knowing they are installed:\n{src}"


def _run_check(monkeypatch, capsys, absent=(), torch_version=None):
    """Run lesson 00's check cells as if the packages `absent` were not installed; (its output, whether it stopped)."""
    real_find_spec, real_version = importlib.util.find_spec, importlib.metadata.version
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in absent else real_find_spec(name, *a, **k))
    if torch_version:
        monkeypatch.setattr(importlib.metadata, "version",
                            lambda name: torch_version if name == "torch" else real_version(name))
    real_import = builtins.__import__

    def guarded_import(name, *args, **kwargs):      # what the check says is absent must not be imported
        assert name.split(".")[0] not in absent, f"the check imported {name}, which it was told is missing"
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded_import)
    namespace, stopped = {}, False
    try:
        for src in _check_cells():
            exec(compile(src, "<lesson 00>", "exec"), namespace)
    except AssertionError as err:
        stopped = "the course needs" in str(err)
        if not stopped:
            raise
    return capsys.readouterr().out, stopped


@pytest.mark.parametrize("absent", [("matplotlib",), ("torchvision",), ("ipywidgets", "ipympl"), ("torch",),
                                    ("clipcourse",), ("open_clip", "PIL", "tqdm")], ids="+".join)
def test_lesson00_the_check_names_each_missing_package_and_the_command(monkeypatch, capsys, absent):
    out, stopped = _run_check(monkeypatch, capsys, absent)
    assert stopped, out
    assert "environment OK" not in out
    for package in absent:
        assert f"{package} is not installed" in out, out
    assert INSTALL in out, out
    assert INSTALL in (ROOT / "README.md").read_text(encoding="utf-8"), "the check quotes a command the README lacks"


def test_lesson00_the_check_says_ok_when_everything_is_there(monkeypatch, capsys):
    out, stopped = _run_check(monkeypatch, capsys)
    assert out == "environment OK\n" and not stopped


def test_lesson00_the_check_names_an_old_torch(monkeypatch, capsys):
    out, stopped = _run_check(monkeypatch, capsys, torch_version="2.3.1+cpu")
    assert stopped and "PyTorch 2.3.1+cpu is older than 2.4" in out, out


# --- every lesson: the stated time and the reading estimate ------------------------------------

def _classroom():
    if "classroom_tool" not in sys.modules:         # tests/test_classroom.py loads it under this name too
        spec = importlib.util.spec_from_file_location("classroom_tool", ROOT / "tools" / "classroom.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module             # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules["classroom_tool"]


STATED = re.compile(r"\*\*(?:Estimated time|Time):\*\* (?:about )?(\d+) minutes")
# Lessons that deliberately state more than the estimate, and by how many minutes at most: lesson 04's exercise,
# writing the loss from scratch, is the hardest of 00-08 (the instructor guide's footnote gives it 15 minutes, not 5).
STATED_EXTRA = {"04": 7.5}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_each_lesson_states_its_reading_estimate_to_the_nearest_5_minutes(path):
    """`python tools/classroom.py reading-times` counts prose, code and exercises (the guide's method); the
    time a lesson states up front is that estimate rounded to 5 minutes (lesson 01 said 15 for ≈ 18), or more
    by at most STATED_EXTRA where the lesson's exercise needs it."""
    classroom = _classroom()
    first = json.loads(path.read_text(encoding="utf-8"))["cells"][0]
    stated = STATED.search("".join(first["source"]))
    assert stated, f"{path.name}: the first cell states no '**Time:** about N minutes'"
    estimate = classroom.reading(path).minutes
    low, high = estimate - 2.5, estimate + 2.5 + STATED_EXTRA.get(path.name[:2], 0)
    assert low <= int(stated.group(1)) <= high, (
        f"{path.name} states {stated.group(1)} minutes, but its reading estimate is {estimate:.1f} "
        f"(python tools/classroom.py reading-times): state about {5 * round(estimate / 5)} minutes")


# --- lesson 02: the caption checker -----------------------------------------------------------

SCENE = torch.tensor([[4, 2, 0, 2, 1], [0, 0, 0, 0, 0]])      # a small purple triangle at the top
ORANGE = torch.tensor([[5, 5, 1, 4, 1], [0, 0, 0, 0, 0]])     # a large orange ring in the centre


def test_lesson02_every_caption_the_templates_write_passes():
    """Every one-object scene, every template: the captions the data itself writes (with 'an' where it belongs)."""
    for c, s, z, p in itertools.product(*(range(n) for n in (8, 6, 2, 5))):
        scene = torch.tensor([[c, s, z, p, 1], [0, 0, 0, 0, 0]])
        for caption in data.true_captions(scene[None])[0]:
            feedback = lesson02.check_caption(caption, scene)
            assert feedback.passed, (caption, str(feedback))
    for caption in ["A small purple triangle at the top.", "a small, purple triangle at the top",
                    "There is a small purple triangle"]:
        assert lesson02.check_caption(caption, SCENE).passed, caption


@pytest.mark.parametrize("answer, phrase", [
    ("small purple triangle top", "'at the top', not 'top'"),                # the loose wording a review found accepted
    ("a purple triangle top", "'at the top', not 'top'"),
    ("a small purple triangle on the top", "not 'on the top'"),
    ("at the top a small purple triangle", "end with the position"),
    ("purple triangle", "'a' is missing"),
    ("small purple triangle at the top", "'a' is missing: the nearest ShapesWorld template, "
                                         "'a {size} {color} {shape} {where}'"),
    ("there is a purple triangle", "the size is missing"),
    ("a picture of a small purple triangle", "no ShapesWorld template writes the size there"),
    ("there is a small purple triangle at the top", "no ShapesWorld template writes the position there"),
    ("the purple triangle", "'the' where the nearest ShapesWorld template, 'a {color} {shape}', has 'a'"),
    ("small a purple triangle", "in an order no ShapesWorld template writes"),
    ("a purple picture of a triangle", "in an order no ShapesWorld template writes"),
    ("a purple triangle is at the top", "no ShapesWorld template writes 'is' there"),
    ("an purple triangle", "'an' before a vowel"),
])
def test_lesson02_loose_captions_are_rejected_with_what_differs(answer, phrase):
    feedback = lesson02.check_caption(answer, SCENE)
    assert feedback.passed is False and phrase in feedback.message, str(feedback)
    assert feedback.hint, str(feedback)


def test_lesson02_the_article_before_a_vowel():
    assert lesson02.check_caption("an orange ring", ORANGE).passed
    feedback = lesson02.check_caption("a orange ring in the centre", ORANGE)
    assert feedback.passed is False and "'an' before a vowel" in feedback.message, str(feedback)


def test_lesson02_a_template_hint_points_at_the_nearest_template():
    feedback = lesson02.check_caption("there is a purple triangle", SCENE)
    assert "data.SINGLE_TEMPLATES[4]" in feedback.hint, str(feedback)
    assert data.SINGLE_TEMPLATES[4] == "there is a {size} {color} {shape}"


@pytest.mark.parametrize("scene, error, phrase", [
    (torch.zeros(3, 5, dtype=torch.long), ValueError, "scene must have shape (2, 5)"),
    (torch.tensor([[9, 2, 0, 2, 1], [0, 0, 0, 0, 0]]), ValueError, "scene[0, 0] = 9 is out of range"),
    (SCENE.float(), TypeError, "scene must hold integer attributes"),
    ("a scene", TypeError, "scene must be a (2, 5) tensor"),
])
def test_lesson02_caption_checker_names_a_bad_scene(scene, error, phrase):
    with pytest.raises(error, match=re.escape(phrase)):
        lesson02.check_caption("a red circle", scene)

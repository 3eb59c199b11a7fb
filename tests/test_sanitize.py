"""The sanitize rules nbval applies before it compares outputs (tests/nbval_sanitize.cfg): each hides only
what truly varies between runs, and keeps the rest compared."""

import json
import re
from pathlib import Path

from nbval.plugin import get_sanitize_patterns

ROOT = Path(__file__).resolve().parents[1]


def sanitize(text):
    """As nbval does it: the cfg's (regex, replace) pairs, read by nbval's own parser, applied in order with re.sub."""
    patterns = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text(encoding="utf-8"))
    assert patterns, "nbval read no rules from tests/nbval_sanitize.cfg"
    for regex, replace in patterns:
        text = re.sub(regex, replace, text)
    return text


def test_progress_hides_the_runs_done_but_keeps_the_total():
    first, middle, last = "runs done: 0 of 24", "runs done: 7 of 24, about 31 s left", "runs done: 24 of 24"
    assert sanitize(first) == sanitize(middle) == sanitize(last)
    assert "24" in sanitize(last)
    assert sanitize("runs done: 15 of 15") != sanitize(last)       # another sweep size is another output
    assert sanitize("runs done: 0 of 4") != sanitize(last)


def test_lesson07_stored_progress_lines_match_their_first_state():
    # nbval compares the stored last state ("N of N") with the first state a fresh run shows ("0 of N")
    nb = json.loads(next((ROOT / "notebooks").glob("07_*.ipynb")).read_text(encoding="utf-8"))
    stored = [text for cell in nb["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])
              for text in ["".join(o.get("data", {}).get("text/plain", ""))] if text.startswith("runs done:")]
    assert stored, "lesson 07 stores no 'runs done' line"
    for text in stored:
        total = re.fullmatch(r"runs done: (\d+) of \1", text)
        assert total, f"lesson 07 stores {text!r}, not a finished sweep"
        assert sanitize(text) == sanitize(f"runs done: 0 of {total.group(1)}")
        assert sanitize(text) != sanitize(f"runs done: 0 of {int(total.group(1)) + 1}")

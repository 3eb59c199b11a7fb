"""The README's and the instructor guide's measured figures are the committed benchmark files' figures.

Both documents quote `benchmarks/notebooks.json` (each lesson's seconds and peak memory, "auto" and float32)
and `benchmarks/results.json` (the default training, seed by seed). A new benchmark run changes the files; these
tests then name every table cell that still quotes the old run (an audit found the guide's memory figures
swapped, and a laptop estimate off its own stated method).
"""

import json
from pathlib import Path

import pytest
from markdown_tables import table_rows

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "docs" / "instructor_guide.md").read_text(encoding="utf-8")
NOTEBOOKS = json.loads((ROOT / "benchmarks" / "notebooks.json").read_text(encoding="utf-8"))
RESULTS = json.loads((ROOT / "benchmarks" / "results.json").read_text(encoding="utf-8"))
LAPTOP_RATIO = 2.65      # the guide's stated factor for issue 9's AVX2 laptop (42.9 s there, 16.2 s here: the old default, Zen 5)


def _lessons(block: dict) -> dict[str, dict]:
    return {row["notebook"][:2]: row for row in block["rows"]}


AUTO, F32 = _lessons(NOTEBOOKS), _lessons(NOTEBOOKS["float32"])


def _round5(seconds: float) -> int:
    return int(5 * round(seconds / 5))


def test_the_guides_machine_times_are_notebooks_json():
    stale = []
    section2 = table_rows(GUIDE, 'machine s, "auto"')
    assert set(section2) == {f"{i:02d}" for i in range(9)} | {"all"}, sorted(section2)
    for lesson, row in section2.items():
        if lesson == "all":
            continue
        want = {'machine s, "auto" (measured)': f"{AUTO[lesson]['seconds']:.1f}",
                "machine s, float32 (measured)": f"{F32[lesson]['seconds']:.1f}",
                "peak MiB auto / f32 (measured)": f"{AUTO[lesson]['peak_mib']:,} / {F32[lesson]['peak_mib']:,}",
                "slower AVX2 laptop (estimate)": f"≈ {_round5(F32[lesson]['seconds'] * LAPTOP_RATIO)} s"}
        stale += [f"{lesson} {col}: {row[col]!r}, want {cell!r}" for col, cell in want.items() if row[col] != cell]
    first = [f"{i:02d}" for i in range(9)]
    total = section2["all"]
    want = {'machine s, "auto" (measured)': f"**{sum(AUTO[k]['seconds'] for k in first):.1f}**",
            "machine s, float32 (measured)": f"**{sum(F32[k]['seconds'] for k in first):.1f}**",
            "slower AVX2 laptop (estimate)": f"**≈ {_round5(sum(F32[k]['seconds'] for k in first) * LAPTOP_RATIO)} s**"}
    stale += [f"all {col}: {total[col]!r} does not start with {cell!r}" for col, cell in want.items()
              if not total[col].startswith(cell)]
    section3 = table_rows(GUIDE, "machine time")
    assert set(section3) == {"09", "10", "11", "12"}, sorted(section3)
    for lesson, row in section3.items():
        cell = f"{AUTO[lesson]['seconds']:.1f} / {F32[lesson]['seconds']:.1f} s"
        if row["machine time"] != cell:
            stale.append(f"{lesson} machine time: {row['machine time']!r}, want {cell!r}")
    assert f"`benchmarks/notebooks.json` ({NOTEBOOKS['date']})" in GUIDE, "the guide dates the file wrongly"
    assert str(LAPTOP_RATIO) in GUIDE, f"the guide no longer states the factor {LAPTOP_RATIO}"
    assert not stale, "docs/instructor_guide.md quotes another run than benchmarks/notebooks.json: " + "; ".join(stale)


def test_the_readmes_lesson_table_is_notebooks_json():
    rows = table_rows(README, 'seconds, "auto"')
    assert set(rows) == set(AUTO) | {"all"}, sorted(rows)
    stale = []
    for lesson, row in rows.items():
        if lesson == "all":
            want = [f"**{NOTEBOOKS['total_s']:.1f}**", f"**{NOTEBOOKS['float32']['total_s']:.1f}**",
                    f"**{NOTEBOOKS['peak_mib']} / {NOTEBOOKS['float32']['peak_mib']} MiB (max)**"]
        else:
            want = [f"{AUTO[lesson]['seconds']:.1f}", f"{F32[lesson]['seconds']:.1f}",
                    f"{AUTO[lesson]['peak_mib']} / {F32[lesson]['peak_mib']} MiB"]
        got = list(row.values())[1:4]
        if got != want:
            stale.append(f"{lesson}: {got}, want {want}")
    assert not stale, "README.md's lesson table quotes another run than benchmarks/notebooks.json: " + "; ".join(stale)


@pytest.mark.parametrize("block, label", [(RESULTS, "auto"), (RESULTS["float32"], "float32")])
def test_the_readmes_training_row_is_results_json(block, label):
    row = next(line for line in README.splitlines() if line.startswith("| default training"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    cell = cells[1] if label == "auto" else cells[2]
    acc = " / ".join(f"{a * 100:.1f}" for a in block["heldout_acc_seeds"])
    secs = " / ".join(f"{s:.1f}" for s in block["train_s_seeds"])
    assert cell.startswith(f"{acc} % in {secs} s"), (
        f"README.md's default-training row ({label}) says {cell!r}; benchmarks/results.json has {acc} % in {secs} s")

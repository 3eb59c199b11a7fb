"""Rows of the markdown tables in the README and the instructor guide, for the tests that check their figures."""

import re


def table_rows(text: str, header_has: str) -> dict[str, dict[str, str]]:
    """{lesson or 'all': {column: cell}} of every markdown table whose header has a column containing
    `header_has`; a row belongs to a lesson when its first cell starts with the lesson's two digits."""
    rows, header = {}, None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells if any(header_has in c for c in cells) else []
        elif header and not set(cells[0]) <= set("-: "):
            match = re.match(r"\**(\d\d)\b", cells[0])
            key = match.group(1) if match else ("all" if cells[0].startswith("**all") else None)
            if key:
                assert key not in rows, f"two rows for {key} in the table headed {header}"
                rows[key] = dict(zip(header, cells))
    return rows

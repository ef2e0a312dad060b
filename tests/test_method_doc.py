"""docs/method.md, the project's own description of the method: its published numbers
(§4) are the data of ``lightning_modules/paper.py`` (``ROWS``), and every citation of it
("docs/method.md §n" or "method §n") in the repository names a section it has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lightning_modules.paper import ROWS

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
CITED_IN = ("convnn", "lightning_modules", "datamodules", "ablations", "configs", "docs", "tests")
CITATION = re.compile(r"\b(?:docs/method\.md|method) §(\d+(?:\.\d+)?)")


def _section(text: str, number: int) -> str:
    """The body of ``## <number>.`` up to the next ``## `` heading."""
    found = re.search(rf"^## {number}\. .*?(?=^## |\Z)", text, flags=re.M | re.S)
    assert found, f"docs/method.md has no section '## {number}.'"
    return found.group(0)


def _number(cell: str) -> float | None:
    return None if cell in ("—", "-", "") else float(cell)


def method_table() -> list[dict]:
    """The rows of the table of docs/method.md §4, in order."""
    lines = [ln for ln in _section(METHOD.read_text(), 4).splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["row", "model", "data", "top-1", "GFLOPs", "params (M)"], header
    rows = []
    for line in lines[2:]:  # after the header and its |---| line
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append(
            {
                "id": cells[0],
                "label": cells[1],
                "dataset": cells[2],
                "top1": float(cells[3]),
                "gflops": _number(cells[4]),
                "params_m": _number(cells[5]),
            }
        )
    return rows


def test_method_table_is_the_paper_rows() -> None:
    """docs/method.md §4 and ``ROWS`` hold the same rows, in the same order, with the same
    label, data set, top-1, GFLOPs and parameter count."""
    table = method_table()
    assert [r["id"] for r in table] == list(ROWS)
    for found in table:
        row = ROWS[found["id"]]
        expected = {
            "id": row.id,
            "label": row.label,
            "dataset": row.dataset,
            "top1": row.top1,
            "gflops": row.gflops,
            "params_m": row.params_m,
        }
        assert found == expected, row.id


def test_every_citation_names_a_section() -> None:
    """A citation "docs/method.md §2" or "method §1.4" names a heading the page has
    (``## 2.`` or ``### 1.4``), and the page keeps sections 1 to 5."""
    text = METHOD.read_text()
    sections = set(re.findall(r"^## (\d+)\. ", text, flags=re.M))
    sections |= set(re.findall(r"^### (\d+\.\d+) ", text, flags=re.M))
    assert {"1", "2", "3", "4", "5"} <= sections
    files = [ROOT / "README.md"]
    for folder in CITED_IN:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".yaml")]
    cited = {}
    for path in files:
        for number in CITATION.findall(path.read_text(encoding="utf-8", errors="replace")):
            cited.setdefault(number, path.relative_to(ROOT))
    assert cited, "no citation of docs/method.md found"
    missing = {n: str(p) for n, p in cited.items() if n not in sections}
    assert not missing, f"citations of sections docs/method.md does not have: {missing}"


@pytest.mark.parametrize("number", [1, 2, 3, 4, 5])
def test_each_section_has_a_body(number: int) -> None:
    body = _section(METHOD.read_text(), number)
    assert len(body.split()) > 30

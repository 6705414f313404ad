"""The report as data: what report/view.py builds and the templates lay out.

A Cell's `key` is a dotted path into report.json ('manifest.' paths point into manifest.json, list
items by index, '.length' is a list's length); HTML writes it as data-key with the exact value as
data-value, so tests and scripts can read the numbers back. Blocks with a `detail` summary are long
reference lists: HTML folds them under that summary, Markdown names them and points at report.html.
Figures are HTML only (plots.py draws them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from coatnet_deploy.report.formats import fmt_metric, fmt_num, is_num

@dataclass(frozen=True)
class Cell:
    """A piece of text. key/value: the report.json path and exact value it shows (HTML data-key,
    data-value); numeric: right-aligned; style: '', 'code', 'strong', 'pass' or 'fail'; title: hover text."""

    text: str
    key: str | None = None
    value: Any = None
    numeric: bool = False
    style: str = ""
    title: str | None = None

    @property
    def data_value(self) -> str:
        return repr(self.value)


@dataclass
class Paragraph:
    parts: list[Cell]
    style: str = ""  # '' | 'note' (explains the section) | 'warn'
    kind: ClassVar[str] = "paragraph"
    detail: ClassVar[None] = None


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]
    detail: str | None = None  # a summary line: a long reference table (HTML collapsed, Markdown names it)
    opened: bool = False
    kind: ClassVar[str] = "table"

    def numeric_columns(self) -> list[bool]:
        """A column is right-aligned when every filled cell in it is a number."""
        cols = []
        for i in range(len(self.headers)):
            cells = [r[i] for r in self.rows if i < len(r) and r[i].text not in ("", "—")]
            cols.append(bool(cells) and all(c.numeric for c in cells))
        return cols


@dataclass
class ItemList:
    items: list[list[Cell]]
    detail: str | None = None
    opened: bool = False  # HTML: a detail list shown unfolded
    kind: ClassVar[str] = "list"


@dataclass
class Figure:
    plot: str  # a plot_<name> function in plots.py
    data: dict[str, Any]
    caption: str
    alt: str
    kind: ClassVar[str] = "figure"
    detail: ClassVar[None] = None


Block = Paragraph | Table | ItemList | Figure


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def paragraphs(self) -> list[Paragraph]:
        return [b for b in self.blocks if isinstance(b, Paragraph)]

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]

    @property
    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]


@dataclass
class ReportView:
    title: str
    page_title: str
    status: str
    status_detail: str
    facts: list[tuple[str, str]]
    sections: list[Section]


# ---------------------------------------------------------------- cell helpers


def text(t: Any, style: str = "") -> Cell:
    return Cell("—" if t is None else str(t), style=style)


def code(t: Any) -> Cell:
    return Cell(str(t), style="code")


def num(key: str | None, value: Any, shown: str | None = None, style: str = "", title: str | None = None) -> Cell:
    """A number cell: keyed when the value is there (booleans and missing values carry no key)."""
    shown = fmt_num(value) if shown is None else shown
    keyed = key is not None and value is not None and not isinstance(value, bool)
    if keyed and title is None and isinstance(value, float) and shown != repr(value):
        title = repr(value)  # the exact value on hover
    return Cell(shown, key if keyed else None, value if keyed else None, is_num(value), style, title)


def metric(key: str | None, name: str, value: Any) -> Cell:
    return num(key, value, fmt_metric(name, value))


def para(*parts: Cell | str, style: str = "") -> Paragraph:
    return Paragraph([text(p) if isinstance(p, str) else p for p in parts if p != ""], style)


def sub_key(prefix: str, name: Any) -> str | None:
    """prefix + '.' + a dict key, for a data-key; None when the key holds a dot (the path would break)."""
    part = str(name)
    return f"{prefix}.{part}" if part and "." not in part else None

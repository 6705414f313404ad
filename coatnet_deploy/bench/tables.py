"""The one table formatter of `bench`, `matrix` and the benchmark scripts: aligned text and Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    """Text cells under a header. The first ``left`` columns are left-aligned, the rest right-aligned."""

    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    left: int = 1

    def text(self) -> str:
        """Columns two spaces apart, a dashed rule under the header, no trailing blanks."""
        table = [list(self.columns)] + [list(r) for r in self.rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(self.columns))]
        lines = []
        for n, r in enumerate(table):
            lines.append("  ".join(c.ljust(w) if i < self.left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        """A GitHub Markdown table; '|' inside a cell is escaped, numbers are right-aligned."""
        esc = markdown_escape
        lines = ["| " + " | ".join(esc(c) for c in self.columns) + " |",
                 "|" + "|".join("---" if i < self.left else "---:" for i in range(len(self.columns))) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in self.rows]
        return "\n".join(lines)


def markdown_escape(text: str) -> str:
    """Text for a Markdown line outside a table cell, with '|' escaped as in cells."""
    return text.replace("|", "\\|")

"""The report view laid out by the Jinja2 templates in templates/: report.md and report.html."""

from __future__ import annotations

import base64
import functools
import re
from typing import Any, Sequence

from coatnet_deploy.report.blocks import Cell, Figure, ReportView, Section
from coatnet_deploy.report.view import build_view


def md_escape(text: Any) -> str:
    """Text -> literal inside a Markdown table cell or paragraph: no cell split, emphasis, code or tag."""
    text = str(text).replace("\n", " ")
    text = re.sub(r"([\\|*`])", r"\\\1", text)  # backslash first: each is escaped once
    # Only tag-like '<' would be read as HTML; '<= 0.2' stays readable in a terminal.
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def md_code(text: Any) -> str:
    """Text -> a Markdown code span (literal inside: only the table's '|' needs escaping)."""
    text = str(text).replace("\n", " ").replace("|", "\\|")
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def md_cell(cell: Cell) -> str:
    """A view Cell -> its Markdown text (code spans, **bold** for strong text and failures)."""
    if cell.style == "code":
        return md_code(cell.text) if cell.text else ""
    body = md_escape(cell.text)
    return f"**{body}**" if cell.style in ("strong", "fail") and body else body


def _figure_uri(figure: Figure) -> str | None:
    """A view Figure -> 'data:image/png;base64,...', or None when there is nothing to plot."""
    from coatnet_deploy.report import plots

    png = plots.draw(figure)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii") if png else None


@functools.lru_cache(maxsize=None)
def _env(kind: str):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("coatnet_deploy.report", "templates"),
        autoescape=(kind == "html"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(md=md_escape, md_cell=md_cell)
    env.globals.update(figure_uri=_figure_uri)
    return env


def render_markdown(report: dict, manifest: dict | None, extra_sections: Sequence[Section] = ()) -> str:
    """report.json dict + manifest.json dict (+ target sections) -> report.md text."""
    return render_view_markdown(build_view(report, manifest, extra_sections))


def render_html(report: dict, manifest: dict | None, extra_sections: Sequence[Section] = ()) -> str:
    """report.json dict + manifest.json dict (+ target sections) -> a self-contained report.html
    (inline CSS, plots as base64 PNG, no script)."""
    return render_view_html(build_view(report, manifest, extra_sections))


def render_view_markdown(view: ReportView) -> str:
    """Any ReportView (an export's, a comparison's) -> Markdown, through report.md.j2."""
    text = _env("md").get_template("report.md.j2").render(view=view)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def notebook_iframe(page: str, title: str) -> str:
    """A whole HTML page -> what a ``_repr_html_`` returns: the page in an iframe, so its CSS stays out of Jupyter's."""
    import html

    return (f'<iframe title="{html.escape(title)}" style="width:100%;height:640px;border:1px solid #ccc" '
            f'srcdoc="{html.escape(page, quote=True)}"></iframe>')


def render_view_html(view: ReportView) -> str:
    """Any ReportView -> a self-contained HTML page, through report.html.j2."""
    return _env("html").get_template("report.html.j2").render(view=view)

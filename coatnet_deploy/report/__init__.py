"""The export reports: report.json + manifest.json -> one view (view.py) -> report.md and report.html.

Targets add their own parts as extra sections, built with the helpers exported here
(candidates_section, or the blocks in report.blocks directly); this package knows no target names.
"""

from coatnet_deploy.report.blocks import Cell, Figure, ItemList, Paragraph, ReportView, Section, Table
from coatnet_deploy.report.render import render_html, render_markdown
from coatnet_deploy.report.view import build_view, candidates_section

__all__ = [
    "Cell", "Figure", "ItemList", "Paragraph", "ReportView", "Section", "Table",
    "build_view", "candidates_section", "render_html", "render_markdown",
]

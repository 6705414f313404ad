"""The export: a chain of typed steps (``steps``), run in order by ``pipeline.export``, documented by
``documents`` (the one writer of report.json and manifest.json)."""

from coatnet_deploy.exporting.pipeline import ExportResult, export

__all__ = ["ExportResult", "export"]

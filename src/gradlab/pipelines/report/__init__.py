"""Report stage: tables, figures and a self-contained HTML page from stored results only."""

from gradlab.pipelines.report.pipeline import create_pipeline

__all__ = ["create_pipeline"]

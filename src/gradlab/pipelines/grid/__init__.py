"""Grid stage: expand the baseline and studies into validated run specs."""

from gradlab.pipelines.grid.pipeline import create_pipeline

__all__ = ["create_pipeline"]

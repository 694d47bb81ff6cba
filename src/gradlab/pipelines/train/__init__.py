"""Train stage: one MLP per run spec, probed, tracked in MLflow, resumable."""

from gradlab.pipelines.train.pipeline import create_pipeline

__all__ = ["create_pipeline"]

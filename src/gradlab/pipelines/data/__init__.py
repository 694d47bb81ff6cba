"""Data stage: generate datasets, split them, normalize the inputs."""

from gradlab.pipelines.data.pipeline import create_pipeline

__all__ = ["create_pipeline"]

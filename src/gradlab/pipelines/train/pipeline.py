"""Train stage DAG."""

from kedro.pipeline import Node, Pipeline

from gradlab.pipelines.train.nodes import train_grid


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=train_grid,
                inputs={
                    "run_specs": "run_specs",
                    "model_inputs": "model_inputs",
                    "train": "params:train",
                },
                outputs=["runs", "history", "layer_stats", "distributions"],
                name="train_grid_node",
            )
        ],
        tags="train",
    )

"""Train stage DAG: train the runs without a current result, then collect every stored result."""

from kedro.pipeline import Node, Pipeline

from gradlab.pipelines.train.nodes import collect_results, train_runs


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=train_runs,
                inputs={
                    "run_specs": "run_specs",
                    "model_inputs": "model_inputs",
                    "train": "params:train",
                },
                outputs="trained_runs",
                name="train_runs_node",
            ),
            Node(
                func=collect_results,
                inputs={
                    "run_specs": "run_specs",
                    "trained_runs": "trained_runs",
                    "train": "params:train",
                },
                outputs=["runs", "history", "layer_stats", "distributions", "spectrum"],
                name="collect_results_node",
            ),
        ],
        tags="train",
        # one collapsible group in kedro-viz; datasets keep their catalog names
        namespace="train",
        prefix_datasets_with_namespace=False,
    )

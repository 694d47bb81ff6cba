"""Data stage DAG: generate → split → normalize."""

from kedro.pipeline import Node, Pipeline

from gradlab.pipelines.data.nodes import generate_datasets, normalize_datasets, split_datasets


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=generate_datasets,
                inputs="params:data",
                outputs="raw_datasets",
                name="generate_datasets_node",
            ),
            Node(
                func=split_datasets,
                inputs={"raw_datasets": "raw_datasets", "data": "params:data"},
                outputs="split_datasets",
                name="split_datasets_node",
            ),
            Node(
                func=normalize_datasets,
                inputs={"split_datasets": "split_datasets", "data": "params:data"},
                outputs=["model_inputs", "normalization_stats", "model_input_params"],
                name="normalize_datasets_node",
            ),
        ],
        tags="data",
        # one collapsible group in kedro-viz; datasets keep their catalog names
        namespace="data",
        prefix_datasets_with_namespace=False,
    )

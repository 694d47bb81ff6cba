"""Grid stage DAG."""

from kedro.pipeline import Node, Pipeline

from gradlab.pipelines.grid.nodes import expand_grid


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=expand_grid,
                inputs={"grid": "params:grid", "data": "params:data"},
                outputs=["run_specs", "studies"],
                name="expand_grid_node",
            )
        ],
        tags="grid",
        # one collapsible group in kedro-viz; datasets keep their catalog names
        namespace="grid",
        prefix_datasets_with_namespace=False,
    )

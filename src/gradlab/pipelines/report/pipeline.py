"""Report stage DAG: stored results → tables, figures, report.html (no training node).

A figure is written once as ``<name>@figure`` (a ``MatplotlibDataset``) and read back as
``<name>@png`` (its bytes) by the HTML node, so no figure is rendered twice. The layer × step
maps are PNG bytes from the start (drawn with Pillow): one dataset, ``layer_step_plots``, that
their node saves and the HTML node loads.
"""

from collections.abc import Callable
from typing import Any

from kedro.pipeline import Node, Pipeline

from gradlab.pipelines.report import nodes

# figure key (gradlab.core.report.FLOW_/TRAINING_/SPECTRUM_/THEORY_FIGURES) → its node, inputs
_FIGURES: dict[str, tuple[Callable[..., Any], list[str]]] = {
    "grad_flow": (nodes.draw_gradient_flow, ["runs", "studies", "layer_stats"]),
    "weight_grad_violins": (
        nodes.draw_weight_gradients,
        ["runs", "studies", "distributions", "report"],
    ),
    "activation_hist": (nodes.draw_activations, ["runs", "studies", "distributions", "report"]),
    "saturation": (nodes.draw_saturation, ["runs", "studies", "layer_stats", "report"]),
    "theory_slopes": (nodes.draw_theory_slopes, ["theory"]),
    "theory_profiles": (nodes.draw_theory_profiles, ["runs", "studies", "layer_stats"]),
    "phase_diagram": (nodes.draw_phase_diagram, ["runs", "report"]),
    "jacobian_density": (nodes.draw_jacobian_density, ["runs", "studies", "spectrum"]),
    "jacobian_spread": (nodes.draw_jacobian_spread, ["runs", "studies", "spectrum"]),
}
# catalog name of a node input where it differs from the argument's name
_DATASETS = {"theory": "theory_table", "runs": "judged_runs", "report": "params:report"}


def create_pipeline(**kwargs) -> Pipeline:
    tables = [
        # the verdicts under the current rule, from the stored numbers: a recalibrated rule, or
        # a runs table from an older gradlab, needs no retraining
        Node(func=nodes.judge_runs, inputs="runs", outputs="judged_runs", name="judge_runs_node"),
        Node(
            func=nodes.check_claims,
            inputs={
                "runs": "judged_runs",
                "history": "history",
                "layer_stats": "layer_stats",
                "claims": "params:claims",
            },
            outputs="claims_table",
            name="check_claims_node",
        ),
        Node(
            func=nodes.summarize_studies,
            inputs={"runs": "judged_runs", "studies": "studies"},
            outputs="study_summary",
            name="summarize_studies_node",
        ),
        Node(
            func=nodes.tabulate_gradient_flow,
            inputs={"runs": "judged_runs", "layer_stats": "layer_stats"},
            outputs="gradient_flow_table",
            name="tabulate_gradient_flow_node",
        ),
        Node(
            func=nodes.tabulate_theory,
            inputs={"runs": "judged_runs", "gradient_flow": "gradient_flow_table"},
            outputs="theory_table",
            name="tabulate_theory_node",
        ),
    ]
    figures = [
        Node(
            func=func,
            inputs={arg: _DATASETS.get(arg, arg) for arg in args},
            outputs=f"{key}_plot@figure",
            name=f"{func.__name__}_node",
        )
        for key, (func, args) in _FIGURES.items()
    ]
    figures.append(
        Node(
            func=nodes.draw_studies,
            inputs={
                "runs": "judged_runs",
                "studies": "studies",
                "history": "history",
                "layer_stats": "layer_stats",
                "report": "params:report",
            },
            outputs="study_plots@figure",
            name="draw_studies_node",
        )
    )
    figures.append(
        Node(
            func=nodes.draw_layer_step_maps,
            inputs={"runs": "judged_runs", "studies": "studies", "layer_stats": "layer_stats"},
            outputs=["layer_step_plots", "layer_step_changes"],
            name="draw_layer_step_maps_node",
        )
    )
    page = Node(
        func=nodes.build_report,
        inputs={
            "runs": "judged_runs",
            "studies": "studies",
            "claims": "claims_table",
            "study_summary": "study_summary",
            "gradient_flow": "gradient_flow_table",
            "theory": "theory_table",
            "layer_stats": "layer_stats",
            "layer_step_changes": "layer_step_changes",
            "spectrum": "spectrum",
            # the saved files read back (transcoding): the runner orders this node after them
            "study_pngs": "study_plots@png",
            "layer_step_pngs": "layer_step_plots",  # PNG bytes already: saved, then loaded
            **{key: f"{key}_plot@png" for key in _FIGURES},
        },
        outputs="report_html",
        name="build_report_node",
    )
    # one collapsible group in kedro-viz; datasets keep their catalog names
    return Pipeline(
        [*tables, *figures, page],
        tags="report",
        namespace="report",
        prefix_datasets_with_namespace=False,
    )

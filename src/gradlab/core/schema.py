"""The columns of gradlab's tables, named once.

The train stage writes a run's tables (``gradlab.core.train``), the result store keeps them,
``gradlab.grid_runner.collect`` gathers every run's into ``runs``, ``history``, ``layer_stats``
and ``distributions`` (adding ``run_id``), the report reads them and tracking sends them to
MLflow. What each per-layer ``quantity`` means is registered in ``gradlab.core.quantities``;
what the report's columns mean, in its glossary (``gradlab.core.report.page.GLOSSARY``).
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import ArrayLike

# A run's history, one row per epoch and metric (train_loss, val_loss, val_metric, lr, grad_norm).
HISTORY_COLUMNS = {"epoch": np.int64, "metric": str, "value": np.float64}
# layer_stats and distributions: one row per probe phase (init, train, theory), step, layer and
# quantity (layer 0: the whole network, or a residual net's stem for a weight quantity; depth + 1:
# the output head).
LONG_COLUMNS = {
    "phase": str,
    "step": np.int64,
    "layer": np.int64,
    "quantity": str,
    "value": np.float64,
}
# distributions: the same columns, the sampled values in float32 as the tensors hold them
DISTRIBUTION_COLUMNS = {**LONG_COLUMNS, "value": np.float32}
# a long table row's phase: a probe at init, one during training, the mean-field prediction
PHASES = ("init", "train", "theory")
# spectrum: the input–output Jacobian's singular values (gradlab.core.spectrum), one row per
# phase, step, input point and statistic, and one per value of the log10_s sample
SPECTRUM_COLUMNS = {
    "phase": str,
    "step": np.int64,
    "point": np.int64,
    "statistic": str,
    "value": np.float64,
}

# What each run's summary says of mean-field theory beside its measurement at init.
THEORY_COLUMNS = (
    "measured_log_slope",
    "theory_log_slope",
    "theory_first_last_ratio",
    "theory_chi1",
    "theory_depth_scale",
    "theory_sigma_w2",
    "theory_sigma_b2",
    # the correlation map's fixed point, its slope and the depth scales (Schoenholz et al. 2017)
    "theory_c_star",
    "theory_chi_c",
    "theory_xi_c",
    "theory_xi_q",
    # the input–output Jacobian's mean s² and var(s²) over its spectrum, by free probability
    # (gradlab.core.spectrum_theory)
    "theory_jacobian_mean_s2",
    "theory_jacobian_var_s2",
    "theory_verdict",
)
# The Jacobian's spectrum at init, each statistic of gradlab.core.spectrum averaged over the
# measured input points
JACOBIAN_COLUMNS = (
    "jacobian_mean_s2",
    "jacobian_var_s2",
    "jacobian_s_max",
    "jacobian_s_min",
    "jacobian_frac_well_conditioned",
)
# The columns of the runs table that come from each run's stored summary (beside its spec).
SUMMARY_COLUMNS = (
    "status",
    "verdict",
    "diverged_step",
    "metric_name",
    "final_train_loss",
    "final_val_loss",
    "final_val_metric",
    "epochs_done",
    "steps",
    "wall_s",
    "steps_per_s",
    "replicas",
    "init_grad_ratio",
    "end_grad_ratio",
    "end_saturation",
    "end_dead_frac",
    *THEORY_COLUMNS,
    *JACOBIAN_COLUMNS,
    "mlflow_run_id",
    "error",
)
# Of them, the ones that hold text; every other summary column is a number.
TEXT_COLUMNS = frozenset(
    {"status", "verdict", "metric_name", "theory_verdict", "mlflow_run_id", "error"}
)

TEXT = pd.Series(["text"]).dtype  # pandas' dtype for text: str since pandas 3, object before


def text_column(labels: Sequence[str], codes: ArrayLike) -> pd.api.extensions.ExtensionArray:
    """``labels[codes]`` as a column of pandas' text dtype, e.g. a long table's ``quantity``.

    Arrow takes the labels by code 4× faster than pandas converts as many Python strings
    (36 vs 143 µs for 4,600 rows), and a run's tables have several such columns.
    """
    taken = pa.array(labels, pa.large_string()).take(np.asarray(codes, dtype=np.intp))
    return pd.array(taken, dtype=TEXT)


def empty_table(name: str) -> pd.DataFrame:
    """A result table with no rows but its columns and dtypes: ``history``, ``distributions``,
    ``spectrum``, else a long table."""
    columns = {
        "history": HISTORY_COLUMNS,
        "distributions": DISTRIBUTION_COLUMNS,
        "spectrum": SPECTRUM_COLUMNS,
    }.get(name, LONG_COLUMNS)
    return pd.DataFrame({column: pd.Series(dtype=kind) for column, kind in columns.items()})

"""Hand-made changes over training for the layer × step maps' tests: ``make_results``' tables
(whose profiles stay the same at every probe step) with one layer of some runs drifting, or a
diverged run that trained a while before it blew up."""

import math

import pandas as pd

from tests.helpers.results import DIVERGED, make_results


def _runs_where(runs: pd.DataFrame, where: dict) -> pd.Series:
    mask = pd.Series(True, index=runs.index)
    for key, value in where.items():
        mask &= runs[key] == value
    return runs.loc[mask, "run_id"]


def drift(
    results: dict[str, pd.DataFrame], where: dict, layer: int, factor: float, from_step: int = 10
) -> dict[str, pd.DataFrame]:
    """``results`` with RMS ∂L/∂h of ``layer`` multiplied by ``factor`` at every training probe
    step ≥ ``from_step`` of the runs matching ``where`` (e.g. ``{"activation": "sigmoid"}``)."""
    stats = results["layer_stats"].copy()
    rows = (
        stats["run_id"].isin(_runs_where(results["runs"], where))
        & (stats["phase"] == "train")
        & (stats["quantity"] == "grad_preact_rms")
        & (stats["layer"] == layer)
        & (stats["step"] >= from_step)
    )
    stats.loc[rows, "value"] *= factor
    return results | {"layer_stats": stats}


def diverging_midway(blown_at: int = 10) -> dict[str, pd.DataFrame]:
    """``make_results(diverge_all=True)`` where both seeds of the ``DIVERGED`` setting trained
    with their init profile until step ``blown_at``, measured NaN there and stopped: the other
    settings of their study go on to step 20."""
    results = make_results(diverge_all=True)
    where = {k: v for k, v in DIVERGED.items() if k != "seed"}
    blown = _runs_where(results["runs"], where)
    stats = results["layer_stats"]
    mine = stats["run_id"].isin(blown)
    init = stats[mine & (stats["phase"] == "init")]
    kept = [stats[~(mine & (stats["phase"] == "train"))]]
    for step in range(0, blown_at + 1, 10):
        rows = init.assign(phase="train", step=step)
        if step == blown_at:
            rows = rows.assign(value=math.nan)
        kept.append(rows)
    runs = results["runs"].copy()
    runs.loc[runs["run_id"].isin(blown), "diverged_step"] = float(blown_at)
    return results | {"layer_stats": pd.concat(kept, ignore_index=True), "runs": runs}

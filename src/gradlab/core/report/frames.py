"""The frames the figures draw: which runs the figures at init compare, and the rows each figure
reads from the stored tables."""

import math

import numpy as np
import pandas as pd

from gradlab.core import theory
from gradlab.core.architectures import ARCHITECTURES
from gradlab.core.plots.layer_steps import log10_rms, relative_to_top
from gradlab.core.report.tables import (
    display_axes,
    profile_quantities,
    runs_in_study,
    setting_label,
    study_axes,
)
from gradlab.core.residual import residual_alpha

# The init a "reference" view shows when a study compares several: PyTorch's own nn.Linear init.
REFERENCE_INIT = "default"
# The phase diagram is drawn for tanh: bounded, odd and with an order-to-chaos transition at
# σ_w² = 1 (σ_b² = 0), the case of Poole et al. (2016).
PHASE_ACTIVATION = "tanh"
# Where the phase diagram's axes end, beyond the runs placed on it.
PHASE_SIGMA_W2 = (1e-2, 10.0)
PHASE_SIGMA_B2_MAX = 0.5
# Study axes that change the network's architecture: a study over one of them gets a figure of
# its gradient profiles at init (``architecture_frames``, ``plot_architecture_study``).
ARCH_AXES = ("arch", "residual_scale", "residual_branch")
# How a residual_scale rule reads in a legend or a finding (a number reads as itself).
ALPHA_LABELS = {"1/sqrt(depth)": "α = 1/√L", "rezero": "ReZero (α = 0, learned)"}


def init_selection(runs: pd.DataFrame, studies: pd.DataFrame) -> pd.DataFrame:
    """The runs the figures at init compare: activation × init, at one depth.

    The runs of the first study that varies both ``activation`` and ``init``; failing that, of
    the first that varies ``activation``, at its greatest depth; failing that, every run.

    Args:
        runs: The runs table.
        studies: The studies table.
    Returns:
        The selected rows of ``runs``.
    """
    rows = list(studies.itertuples(index=False))
    for wanted in ({"activation", "init"}, {"activation"}):
        for study in rows:
            if wanted <= set(study.axes.split(",")):
                members = runs_in_study(runs, study.study)
                if not members.empty:
                    return members[members["depth"] == members["depth"].max()]
    return runs


def _axes_of(selection: pd.DataFrame) -> pd.DataFrame:
    return selection[["run_id", "activation", "init_name", "depth", "seed"]]


def flow_stats(selection: pd.DataFrame, layer_stats: pd.DataFrame) -> pd.DataFrame:
    """RMS ∂L/∂h of hidden layers and ‖∂L/∂W‖ of every layer at init, for ``plot_gradient_flow``."""
    stats = layer_stats[
        (layer_stats["phase"] == "init")
        & layer_stats["quantity"].isin(["grad_preact_rms", "grad_weight_norm"])
        & layer_stats["run_id"].isin(selection["run_id"])
    ]
    stats = stats.merge(_axes_of(selection), on="run_id")
    hidden = stats["layer"].between(1, stats["depth"])
    head = (stats["quantity"] == "grad_weight_norm") & (stats["layer"] == stats["depth"] + 1)
    return stats[hidden | head]


def reference_runs(selection: pd.DataFrame) -> pd.DataFrame:
    """Per activation, the runs with the reference init (``default``, else the most common)."""
    parts = []
    for _, group in selection.groupby("activation", sort=False):
        names = group["init_name"].value_counts()
        init = REFERENCE_INIT if REFERENCE_INIT in names.index else names.index[0]
        parts.append(group[group["init_name"] == init])
    return pd.concat(parts) if parts else selection


def distribution_samples(
    selection: pd.DataFrame, distributions: pd.DataFrame, quantity: str
) -> pd.DataFrame:
    """Sampled values of one quantity at init for the selected runs, with their axes."""
    samples = distributions[
        (distributions["phase"] == "init")
        & (distributions["quantity"] == quantity)
        & distributions["run_id"].isin(selection["run_id"])
    ]
    return samples.merge(_axes_of(selection), on="run_id")


def saturation_stats(selection: pd.DataFrame, layer_stats: pd.DataFrame) -> pd.DataFrame:
    """``act_saturation`` per training step and hidden layer of runs whose φ can saturate."""
    stats = layer_stats[
        (layer_stats["phase"] == "train")
        & (layer_stats["quantity"] == "act_saturation")
        & layer_stats["run_id"].isin(selection["run_id"])
    ]
    # NaN marks activations without a flat region (relu, gelu, ...): nothing to saturate
    stats = stats[np.isfinite(stats["value"])]
    return stats.merge(_axes_of(selection), on="run_id")


def theory_profiles(selection: pd.DataFrame, layer_stats: pd.DataFrame) -> pd.DataFrame:
    """Measured RMS ∂L/∂h at init, normalized to the last hidden layer, and the theory rows.

    Returns:
        ``activation``, ``init_name``, ``layer``, ``source`` (``measured``/``theory``), ``seed``
        (−1 for theory), ``value``; theory rows once per (activation, init).
    """
    stats = layer_stats[
        layer_stats["phase"].isin(["init", "theory"])
        & (layer_stats["quantity"] == "grad_preact_rms")
        & layer_stats["run_id"].isin(selection["run_id"])
    ].merge(_axes_of(selection), on="run_id")
    stats = stats[stats["layer"].between(1, stats["depth"])]
    measured = stats[stats["phase"] == "init"]
    last = measured[measured["layer"] == measured["depth"]].set_index("run_id")["value"]
    with np.errstate(divide="ignore", invalid="ignore"):
        measured = measured.assign(
            value=measured["value"] / measured["run_id"].map(last).astype(float)
        )
    predicted = stats[stats["phase"] == "theory"].drop_duplicates(
        ["activation", "init_name", "layer"]
    )
    columns = ["activation", "init_name", "layer", "source", "seed", "value"]
    return pd.concat(
        [
            measured.assign(source="measured")[columns],
            predicted.assign(source="theory", seed=-1)[columns],
        ],
        ignore_index=True,
    )


def phase_points(runs: pd.DataFrame, activation: str) -> pd.DataFrame:
    """Distinct (σ_w², σ_b², init) of the runs with ``activation``, with how many runs sit there."""
    columns = ["theory_sigma_w2", "theory_sigma_b2"]
    if not set(columns) <= set(runs.columns):
        return pd.DataFrame(columns=["sigma_w2", "sigma_b2", "init_name", "n_runs"])
    chosen = runs[(runs["activation"] == activation)].dropna(subset=columns)
    return (
        chosen.groupby([*columns, "init_name"])
        .size()
        .rename("n_runs")
        .reset_index()
        .rename(columns={"theory_sigma_w2": "sigma_w2", "theory_sigma_b2": "sigma_b2"})
    )


def phase_grid(activation: str, points: pd.DataFrame, resolution: int) -> pd.DataFrame:
    """χ₁ at the fixed point (``theory.chi1_grid``) on a mesh that contains every point.

    Args:
        activation: A key of ``theory.ACTIVATIONS``.
        points: ``phase_points``' output.
        resolution: Mesh points along σ_w² (log-spaced); σ_b² gets 5/8 as many.
    Returns:
        ``sigma_w2``, ``sigma_b2``, ``chi1``, one row per mesh point.
    """
    low, high = PHASE_SIGMA_W2
    top = PHASE_SIGMA_B2_MAX
    positive = points["sigma_w2"][points["sigma_w2"] > 0]
    if not positive.empty:
        low, high = min(low, positive.min() / 2), max(high, positive.max() * 2)
        top = max(top, points["sigma_b2"].max() * 1.2)
    sigma_w2 = np.logspace(np.log10(low), np.log10(high), resolution)
    sigma_b2 = np.linspace(0.0, top, max(resolution * 5 // 8, 2))
    chi = theory.chi1_grid(activation, sigma_w2, sigma_b2)
    sw, sb = np.meshgrid(sigma_w2, sigma_b2)
    return pd.DataFrame({"sigma_w2": sw.ravel(), "sigma_b2": sb.ravel(), "chi1": chi.ravel()})


def study_frames(
    runs: pd.DataFrame, history: pd.DataFrame, study: str, axes: str, loss: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """What ``plot_study`` draws for one study.

    Args:
        runs: The runs table.
        history: The long per-epoch history.
        study: The study's name.
        axes: Its comma-separated axes.
        loss: The history metric of the loss curves (``val_loss`` or ``train_loss``).
    Returns:
        The study's runs, their loss per epoch (both with the drawn axis columns), and those
        one or two column names.
    """
    members = runs_in_study(runs, study)
    members, drawn = display_axes(members, study_axes(members, axes))
    curves = history[(history["metric"] == loss) & history["run_id"].isin(members["run_id"])]
    curves = curves.merge(members[["run_id", *drawn]], on="run_id")
    return members, curves, drawn


def varies_architecture(runs: pd.DataFrame, study: str, axes: str) -> bool:
    """Whether ``study`` is about the architecture: its axes name one of ``ARCH_AXES`` (also
    with one value, e.g. a plain MLP of a residual baseline's depth) and it has runs."""
    return bool(set(axes.split(",")) & set(ARCH_AXES)) and not runs_in_study(runs, study).empty


def _net_labels(members: pd.DataFrame) -> pd.Series:
    """``plain MLP``, ``resmlp α = 1``, ``resmlp α = 1/√L``, … per run (the branch only where
    it varies): the network a line of the profile figure draws."""
    arch = members["arch"] if "arch" in members else pd.Series("mlp", index=members.index)
    scale = members.get("residual_scale", pd.Series(None, index=members.index))
    branch = members.get("residual_branch", pd.Series(None, index=members.index))
    several = branch.nunique() > 1

    def label(name: str, alpha: object, form: object) -> str:
        if name == "mlp":
            return "plain MLP"
        text = name
        if not pd.isna(alpha):
            text += f" {ALPHA_LABELS.get(str(alpha), f'α = {alpha}')}"
        return text + (f" {form}" if several and not pd.isna(form) else "")

    return pd.Series(
        [label(*values) for values in zip(arch, scale, branch, strict=True)], index=members.index
    )


def _net_order(members: pd.DataFrame) -> list[str]:
    """Net labels in the registry's order of architectures, then by α at init, largest first."""
    archs = list(ARCHITECTURES)

    def key(row: pd.Series) -> tuple:
        arch = row.get("arch", "mlp")
        scale = row.get("residual_scale")
        alpha = math.nan if pd.isna(scale) else residual_alpha(str(scale), int(row["depth"]))[0]
        rank = archs.index(arch) if arch in archs else len(archs)
        return (rank, -alpha if math.isfinite(alpha) else 0.0, str(row["net"]))

    ordered = members.assign(_key=members.apply(key, axis=1)).sort_values("_key")
    return list(dict.fromkeys(ordered["net"]))


def architecture_frames(
    runs: pd.DataFrame, layer_stats: pd.DataFrame, study: str, axes: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """What ``plot_architecture_study`` draws for a study over the architecture: each
    run's gradient profile at init and the mean-field prediction, and how each run ended.

    The profile is each run's ``Architecture.profile`` (``profile_quantities``): RMS ∂L/∂h of
    hidden layers 1 … depth for an MLP, RMS ∂L/∂x of the stream entering blocks 1 … depth for a
    residual net. The theory rows of ``layer_stats`` are normalized to 1 at the last layer;
    here each run's are scaled to its measured last layer and averaged over seeds, so the line
    starts where the measurement ends (as in ``theory_profiles``, which divides instead).

    Args:
        runs: The runs table.
        layer_stats: The long per-layer statistics (phases ``init`` and ``theory``).
        study: The study's name.
        axes: Its comma-separated axes.
    Returns:
        ``profiles``: ``run_id`` (empty for theory), ``net`` (the line: ``plain MLP``,
        ``resmlp α = 1``, …), ``setting`` (the panel: the study's other varied axes, e.g.
        ``norm_layer=none``; empty when there are none), ``seed`` (−1 for theory), ``layer``,
        ``source`` (``measured``/``theory``), ``value``; ``outcomes``: one row per run with
        ``net``, ``setting``, ``seed``, ``status``, ``final_val_metric``, ``metric_name``; and
        the net labels in drawing order (the plain net first, then α from the largest).
    """
    members = runs_in_study(runs, study)
    others = [a for a in study_axes(members, axes) if a not in ARCH_AXES]
    members = members.assign(
        net=_net_labels(members),
        setting=members.apply(lambda row: setting_label(row, others), axis=1) if others else "",
    )
    quantity = layer_stats["run_id"].map(profile_quantities(members))
    stats = layer_stats[
        layer_stats["phase"].isin(["init", "theory"]) & (layer_stats["quantity"] == quantity)
    ].merge(members[["run_id", "net", "setting", "seed", "depth"]], on="run_id")
    stats = stats[stats["layer"].between(1, stats["depth"])]
    measured = stats[stats["phase"] == "init"].assign(source="measured")
    last = measured[measured["layer"] == measured["depth"]].set_index("run_id")["value"]
    predicted = stats[stats["phase"] == "theory"]
    predicted = (
        predicted.assign(value=predicted["value"] * predicted["run_id"].map(last).astype(float))
        .groupby(["net", "setting", "layer"], as_index=False, sort=False)["value"]
        .mean()
        .assign(run_id="", seed=-1, source="theory")
    )
    columns = ["run_id", "net", "setting", "seed", "layer", "source", "value"]
    profiles = pd.concat([measured[columns], predicted[columns]], ignore_index=True)
    outcome_columns = ["run_id", "net", "setting", "seed", "status", "final_val_metric"]
    outcomes = members[[*outcome_columns, "metric_name"]].reset_index(drop=True)
    return profiles, outcomes, _net_order(members)


# A layer × step map's finding reads "early training": from step 0 to the first probe step at
# or after this one (or a shorter run's last whole profile).
EARLY_STEPS = 100
# Runs with these equal are planned to take the same steps: a setting's map spans the longest of
# them, so the steps a diverged run never reached are drawn blank rather than cut off.
_SAME_LENGTH = ("dataset", "epochs", "batch_size")
# The columns of ``layer_step_frames``' maps.
MAP_COLUMNS = ("setting", "quantity", "layer", "step", "log_rms", "relative")


def training_profiles(runs: pd.DataFrame, layer_stats: pd.DataFrame) -> pd.DataFrame:
    """Each run's gradient profile at every probe step of training: the rows a layer × step map
    draws, picked from ``layer_stats`` once for every study.

    The profile is the run's ``Architecture.profile`` (``profile_quantities``): RMS ∂L/∂h of
    hidden layers 1 … depth for an MLP, RMS ∂L/∂x of the stream entering blocks 1 … depth for a
    residual net. Only phase ``train``: its step 0 is the untrained net on its first batch, so
    the ``init`` probe (a fixed batch, same weights) would add a second, nearly equal column.

    Args:
        runs: The runs table (``run_id``, ``arch``).
        layer_stats: The long per-layer statistics.
    Returns:
        ``run_id``, ``step``, ``layer``, ``quantity``, ``value`` (the RMS as stored: NaN or inf
        where a run blew up, 0 where it underflowed).
    """
    quantity = profile_quantities(runs)
    rows = (layer_stats["phase"] == "train").to_numpy(bool) & layer_stats["quantity"].isin(
        set(quantity.dropna())
    ).to_numpy(bool)
    stats = layer_stats.loc[rows, ["run_id", "step", "layer", "quantity", "value"]]
    # a residual net has the branch's ∂L/∂h too: keep the quantity of each run's profile
    keep = stats["quantity"].to_numpy() == stats["run_id"].map(quantity).to_numpy()
    return stats[keep & (stats["layer"].to_numpy() >= 1)].reset_index(drop=True)


def layer_step_frames(
    runs: pd.DataFrame, profiles: pd.DataFrame, study: str, axes: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What ``layer_step_maps_png`` draws for one study: per setting, log₁₀ RMS of the
    back-propagated gradient over (layer, probe step), averaged over seeds in log space.

    A cell is the mean over the setting's seeds of log₁₀ RMS, and empty (NaN) unless every seed
    that left statistics has a value there: a run that diverged has no value after (and often
    at) the step it blew up, and a mean over the seeds that are left would hide that. A value
    of 0 (underflow) is −inf and stays −inf. ``relative`` is the cell less the last layer's at
    the same step: the map's colour, the profile's shape with the overall scale (which falls as
    the loss falls) taken out.

    Args:
        runs: The runs table.
        profiles: ``training_profiles``' output.
        study: The study's name.
        axes: Its comma-separated axes.
    Returns:
        ``maps``: one row per setting, layer 1 … its depth and probe step of the study's runs
        planned as long as its own (same ``dataset``, ``epochs``, ``batch_size``), so that the
        steps a diverged run never reached are rows too: ``setting``, ``quantity``, ``layer``,
        ``step``, ``log_rms``, ``relative``; and ``outcomes``: one row per run: ``setting``,
        ``seed``, ``status``, ``diverged_step``, in the grid's order.
    """
    outcome_columns = ["setting", "seed", "status", "diverged_step"]
    members = runs_in_study(runs, study)
    if members.empty:
        return pd.DataFrame(columns=MAP_COLUMNS), pd.DataFrame(columns=outcome_columns)
    shown = study_axes(members, axes)
    members = members.assign(setting=[setting_label(row, shown) for _, row in members.iterrows()])
    # numpy from here: per setting, pandas indexing cost ~10 ms, this ~1
    member = pd.Index(members["run_id"]).get_indexer(profiles["run_id"])
    inside = member >= 0
    member = member[inside]
    step = profiles["step"].to_numpy()[inside]
    layer = profiles["layer"].to_numpy()[inside]
    value = log10_rms(profiles["value"].to_numpy(float)[inside])
    quantity = profiles["quantity"].to_numpy()[inside]
    settings, setting_of = np.unique(members["setting"].to_numpy(str), return_inverse=True)
    length = [c for c in _SAME_LENGTH if c in members.columns]
    planned = (  # per member: which length it was planned to train
        members.groupby(length, sort=False, dropna=False).ngroup().to_numpy()
        if length
        else np.zeros(len(members), int)
    )
    # one frame at the end, from a list per column: a frame per setting costs ~1 ms in pandas'
    # constructor alone
    columns: dict[str, list[np.ndarray]] = {name: [] for name in MAP_COLUMNS}
    for code in pd.unique(setting_of):  # the grid's order
        rows = setting_of[member] == code
        if not rows.any():  # every run failed: nothing measured
            continue
        alike = planned[member] == planned[setting_of == code][0]
        steps = np.unique(step[alike])  # every probe step of runs planned as long
        seeds, seed = np.unique(member[rows], return_inverse=True)
        depth = int(layer[rows].max())
        cube = np.full((len(seeds), depth, len(steps)), np.nan)  # (seed, layer, step)
        cube[seed, layer[rows] - 1, np.searchsorted(steps, step[rows])] = value[rows]
        mean = cube.mean(axis=0)  # NaN wherever a seed has none; −inf where one underflowed
        layers, at = np.meshgrid(np.arange(1, depth + 1), steps, indexing="ij")
        columns["setting"].append(np.full(mean.size, settings[code]))
        columns["quantity"].append(np.full(mean.size, quantity[rows][0]))
        columns["layer"].append(layers.ravel())
        columns["step"].append(at.ravel())
        columns["log_rms"].append(mean.ravel())
        columns["relative"].append(relative_to_top(mean).ravel())
    maps = pd.DataFrame(
        {name: np.concatenate(parts) if parts else [] for name, parts in columns.items()}
    )
    outcomes = members.reindex(columns=outcome_columns).reset_index(drop=True)
    return maps, outcomes

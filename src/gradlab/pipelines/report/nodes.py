"""Report stage nodes: thin adapters over ``gradlab.core.report`` and ``gradlab.core.plots``.

Figure nodes return figures; the catalog saves each once (``MatplotlibDataset``, at the dpi of its
``save_args``; logged to the parent MLflow run) and hands the saved PNG back to ``build_report``
under the same name with the ``@png`` transcoding, so every figure is rendered once. The layer ×
step maps are drawn with Pillow (a matplotlib figure of many small heatmaps costs ~0.4 s to save)
and leave their node as PNG bytes.
"""

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from gradlab.core import plots
from gradlab.core import report as core
from gradlab.core.claims import ClaimInputs
from gradlab.core.claims import check_claims as measure_claims
from gradlab.core.config import parse_claims, parse_report
from gradlab.core.verdict import judge


def judge_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Both verdicts and the outcome of every run under the current rule: the report's one
    verdict, which every other node reads (``judged_runs``). Judged again, not read from
    ``runs``: that table may come from an older gradlab or an older rule, and the report
    redraws stored results without training.

    Args:
        runs: One row per run, as the train stage stored it.
    Returns:
        The same rows with ``init_verdict``, ``verdict`` and ``trained`` (re)computed.
    """
    return judge(runs)


def check_claims(
    runs: pd.DataFrame,
    history: pd.DataFrame,
    layer_stats: pd.DataFrame,
    claims: dict[str, Any] | None,
) -> pd.DataFrame:
    """Measure a reproduction's claims and apply each one's rule.

    Args:
        runs: One row per run.
        history: The long per-epoch history.
        layer_stats: The long per-layer statistics.
        claims: ``params:claims`` (empty outside the reproduction environments).
    Returns:
        One row per claim: claim, source, paper, measured, rule, result (pass or fail).
    """
    return measure_claims(parse_claims(claims), ClaimInputs(runs, history, layer_stats))


def summarize_studies(runs: pd.DataFrame, studies: pd.DataFrame) -> pd.DataFrame:
    """Aggregate every study's runs over seeds.

    Args:
        runs: One row per run.
        studies: One row per study.
    Returns:
        One row per (study, setting): counts, final metrics (mean, sd), verdict counts.
    """
    return core.summarize_studies(runs, studies)


def tabulate_gradient_flow(runs: pd.DataFrame, layer_stats: pd.DataFrame) -> pd.DataFrame:
    """First/last-layer ∂L/∂h ratio and log-slope per run, at init and at the end of training.

    Args:
        runs: One row per run.
        layer_stats: The long per-layer statistics.
    Returns:
        One row per run.
    """
    return core.gradient_flow_table(runs, layer_stats)


def tabulate_theory(runs: pd.DataFrame, gradient_flow: pd.DataFrame) -> pd.DataFrame:
    """Predicted and measured log-slope and first/last ratio per run.

    Args:
        runs: One row per run.
        gradient_flow: The gradient-flow table.
    Returns:
        One row per run.
    """
    return core.theory_table(runs, gradient_flow)


def draw_gradient_flow(
    runs: pd.DataFrame, studies: pd.DataFrame, layer_stats: pd.DataFrame
) -> Figure:
    """∂L/∂h and ‖∂L/∂W‖ per layer at init, a line per activation, a column per init.

    Args:
        runs: One row per run.
        studies: One row per study (to choose the runs compared at init).
        layer_stats: The long per-layer statistics.
    Returns:
        The figure.
    """
    selection = core.init_selection(runs, studies)
    return plots.plot_gradient_flow(core.flow_stats(selection, layer_stats))


def draw_weight_gradients(
    runs: pd.DataFrame, studies: pd.DataFrame, distributions: pd.DataFrame, report: dict[str, Any]
) -> Figure:
    """Violins of weight-gradient entries per layer at init, per activation (reference init).

    Args:
        runs: One row per run.
        studies: One row per study.
        distributions: Sampled values per layer.
        report: ``params:report`` (``max_layers_violin``).
    Returns:
        The figure.
    """
    config = parse_report(report)
    selection = core.reference_runs(core.init_selection(runs, studies))
    samples = core.distribution_samples(selection, distributions, "grad_weight")
    return plots.plot_weight_grad_violins(samples, config.max_layers_violin)


def draw_activations(
    runs: pd.DataFrame, studies: pd.DataFrame, distributions: pd.DataFrame, report: dict[str, Any]
) -> Figure:
    """Histograms of activation values per layer at init, per activation and init.

    Args:
        runs: One row per run.
        studies: One row per study.
        distributions: Sampled values per layer.
        report: ``params:report`` (``max_layers_lines``).
    Returns:
        The figure.
    """
    config = parse_report(report)
    samples = core.distribution_samples(core.init_selection(runs, studies), distributions, "act")
    return plots.plot_activation_histograms(samples, config.max_layers_lines)


def draw_saturation(
    runs: pd.DataFrame, studies: pd.DataFrame, layer_stats: pd.DataFrame, report: dict[str, Any]
) -> Figure:
    """Saturated fraction per layer over training, for the activations that can saturate.

    Args:
        runs: One row per run.
        studies: One row per study.
        layer_stats: The long per-layer statistics.
        report: ``params:report`` (``max_layers_lines``).
    Returns:
        The figure.
    """
    config = parse_report(report)
    stats = core.saturation_stats(core.init_selection(runs, studies), layer_stats)
    return plots.plot_saturation(stats, config.max_layers_lines)


def draw_studies(
    runs: pd.DataFrame,
    studies: pd.DataFrame,
    history: pd.DataFrame,
    layer_stats: pd.DataFrame,
    report: dict[str, Any],
) -> dict[str, Figure]:
    """One figure per study: loss curves, final metric over seeds, heatmap for two axes; and for
    a study over the architecture (``arch``, ``residual_scale``), a second one: its gradient
    profiles at init against the mean-field theory, over how its runs ended. A study whose plain
    nets vary σ_w² and depth gets its trainability heatmap with 6 ξ_c on it (Schoenholz et al.
    2017), and one with BatchNorm nets the growth of their gradient at init against theory
    (Yang et al. 2019).

    Args:
        runs: One row per run.
        studies: One row per study.
        history: The long per-epoch history.
        layer_stats: The long per-layer statistics (phases ``init`` and ``theory``, and
            ``train`` at step 0 for BatchNorm's growth).
        report: ``params:report`` (``loss_curve``).
    Returns:
        Figures keyed ``<study>.png``, and where a study has them ``<study>.profiles.png``
        (``core.ARCHITECTURE_FIGURE``), ``<study>.trainability.png``
        (``core.TRAINABILITY_FIGURE``) and ``<study>.bn_growth.png`` (``core.BN_GROWTH_FIGURE``):
        the file names the catalog writes.
    """
    config = parse_report(report)
    figures = {}
    for study in studies.itertuples(index=False):
        members, curves, axes = core.study_frames(
            runs, history, study.study, study.axes, config.loss_curve
        )
        if members.empty:
            continue
        metric = core.metric_label(members["metric_name"])
        figures[f"{study.study}.png"] = plots.plot_study(
            members,
            curves,
            axes,
            study.question,
            metric,
            core.LOSS_LABELS[config.loss_curve],
        )
        if core.varies_architecture(runs, study.study, study.axes):
            profiles, outcomes, nets = core.architecture_frames(
                runs, layer_stats, study.study, study.axes
            )
            key = core.ARCHITECTURE_FIGURE.format(study=study.study)
            figures[f"{key}.png"] = plots.plot_architecture_study(
                profiles, outcomes, nets, study.question, metric
            )
        cells, panels = core.trainability_frames(runs, study.study, study.axes)
        if not cells.empty:
            key = core.TRAINABILITY_FIGURE.format(study=study.study)
            figures[f"{key}.png"] = plots.plot_trainability(
                cells, core.xi_c_curves(cells, panels), panels, study.question, metric
            )
        points, lines = core.bn_growth_frames(runs, layer_stats, study.study)
        if not points.empty:
            key = core.BN_GROWTH_FIGURE.format(study=study.study)
            figures[f"{key}.png"] = plots.plot_bn_growth(points, lines, study.question)
    return figures


def draw_layer_step_maps(
    runs: pd.DataFrame, studies: pd.DataFrame, layer_stats: pd.DataFrame
) -> tuple[dict[str, bytes], pd.DataFrame]:
    """Per study its layer × step maps (log₁₀ RMS of the back-propagated gradient over layer
    and probe step, a map per setting), and how much each setting's profile changed in early
    training, the table its finding reads. One node for both: ``layer_stats`` is read once
    (~0.4 s a load on the default grid).

    Args:
        runs: One row per run.
        studies: One row per study.
        layer_stats: The long per-layer statistics (phase ``train``).
    Returns:
        PNG bytes keyed by study name (the file names the catalog writes, ``<study>.png``),
        and ``core.early_change``'s rows of every study with ``study`` first.
    """
    profiles = core.training_profiles(runs, layer_stats)
    figures, changes = {}, []
    for study in studies.itertuples(index=False):
        maps, outcomes = core.layer_step_frames(runs, profiles, study.study, study.axes)
        if outcomes.empty:
            continue
        figures[study.study] = plots.layer_step_maps_png(maps, outcomes, study.question)
        changes.append(core.early_change(maps).assign(study=study.study))
    columns = ["study", *core.EARLY_CHANGE_COLUMNS]
    table = pd.concat(changes, ignore_index=True) if changes else pd.DataFrame(columns=columns)
    return figures, table[columns]


def draw_theory_slopes(theory: pd.DataFrame) -> Figure:
    """Measured against predicted log-slope of ∂L/∂h at init.

    Args:
        theory: The theory-vs-measurement table.
    Returns:
        The figure.
    """
    return plots.plot_theory_slopes(theory)


def draw_theory_profiles(
    runs: pd.DataFrame, studies: pd.DataFrame, layer_stats: pd.DataFrame
) -> Figure:
    """Measured ∂L/∂h profiles at init against the theory rows of ``layer_stats``.

    Args:
        runs: One row per run.
        studies: One row per study.
        layer_stats: The long per-layer statistics (phases ``init`` and ``theory``).
    Returns:
        The figure.
    """
    profiles = core.theory_profiles(core.init_selection(runs, studies), layer_stats)
    return plots.plot_theory_profiles(profiles)


def draw_phase_diagram(runs: pd.DataFrame, report: dict[str, Any]) -> Figure:
    """χ₁ over (σ_w², σ_b²) for tanh, with the critical line and the grid's tanh runs.

    Args:
        runs: One row per run (``theory_sigma_w2``, ``theory_sigma_b2`` place them).
        report: ``params:report`` (``phase_resolution``).
    Returns:
        The figure.
    """
    config = parse_report(report)
    points = core.phase_points(runs, core.PHASE_ACTIVATION)
    grid = core.phase_grid(core.PHASE_ACTIVATION, points, config.phase_resolution)
    return plots.plot_phase_diagram(grid, points, core.PHASE_ACTIVATION)


def draw_jacobian_density(
    runs: pd.DataFrame, studies: pd.DataFrame, spectrum: pd.DataFrame
) -> Figure:
    """Density of the Jacobian's log₁₀ singular values at init, per activation × init, at the
    depth of the study that compares most of them.

    Args:
        runs: One row per run.
        studies: One row per study.
        spectrum: The long spectrum table (the ``log10_s`` sample per run and point).
    Returns:
        The figure (one that says why, where no run was measured).
    """
    return plots.plot_spectrum_density(*core.density_frames(runs, studies, spectrum))


def draw_jacobian_spread(
    runs: pd.DataFrame, studies: pd.DataFrame, spectrum: pd.DataFrame
) -> Figure:
    """Spread v = Var[s²]/E[s²]² of the Jacobian's squared singular values against depth, with
    free-probability theory.

    Args:
        runs: One row per run (``theory_jacobian_*``).
        studies: One row per study.
        spectrum: The long spectrum table (``mean_s2``, ``var_s2`` per run and point).
    Returns:
        The figure (one that says why, where no setting was measured at two depths).
    """
    return plots.plot_spectrum_spread(*core.spread_frames(runs, studies, spectrum))


# noqa reason: a Kedro node takes one argument per dataset it reads
def build_report(  # noqa: PLR0913, PLR0917
    runs: pd.DataFrame,
    studies: pd.DataFrame,
    claims: pd.DataFrame,
    study_summary: pd.DataFrame,
    gradient_flow: pd.DataFrame,
    theory: pd.DataFrame,
    layer_stats: pd.DataFrame,
    layer_step_changes: pd.DataFrame,
    spectrum: pd.DataFrame,
    study_pngs: Mapping[str, Callable[[], bytes]],
    layer_step_pngs: Mapping[str, Callable[[], bytes]],
    **figure_pngs: bytes,
) -> str:
    """The self-contained HTML page.

    Args:
        runs: One row per run.
        studies: One row per study.
        claims: The claims table (empty: no claims section).
        study_summary: The per-study table.
        gradient_flow: The gradient-flow table.
        theory: The theory-vs-measurement table.
        layer_stats: The long per-layer statistics (a study of architectures' finding).
        layer_step_changes: Each study's early change of the profile per setting and layer
            (``draw_layer_step_maps``): the layer × step maps' finding.
        spectrum: The long spectrum table (the Jacobian section's findings).
        study_pngs: The saved study figures, a loader per file name without ``.png`` (a
            partitioned dataset): the study's, and ``<study>.profiles`` where it has one.
        layer_step_pngs: The saved layer × step maps, a loader per study name.
        **figure_pngs: The saved fixed figures' PNG bytes, by ``core.FLOW_FIGURES``,
            ``core.TRAINING_FIGURES``, ``core.SPECTRUM_FIGURES`` and ``core.THEORY_FIGURES`` key.
    Returns:
        The page's HTML.
    """
    studies_png = {name: load() for name, load in study_pngs.items()}
    studies_png |= {
        core.LAYER_STEP_FIGURE.format(study=name): load() for name, load in layer_step_pngs.items()
    }
    return core.build_report(
        runs,
        studies,
        study_summary,
        gradient_flow,
        theory,
        figure_pngs,
        studies_png,
        claims,
        layer_stats,
        layer_step_changes,
        spectrum,
    )

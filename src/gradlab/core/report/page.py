"""The self-contained HTML page: its sections, glossary, figure captions and the whole report."""

import base64
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from gradlab.core import quantities
from gradlab.core.report.bn_growth import (
    BN_GROWTH_CAPTION,
    BN_GROWTH_FIGURE,
    bn_growth_finding,
    bn_growth_frames,
)
from gradlab.core.report.findings import (
    activation_finding,
    architecture_finding,
    claims_finding,
    flow_finding,
    layer_step_finding,
    phase_finding,
    saturation_finding,
    study_finding,
    theory_finding,
    verdict_finding,
    violin_finding,
)
from gradlab.core.report.frames import (
    PHASE_ACTIVATION,
    architecture_frames,
    init_selection,
    varies_architecture,
)
from gradlab.core.report.spectra import (
    SPECTRUM_FIGURES,
    density_finding,
    density_frames,
    spread_finding,
    spread_frames,
)
from gradlab.core.report.trainability import (
    TRAINABILITY_CAPTION,
    TRAINABILITY_FIGURE,
    trainability_finding,
    trainability_frames,
)
from gradlab.core.verdict import TRAINED_AT, VERDICTS, verdict_confusion


@dataclass(frozen=True)
class Section:
    """One part of the HTML report."""

    title: str
    question: str
    finding: str
    figures: Sequence[tuple[str, bytes]] = ()  # (caption, PNG)
    tables: Sequence[tuple[str, pd.DataFrame]] = field(default_factory=tuple)  # (caption, table)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1400px; color: #222;
       padding: 0 1.5rem; }
.scroll { overflow-x: auto; max-width: 100%; }
dl.glossary { font-size: 0.85rem; } dl.glossary dt { font-family: monospace; margin-top: 0.3rem; }
dl.glossary dd { margin-left: 1.5rem; color: #444; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ccc; padding-top: 1rem; }
.question { font-style: italic; color: #444; }
.finding { background: #eef5ee; border-left: 4px solid #3a7d44; padding: 0.5rem 0.8rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85rem; color: #555; }
table { border-collapse: collapse; font-size: 0.78rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
details { margin: 0.5rem 0; } summary { cursor: pointer; color: #225; }
nav a { margin-right: 0.8rem; }
"""


# Tables up to this many rows are shown unfolded in the page; longer ones start folded.
OPEN_ROWS = 30


def _table_html(table: pd.DataFrame) -> str:
    return table.to_html(
        index=False,
        border=0,
        na_rep="–",
        float_format=lambda v: f"{v:.3g}",
        escape=True,
    )


# What each column of the page's tables holds (a glossary under the navigation lists the ones
# shown). "first/last" is the first hidden layer's value over the last's: far below 1, the
# gradient vanishes on its way to the input; far above 1, it explodes.
GLOSSARY = {
    "setting": "the values of the study's axes for these runs",
    "n_runs": "runs (seeds) with this setting",
    "n_diverged": "of them, runs that diverged (NaN/Inf, or loss above its divergence bound)",
    "final_val_metric_mean": "mean over finished seeds of the final validation metric: R² for "
    "regression datasets, accuracy for classification ones",
    "final_val_metric_sd": "its standard deviation over finished seeds",
    "final_val_loss_mean": "mean final validation loss over finished seeds",
    "init_grad_ratio": "first/last RMS ∂L/∂h at init (on the fixed probe batch); for a residual "
    "net, RMS ∂L/∂x of the stream entering the first and the last block",
    "init_grad_ratio_median": "median over seeds of init_grad_ratio",
    "end_grad_ratio": "the same ratio at the last probe step of training",
    "end_grad_ratio_median": "median over seeds of end_grad_ratio",
    "init_log_slope": "slope of ln RMS ∂L/∂h against layer index at init (negative: shrinks "
    "towards the input)",
    "end_log_slope": "the same slope at the last probe step",
    "init_act_ratio": "first/last std of the activations at init: above 1 the forward signal "
    "fades with depth, below 1 it grows",
    "init_weight_ratio": "first/last ‖∂L/∂W‖ at init; Glorot & Bengio's eq. 14 predicts it stays "
    "near 1 even when ∂L/∂h vanishes",
    "end_step": "optimizer step of the last probe",
    "verdict": f"one of {', '.join(VERDICTS)} (gradlab.core.verdict)",
    "status": "finished, diverged (a result, not a crash) or failed",
    "theory_sigma_w2": "σ_w²: the init's weight variance times fan-in",
    "theory_sigma_b2": "σ_b²: the bias variance",
    "theory_chi1": "χ₁ at the fixed point q*: below 1 ordered (gradients vanish), above 1 "
    "chaotic (they explode)",
    "theory_depth_scale": "layers over which the gradient changes by a factor e (−1/ln χ₁)",
    "theory_c_star": "c*: the correlation two inputs' pre-activations settle at (1 in the "
    "ordered phase; Schoenholz et al. 2017)",
    "theory_chi_c": "χ_c: the correlation map's slope at c* (χ₁ where c* = 1)",
    "theory_xi_c": "ξ_c = −1/ln χ_c: the depth over which two inputs' correlation settles; nets "
    "train up to ≈ 6 ξ_c, which diverges where χ₁ = 1",
    "theory_xi_q": "ξ_q = −1/ln χ_q: the depth over which the pre-activation variance settles",
    "theory_log_slope": "mean-field prediction of init_log_slope",
    "theory_first_last_ratio": "mean-field prediction of the first/last RMS ∂L/∂h",
    "theory_verdict": "the verdict that ratio implies",
    "measured_log_slope": "the measured init_log_slope",
    "measured_first_last_ratio": "the measured init_grad_ratio",
    "measured_init_verdict": "the same rule applied to the measured ratio",
    "slope_error": "measured_log_slope − theory_log_slope",
    "jacobian_mean_s2": "E[s²] over the singular values s of the Jacobian J = ∂x_L/∂x_1 (first "
    "hidden layer's output to the head's input) at init, averaged over the measured input "
    "points; not measured for BatchNorm nets (gradlab.core.spectrum)",
    "jacobian_var_s2": "Var[s²] over J's singular values, averaged over the points; "
    "jacobian_var_s2 / jacobian_mean_s2² is the normalized spread v (0: every s equal)",
    "jacobian_s_max": "J's largest singular value, averaged over the points",
    "jacobian_s_min": "J's smallest singular value, averaged over the points",
    "jacobian_frac_well_conditioned": "share of J's singular values within (0.1, 10), "
    "averaged over the points",
    "theory_jacobian_mean_s2": "free-probability prediction of jacobian_mean_s2: Π_l σ_w² "
    "E[φ′(h_l)²], the product of the layers' χ₁ (plain MLPs without normalization; "
    "gradlab.core.spectrum_theory)",
    "theory_jacobian_var_s2": "its prediction of jacobian_var_s2: mean² × Σ_l (E[φ′⁴] / "
    "E[φ′²]² − 1 + v_W), v_W = 1 for iid weights, 0 for orthogonal ones (Pennington et al. 2017)",
    **{f"verdict_{name}": f"runs with the verdict {name}" for name in VERDICTS},
    "claim_id": "the claim's key in conf/<env>/parameters_claims.yml (and its MLflow tag)",
    "claim": "a statement of the paper or course this environment reproduces",
    "source": "where it is made: paper and section, table or figure",
    "paper": "the source's number or statement",
    "measured": "what gradlab measured for it: medians over seeds, per group compared",
    "rule": "the measure, the runs it reads and the pass rule, fixed before the run",
    "when": "at init: the verdict of the gradients at init alone; over training: of the network "
    "as training left it (gradlab.core.verdict)",
    "runs": "runs with this verdict",
    "trained": f"of them, runs that finished with val R² or accuracy ≥ {TRAINED_AT:g}",
    "not_trained": "of them, runs that did not",
    "agree": "runs where the verdict predicted the outcome (healthy: trained; else: not)",
    "init_verdict": "the verdict at init (gradlab.core.verdict)",
    "result": "pass if the rule holds at this environment's scale, else fail",
}


def _glossary_html(sections: Sequence[Section]) -> str:
    shown = {column for section in sections for _, table in section.tables for column in table}
    entries = [
        f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>"
        for name, text in GLOSSARY.items()
        if name in shown
    ]
    if not entries:
        return ""
    return (
        "<details><summary>What the table columns hold</summary>"
        f'<dl class="glossary">{"".join(entries)}</dl></details>'
    )


def _quantities_html() -> str:
    """What each quantity of ``layer_stats`` (and of MLflow's ``<quantity>/…`` metrics) is: the
    quantity registry's entries, the ones registered by a user included."""
    entries = [
        f"<dt>{html.escape(q.name)}</dt><dd>{html.escape(q.meaning)} ({html.escape(q.scope)}; "
        f"{html.escape(q.reduction)}; {html.escape(q.unit)})</dd>"
        for q in quantities.QUANTITIES.values()
    ]
    return (
        "<details><summary>What each measured quantity is</summary>"
        f'<dl class="glossary">{"".join(entries)}</dl></details>'
    )


def _anchor(title: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")


def build_html(title: str, overview: str, sections: Sequence[Section]) -> str:
    """One self-contained HTML page: figures inlined as base64 PNG data URIs, no other files.

    Args:
        title: The page's heading.
        overview: A paragraph under it (plain text).
        sections: The parts, in order.
    Returns:
        The page.
    """
    nav = " ".join(f'<a href="#{_anchor(s.title)}">{html.escape(s.title)}</a>' for s in sections)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(overview)}</p>",
        f"<nav>{nav}</nav>",
        _glossary_html(sections),
        _quantities_html(),
    ]
    for section in sections:
        body.append(f'<h2 id="{_anchor(section.title)}">{html.escape(section.title)}</h2>')
        body.append(f'<p class="question">{html.escape(section.question)}</p>')
        body.append(f'<p class="finding">{html.escape(section.finding)}</p>')
        for caption, png in section.figures:
            data = base64.b64encode(png).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        for caption, table in section.tables:
            body.append(
                f"<details{' open' if len(table) <= OPEN_ROWS else ''}>"
                f"<summary>{html.escape(caption)} ({len(table)} rows)</summary>"
                f'<div class="scroll">{_table_html(table)}</div></details>'
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


# The columns of a study's summary shown in the HTML page.
STUDY_VIEW = [
    "setting",
    "n_runs",
    "n_diverged",
    "final_val_metric_mean",
    "final_val_metric_sd",
    "final_val_loss_mean",
    "init_grad_ratio_median",
    "end_grad_ratio_median",
    *[f"verdict_{name}" for name in VERDICTS],
]
# Figures of the report's fixed sections, by key of ``build_report``'s ``figures``, with captions.
FLOW_FIGURES = {
    "grad_flow": "RMS ∂L/∂h (top) and ‖∂L/∂W‖ (bottom) per layer at init: a line that falls "
    "towards layer 1 is a vanishing gradient, one that rises an exploding one; compare the "
    "bottom panel, where weight gradients often stay level",
    "weight_grad_violins": "sampled weight-gradient entries per layer at init: violins that "
    "narrow towards the input mean the first layers barely learn",
    "activation_hist": "activation values per layer at init (Glorot & Bengio 2010, Fig. 6): "
    "mass piling up at the activation's limits is saturation, a spike at 0 dead units",
}
# What each figure of the init section shows in this grid (the section's finding is grad_flow's).
FLOW_FIGURE_FINDINGS: dict[str, Callable[[pd.DataFrame], str]] = {
    "grad_flow": lambda flow: "",
    "weight_grad_violins": violin_finding,
    "activation_hist": activation_finding,
}
TRAINING_FIGURES = {
    "saturation": "saturated fraction per layer during training (Glorot & Bengio 2010, Fig. 2): "
    "a layer that climbs towards 1 has stopped passing gradient",
}
THEORY_FIGURES = {
    "theory_slopes": "measured against predicted log-slope, one point per run",
    "theory_profiles": "measured profiles (one line per seed) against the prediction",
    "phase_diagram": "χ₁ over (σ_w², σ_b²) for tanh, with the grid's runs",
}


CLAIMS_VIEW = ["claim_id", "claim", "source", "paper", "measured", "rule", "result"]

# A study over the architecture (``varies_architecture``) has a second figure,
# ``<study>.profiles`` among the study figures (``figures/studies/<study>.profiles.png``): a
# study's name has no dot, so the key is no other study's.
ARCHITECTURE_FIGURE = "{study}.profiles"
ARCHITECTURE_CAPTION = (
    "gradient profile at init per setting: RMS ∂L/∂h of a plain net's hidden layers, RMS ∂L/∂x "
    "of a residual net's stream entering each block, a thin line per seed, mean-field theory "
    "dashed (scaled to the measured last layer); below, each finished seed's final metric and "
    "the runs that diverged"
)


# A study's layer × step maps (``figures/layer_steps/<study>.png``) are passed among the study
# figures under this key, after the study's own figure.
LAYER_STEP_FIGURE = "{study}.layer_steps"
LAYER_STEP_CAPTION = (
    "the gradient profile over training, a map per setting: RMS of the back-propagated gradient "
    "(∂L/∂h of a plain net's hidden layers, ∂L/∂x of a residual net's stream) per layer (y, 1 = "
    "next to the input) and probe step (x; step 0 is the untrained net on its first batch), "
    "seeds averaged in log space. The colour is the layer's RMS over the last layer's at the "
    "same step, on one diverging scale for the study: blue, the gradient shrinks towards the "
    "input (vanishing); red, it grows (exploding); white, level, so a profile that heals fades "
    "to white. Relative to the last layer because every layer's gradient falls as the loss "
    "falls: an absolute scale would paint that fall over the profile's shape (the last layer's "
    "own RMS is over each map). Linear in decades within 10× either way, logarithmic beyond, "
    "so a 2× change and a 10⁻¹² underflow read side by side. Hatched: no value (a seed had "
    "diverged or stopped there, dotted red where one diverged)"
)


# What each theory figure shows in this grid (the section's finding covers slopes and profiles).
THEORY_FIGURE_FINDINGS: dict[str, Callable[[pd.DataFrame], str]] = {
    "theory_slopes": lambda runs: "",
    "theory_profiles": lambda runs: "",
    "phase_diagram": lambda runs: phase_finding(runs, PHASE_ACTIVATION),
}


def _spectrum_section(
    runs: pd.DataFrame, studies: pd.DataFrame, spectrum: pd.DataFrame, figures: dict[str, bytes]
) -> Section:
    """The Jacobian's singular values at init: their density and their spread against depth."""
    finding = " ".join(
        [
            density_finding(density_frames(runs, studies, spectrum)[1]),
            spread_finding(spread_frames(runs, studies, spectrum)[1]),
        ]
    )
    return Section(
        "Jacobian spectrum at init",
        "Do the singular values of the input–output Jacobian stay near 1 (dynamical isometry), "
        "and does their spread grow with depth as free probability predicts?",
        finding,
        [(caption, figures[k]) for k, caption in SPECTRUM_FIGURES.items() if k in figures],
    )


def overview(runs: pd.DataFrame, studies: pd.DataFrame) -> str:
    """One paragraph: how many runs, how they ended, their verdicts."""
    status = runs["status"].value_counts()
    verdicts = runs["verdict"].value_counts()
    ended = ", ".join(f"{status.get(s, 0)} {s}" for s in ("finished", "diverged", "failed"))
    verdict_text = ", ".join(f"{name} {verdicts[name]}" for name in VERDICTS if name in verdicts)
    return (
        f"{len(runs)} runs ({ended}) in {len(studies)} studies; verdicts: {verdict_text}. "
        "Final metrics are means ± sd over finished seeds; diverged runs are counted apart."
    )


# noqa reason: one argument per table and figure set the page shows, as the report node has them
def build_report(  # noqa: PLR0913, PLR0917
    runs: pd.DataFrame,
    studies: pd.DataFrame,
    summary: pd.DataFrame,
    flow: pd.DataFrame,
    theory_rows: pd.DataFrame,
    figures: dict[str, bytes],
    study_figures: dict[str, bytes],
    claims: pd.DataFrame | None = None,
    layer_stats: pd.DataFrame | None = None,
    layer_step_changes: pd.DataFrame | None = None,
    spectrum: pd.DataFrame | None = None,
) -> str:
    """The HTML report: the claims a reproduction checks (if any), gradient flow at init,
    saturation during training, one section per study, the Jacobian's spectrum at init (given
    ``spectrum``), theory against measurement.

    A study over the architecture (``arch``, ``residual_scale``) shows its gradient
    profiles at init (``ARCHITECTURE_FIGURE``) above its study figure, and its finding is
    ``architecture_finding``'s, computed from ``layer_stats``. A study over σ_w² and depth
    shows its trainability heatmap (``TRAINABILITY_FIGURE``) and one with BatchNorm nets their
    gradient growth against theory (``BN_GROWTH_FIGURE``) under its study figure, each adding
    its finding (``trainability_finding``, ``bn_growth_finding``; the latter reads
    ``layer_stats``). A study's layer × step maps (``LAYER_STEP_FIGURE``) come last, and their
    finding after the others.

    Args:
        runs: The runs table.
        studies: The studies table (their order is the page's).
        summary: ``summarize_studies``' output.
        flow: ``gradient_flow_table``' output.
        theory_rows: ``theory_table``' output.
        figures: PNGs of the fixed figures, by the keys of ``FLOW_FIGURES``,
            ``TRAINING_FIGURES`` and ``THEORY_FIGURES`` (a missing key is skipped).
        study_figures: One PNG per study name, and per ``ARCHITECTURE_FIGURE``,
            ``TRAINABILITY_FIGURE``, ``BN_GROWTH_FIGURE`` and ``LAYER_STEP_FIGURE`` key.
        claims: ``gradlab.core.claims.check_claims``' table; none or empty: no claims section.
        layer_stats: The long per-layer statistics; none: every study gets ``study_finding``.
        layer_step_changes: ``early_change``'s rows with ``study``; a study's finding adds
            ``layer_step_finding`` of its rows (none: it does not).
        spectrum: The long ``spectrum`` table; given, a section on the Jacobian's singular
            values at init shows the ``SPECTRUM_FIGURES`` and their findings
            (``gradlab.core.report.spectra``), which say why where no run was measured.
    Returns:
        The self-contained page.
    """
    selected = flow[flow["run_id"].isin(init_selection(runs, studies)["run_id"])]
    sections = []
    if claims is not None and not claims.empty:
        sections.append(
            Section(
                "Claims",
                "Does gradlab reproduce what the source states, at the scale this machine affords?",
                claims_finding(claims),
                tables=[
                    ("Claims: the source's statement, measurement and rule", claims[CLAIMS_VIEW])
                ],
            )
        )
    sections += [
        Section(
            "Gradient flow at init",
            "Does the back-propagated gradient ∂L/∂h reach the first layer, and would weight "
            "gradients alone show it?",
            flow_finding(selected),
            [
                (". ".join(filter(None, [caption, FLOW_FIGURE_FINDINGS[k](selected)])), figures[k])
                for k, caption in FLOW_FIGURES.items()
                if k in figures
            ],
            [
                (
                    "Gradient flow per run (first/last-layer ratios; slopes of ln RMS ∂L/∂h)",
                    flow,
                )
            ],
        ),
        Section(
            "Saturation during training",
            "Do the hidden layers saturate as training goes on, and where?",
            saturation_finding(runs),
            [(TRAINING_FIGURES[k], figures[k]) for k in TRAINING_FIGURES if k in figures],
        ),
        Section(
            "Verdicts against outcomes",
            f"Does a verdict tell which runs trained (final val R² or accuracy ≥ {TRAINED_AT:g})?",
            verdict_finding(runs),
            tables=[("Verdict (at init, over training) against outcome", verdict_confusion(runs))],
        ),
    ]
    for study in studies.itertuples(index=False):
        rows = summary[summary["study"] == study.study] if not summary.empty else summary
        if rows.empty:
            continue
        finding = study_finding(rows)
        if layer_stats is not None and varies_architecture(runs, study.study, study.axes):
            finding = architecture_finding(
                *architecture_frames(runs, layer_stats, study.study, study.axes)
            )
        theory = [trainability_finding(*trainability_frames(runs, study.study, study.axes))]
        if layer_stats is not None:
            theory.append(bn_growth_finding(bn_growth_frames(runs, layer_stats, study.study)[0]))
        finding = " ".join([finding, *filter(None, theory)])  # "": no such runs in the study
        if layer_step_changes is not None and not layer_step_changes.empty:
            changes = layer_step_changes[layer_step_changes["study"] == study.study]
            finding += " " + layer_step_finding(changes)
        captions = {
            ARCHITECTURE_FIGURE.format(study=study.study): ARCHITECTURE_CAPTION,
            study.study: f"study {study.study}",
            TRAINABILITY_FIGURE.format(study=study.study): TRAINABILITY_CAPTION,
            BN_GROWTH_FIGURE.format(study=study.study): BN_GROWTH_CAPTION,
            LAYER_STEP_FIGURE.format(study=study.study): LAYER_STEP_CAPTION,
        }
        sections.append(
            Section(
                f"Study: {study.study}",
                study.question,
                finding,
                [(text, study_figures[k]) for k, text in captions.items() if k in study_figures],
                [(f"{study.study}: per setting", rows[[c for c in STUDY_VIEW if c in rows]])],
            )
        )
    if spectrum is not None:
        sections.append(_spectrum_section(runs, studies, spectrum, figures))
    sections.append(
        Section(
            "Theory against measurement",
            "Does mean-field theory (Poole et al. 2016; Schoenholz et al. 2017) predict the "
            "gradient profile at init?",
            theory_finding(theory_rows),
            [
                (". ".join(filter(None, [caption, THEORY_FIGURE_FINDINGS[k](runs)])), figures[k])
                for k, caption in THEORY_FIGURES.items()
                if k in figures
            ],
            [("Predicted and measured per run", theory_rows)],
        )
    )
    return build_html(
        "gradlab report: vanishing and exploding gradients", overview(runs, studies), sections
    )

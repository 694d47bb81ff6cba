"""The report: tables aggregated over seeds, one-line findings computed from them, the frames the
figures draw, and a self-contained HTML page.

Submodules: ``tables`` (the study summary, gradient-flow and theory tables, and the study
helpers they share), ``frames`` (the runs the figures at init compare and the rows each figure
draws, the profiles of a study of architectures among them), ``findings`` (every ``*_finding``
one-liner) and ``page`` (``Section``, the figure captions, ``build_html`` and ``build_report``).

Everything here reads the stored result tables (``runs``, ``history``, ``layer_stats``,
``distributions``, ``studies``; see ``gradlab.core.quantities`` for the quantities) and trains
nothing. Final metrics are aggregated over the *finished* seeds of a setting: a diverged run's last
metric is whatever the blow-up left, so it is counted, not averaged.

The log-slope of a gradient profile is ``gradlab.core.theory.log_slope``: the least-squares slope
of ``ln RMS(∂L/∂h_l)`` against the layer l, positive when the gradient shrinks towards the input.
"""

from gradlab.core.report.findings import (
    INIT_AXES,
    activation_finding,
    architecture_finding,
    claims_finding,
    flow_finding,
    phase_finding,
    saturation_finding,
    study_finding,
    theory_finding,
    verdict_finding,
    violin_finding,
)
from gradlab.core.report.frames import (
    ALPHA_LABELS,
    ARCH_AXES,
    PHASE_ACTIVATION,
    PHASE_SIGMA_B2_MAX,
    PHASE_SIGMA_W2,
    REFERENCE_INIT,
    architecture_frames,
    distribution_samples,
    flow_stats,
    init_selection,
    phase_grid,
    phase_points,
    reference_runs,
    saturation_stats,
    study_frames,
    theory_profiles,
    varies_architecture,
)
from gradlab.core.report.page import (
    ARCHITECTURE_CAPTION,
    ARCHITECTURE_FIGURE,
    CLAIMS_VIEW,
    FLOW_FIGURES,
    GLOSSARY,
    OPEN_ROWS,
    STUDY_VIEW,
    THEORY_FIGURES,
    TRAINING_FIGURES,
    Section,
    build_html,
    build_report,
    overview,
)
from gradlab.core.report.tables import (
    LOSS_LABELS,
    METRIC_LABELS,
    NOT_APPLICABLE,
    display_axes,
    gradient_flow_table,
    metric_label,
    profile_quantities,
    runs_in_study,
    setting_label,
    study_axes,
    summarize_studies,
    theory_table,
)

__all__ = [
    "ALPHA_LABELS",
    "ARCHITECTURE_CAPTION",
    "ARCHITECTURE_FIGURE",
    "ARCH_AXES",
    "CLAIMS_VIEW",
    "FLOW_FIGURES",
    "GLOSSARY",
    "INIT_AXES",
    "LOSS_LABELS",
    "METRIC_LABELS",
    "NOT_APPLICABLE",
    "OPEN_ROWS",
    "PHASE_ACTIVATION",
    "PHASE_SIGMA_B2_MAX",
    "PHASE_SIGMA_W2",
    "REFERENCE_INIT",
    "STUDY_VIEW",
    "THEORY_FIGURES",
    "TRAINING_FIGURES",
    "Section",
    "activation_finding",
    "architecture_finding",
    "architecture_frames",
    "build_html",
    "build_report",
    "claims_finding",
    "display_axes",
    "distribution_samples",
    "flow_finding",
    "flow_stats",
    "gradient_flow_table",
    "init_selection",
    "metric_label",
    "overview",
    "phase_finding",
    "phase_grid",
    "phase_points",
    "profile_quantities",
    "reference_runs",
    "runs_in_study",
    "saturation_finding",
    "saturation_stats",
    "setting_label",
    "study_axes",
    "study_finding",
    "study_frames",
    "summarize_studies",
    "theory_finding",
    "theory_profiles",
    "theory_table",
    "varies_architecture",
    "verdict_finding",
    "violin_finding",
]

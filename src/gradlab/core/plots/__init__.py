"""Figures of the report: a tidy DataFrame in, a matplotlib ``Figure`` out.

Submodules: ``_style`` (what every figure shares: palettes, axis labels, the canvas laid out in
inches, log axes, notes, ``plot_message``), ``flow`` (figures at init and during training:
gradient flow, weight-gradient violins, activation histograms, saturation), ``studies``
(``plot_study``, one figure per study), ``architecture`` (``plot_architecture_study``: plain
against residual nets, their gradient profiles at init and how they ended), ``theory``
(theory against measurement: slopes, profiles, the phase diagram), ``trainability``
(``plot_trainability``: the outcome over σ_w² and depth with 6 ξ_c on it), ``bn_growth``
(``plot_bn_growth``: BatchNorm's gradient growth over batch size against theory), ``spectra``
(the Jacobian's singular values at init: their density, their spread against depth beside free
probability), and two drawn
with Pillow
for speed, returning PNG bytes: ``profile`` (one run's layer profile, for its MLflow child) and
``layer_steps`` (layer × step maps: a study's, a map per setting, and one run's).

Every function checks the columns it needs and names those missing; none saves, shows or sets a
global style (the catalog's ``matplotlib.MatplotlibDataset`` saves and closes). Values a log axis
cannot show (≤ 0 after underflow, non-finite after a divergence) are left out and counted in a
note under the figure rather than handed to matplotlib.

Speed matters (the whole report stage has a budget of seconds for ~120 runs): seeds are
aggregated with vectorised pandas before drawing, panels are laid out in inches up front (no
layout engine measuring every tick label at save time), and seaborn is called where it does the
work (violins, point estimates with error bars, scatter and line semantics) but not for heatmaps,
whose seaborn version draws the whole figure once more to check its tick labels.

References: X. Glorot and Y. Bengio, "Understanding the difficulty of training deep feedforward
neural networks", AISTATS 2010 (Fig. 2: saturation during training; Fig. 6: activations per
layer at init; Figs 6–7 and eq. 14: back-propagated against weight gradients). B. Poole et al.,
"Exponential expressivity in deep neural networks through transient chaos", NeurIPS 2016 (the
order-to-chaos phase diagram). S. S. Schoenholz et al., "Deep information propagation", ICLR 2017
(Fig. 5: trainable depth against 6 ξ_c). G. Yang et al., "A mean field theory of batch
normalization", ICLR 2019 (BatchNorm's gradient explosion).
"""

from gradlab.core.plots._style import (
    ACTIVATION_COLORS,
    AXIS_LABELS,
    axis_label,
    category_order,
    plot_message,
)
from gradlab.core.plots.architecture import plot_architecture_study
from gradlab.core.plots.bn_growth import plot_bn_growth
from gradlab.core.plots.flow import (
    pick_layers,
    plot_activation_histograms,
    plot_gradient_flow,
    plot_saturation,
    plot_weight_grad_violins,
)
from gradlab.core.plots.layer_steps import layer_step_maps_png, layer_step_png
from gradlab.core.plots.spectra import plot_spectrum_density, plot_spectrum_spread
from gradlab.core.plots.studies import METRIC_FLOOR, plot_study
from gradlab.core.plots.theory import plot_phase_diagram, plot_theory_profiles, plot_theory_slopes
from gradlab.core.plots.trainability import plot_trainability

__all__ = [
    "ACTIVATION_COLORS",
    "AXIS_LABELS",
    "METRIC_FLOOR",
    "axis_label",
    "category_order",
    "layer_step_maps_png",
    "layer_step_png",
    "pick_layers",
    "plot_activation_histograms",
    "plot_architecture_study",
    "plot_bn_growth",
    "plot_gradient_flow",
    "plot_message",
    "plot_phase_diagram",
    "plot_saturation",
    "plot_spectrum_density",
    "plot_spectrum_spread",
    "plot_study",
    "plot_theory_profiles",
    "plot_theory_slopes",
    "plot_trainability",
    "plot_weight_grad_violins",
]

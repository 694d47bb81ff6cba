"""Every figure draws from small hand-made tables (two seeds or one, a diverged and a failed run)
without a warning, asks its question, labels its axes and has a legend."""

import io
import math
import struct
from collections.abc import Callable

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from gradlab.core import plots, report, theory
from gradlab.core.bn_theory import bn_gradient_growth
from gradlab.core.plots import layer_steps
from gradlab.core.plots.layer_steps import PANEL, layer_step_png
from gradlab.core.plots.profile import _COLORS, HEIGHT, WIDTH, profile_png
from gradlab.core.plots.spectra import plot_spectrum_density, plot_spectrum_spread
from tests.helpers import architecture_results as arch
from tests.helpers import spectrum_results
from tests.helpers import theory_results as deep
from tests.helpers.results import DEPTH, make_results
from tests.helpers.step_results import diverging_midway

matplotlib.use("Agg")

# a seaborn or matplotlib warning (log axis of non-positive data, empty legend, ...) fails
pytestmark = pytest.mark.filterwarnings("error")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module", params=[(0, 1), (0,)], ids=["two_seeds", "one_seed"])
def results(request) -> dict[str, pd.DataFrame]:
    return make_results(seeds=request.param)


def _rendered(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _legend_labels(fig: Figure) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [text.get_text() for legend in legends for text in legend.get_texts()]


def _check(fig: Figure, words: str) -> None:
    """A question in the title, labelled axes, a legend, and a PNG that renders."""
    title = fig.get_suptitle()
    assert "?" in title and words in title, title
    drawn = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
    assert drawn, "no panel has data"
    assert any(ax.get_xlabel() for ax in drawn) and any(ax.get_ylabel() for ax in drawn)
    assert _legend_labels(fig), "no legend"
    png = _rendered(fig)
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000, len(png)


def _selection(results: dict) -> pd.DataFrame:
    return report.init_selection(results["runs"], results["studies"])


FIGURES: dict[str, tuple[Callable[[dict], Figure], str]] = {
    "gradient_flow": (
        lambda r: plots.plot_gradient_flow(report.flow_stats(_selection(r), r["layer_stats"])),
        "∂L/∂h",
    ),
    "weight_grad_violins": (
        lambda r: plots.plot_weight_grad_violins(
            report.distribution_samples(
                report.reference_runs(_selection(r)), r["distributions"], "grad_weight"
            ),
            max_layers=3,
        ),
        "∂L/∂W",
    ),
    "activation_histograms": (
        lambda r: plots.plot_activation_histograms(
            report.distribution_samples(_selection(r), r["distributions"], "act"), max_layers=3
        ),
        "activations",
    ),
    "saturation": (
        lambda r: plots.plot_saturation(
            report.saturation_stats(_selection(r), r["layer_stats"]), max_layers=8
        ),
        "saturate",
    ),
    "theory_slopes": (
        lambda r: plots.plot_theory_slopes(
            report.theory_table(r["runs"], report.gradient_flow_table(r["runs"], r["layer_stats"]))
        ),
        "mean-field",
    ),
    "theory_profiles": (
        lambda r: plots.plot_theory_profiles(
            report.theory_profiles(_selection(r), r["layer_stats"])
        ),
        "mean-field",
    ),
    "phase_diagram": (
        lambda r: plots.plot_phase_diagram(
            report.phase_grid("tanh", report.phase_points(r["runs"], "tanh"), 16),
            report.phase_points(r["runs"], "tanh"),
            "tanh",
        ),
        "edge of chaos",
    ),
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_draws_with_question_labels_and_legend(results, name):
    draw, words = FIGURES[name]
    _check(draw(results), words)


@pytest.mark.parametrize("study", ["act_init", "opt", "sched"])
def test_plot_study_draws_every_study(results, study):
    row = results["studies"].set_index("study").loc[study]
    runs, curves, axes = report.study_frames(
        results["runs"], results["history"], study, row["axes"], "val_loss"
    )
    fig = plots.plot_study(runs, curves, axes, row["question"], "val R²", "validation loss")
    _check(fig, row["question"])
    # loss curves and final metric, plus a heatmap (with its colour bar) for two axes
    assert len(fig.axes) == (4 if len(axes) == 2 else 2), [ax.get_title() for ax in fig.axes]


def test_plot_study_crosses_out_a_setting_where_every_seed_diverged():
    results = make_results(diverge_all=True)
    row = results["studies"].set_index("study").loc["opt"]
    runs, curves, axes = report.study_frames(
        results["runs"], results["history"], "opt", row["axes"], "val_loss"
    )
    fig = plots.plot_study(runs, curves, axes, row["question"], "val R²", "validation loss")
    heatmap = fig.axes[2]
    texts = [t.get_text() for t in heatmap.texts]
    assert any(t.startswith("×") and "2/2 div." in t for t in texts), texts
    assert "every seed diverged" in heatmap.get_title(), heatmap.get_title()
    # the final-metric panel says how many runs of that learning rate stopped
    notes = [t.get_text() for t in fig.axes[1].texts]
    assert "2× div." in notes, notes
    _rendered(fig)


def test_plot_gradient_flow_leaves_out_underflow_and_says_how_many():
    stats = pd.DataFrame(
        {
            "activation": ["sigmoid"] * 4,
            "init_name": ["default"] * 4,
            "layer": [1, 2, 1, 2],
            "quantity": ["grad_preact_rms"] * 2 + ["grad_weight_norm"] * 2,
            "value": [0.0, 1e-3, 1e-2, 1e-2],
        }
    )
    fig = plots.plot_gradient_flow(stats)
    notes = [" ".join(t.get_text().split()) for t in fig.texts]  # notes wrap
    assert any("1 values ≤ 0 or non-finite" in n for n in notes), notes
    _rendered(fig)


def test_plot_gradient_flow_names_missing_columns():
    with pytest.raises(ValueError, match=r"lacks columns \['init_name', 'quantity'\]"):
        plots.plot_gradient_flow(pd.DataFrame(columns=["activation", "layer", "value"]))


def test_plot_study_rejects_three_axes():
    with pytest.raises(ValueError, match="one or two axes"):
        plots.plot_study(pd.DataFrame(), pd.DataFrame(), ["a", "b", "c"], "q?", "m", "l")


def test_plot_theory_slopes_without_any_slope_explains_why():
    table = pd.DataFrame(
        {
            "activation": ["tanh"],
            "init_name": ["default"],
            "theory_log_slope": [np.nan],
            "measured_log_slope": [0.1],
        }
    )
    fig = plots.plot_theory_slopes(table)
    assert "?" in fig.get_suptitle(), fig.get_suptitle()
    assert any("no run has both" in t.get_text() for ax in fig.axes for t in ax.texts)
    _rendered(fig)


def test_plot_saturation_without_saturating_activation_explains_why():
    stats = pd.DataFrame(columns=["activation", "init_name", "step", "layer", "value"])
    fig = plots.plot_saturation(stats, max_layers=4)
    assert any("no run with a saturating" in t.get_text() for ax in fig.axes for t in ax.texts)


@pytest.mark.parametrize(
    ("layers", "limit", "expected"),
    [
        (range(1, 17), 8, [1, 3, 5, 7, 10, 12, 14, 16]),
        (range(1, 5), 8, [1, 2, 3, 4]),
        ([3, 1, 2, 2], 2, [1, 3]),
        (range(1, 17), 1, [1]),
    ],
)
def test_pick_layers_spreads_evenly_and_keeps_ends(layers, limit, expected):
    assert plots.pick_layers(layers, limit) == expected


def test_category_order_puts_activations_in_registry_order():
    order = plots.category_order(pd.Series(["relu", "sigmoid", "tanh"], name="activation"))
    assert order == ["sigmoid", "tanh", "relu"], order


def test_violins_leave_out_the_output_head(results):
    samples = report.distribution_samples(
        report.reference_runs(_selection(results)), results["distributions"], "grad_weight"
    )
    assert samples["layer"].max() == DEPTH + 1  # the head is in the input ...
    fig = plots.plot_weight_grad_violins(samples, max_layers=10)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == [str(layer) for layer in range(1, DEPTH + 1)], labels  # ... not drawn


def test_activation_histograms_of_tiny_values_print_no_axis_offset():
    """normal(0.01) at depth squeezes activations to ~1e-11: an offset text ("1e-11") at the end
    of the x axis would sit over the next panel; each tick carries its value instead."""
    rng = np.random.default_rng(0)
    samples = pd.DataFrame(
        {
            "activation": "tanh",
            "init_name": ["normal(0.01)"] * 400 + ["xavier_uniform"] * 400,
            "layer": 1,
            "value": np.concatenate([rng.normal(0, 1e-11, 400), rng.normal(0, 0.5, 400)]),
        }
    )
    figure = plots.plot_activation_histograms(samples, max_layers=8)
    figure.canvas.draw()
    (tiny,) = [ax for ax in figure.axes if ax.get_title() == "tanh · normal(0.01)"]
    assert tiny.xaxis.get_offset_text().get_text() == ""
    assert any("e-11" in label.get_text() for label in tiny.get_xticklabels())


def _profile_stats(theory: bool = True, blown: bool = False) -> pd.DataFrame:
    depth = 6
    rows = []
    for layer in range(1, depth + 1):
        rows += [
            ("init", 0, layer, "grad_preact_rms", 10.0 ** (layer - depth)),
            ("train", 50, layer, "grad_preact_rms", math.inf if blown else 0.1),
        ]
        if theory:
            rows.append(("theory", 0, layer, "grad_preact_rms", 2.0 ** (layer - depth)))
    for layer in range(1, depth + 2):
        rows += [
            ("init", 0, layer, "grad_weight_norm", 0.5),
            ("train", 50, layer, "grad_weight_norm", math.nan if blown else 0.2),
        ]
    return pd.DataFrame(rows, columns=["phase", "step", "layer", "quantity", "value"])


def _colors(png: bytes) -> set:
    return {color for _, color in Image.open(io.BytesIO(png)).convert("RGB").getcolors(1 << 20)}


def test_profile_png_draws_init_end_and_theory_lines():
    png = profile_png(_profile_stats(), "tanh·d6·s0")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (WIDTH, HEIGHT)
    assert {_COLORS["init"], _COLORS["end"], _COLORS["theory"]} <= _colors(png)
    # no theory rows (a normalization layer): no theory line, and no legend entry for it
    assert _COLORS["theory"] not in _colors(profile_png(_profile_stats(theory=False)))


def test_profile_png_leaves_values_a_log_axis_cannot_show_out():
    png = profile_png(_profile_stats(blown=True))  # the end: inf and NaN everywhere
    assert _COLORS["init"] in _colors(png)
    empty = pd.DataFrame(columns=["phase", "step", "layer", "quantity", "value"])
    assert profile_png(empty).startswith(b"\x89PNG")


def _architecture_figure(tables: dict[str, pd.DataFrame]) -> Figure:
    profiles, outcomes, nets = report.architecture_frames(
        tables["runs"], tables["layer_stats"], arch.STUDY.name, tables["studies"]["axes"].iloc[0]
    )
    return plots.plot_architecture_study(profiles, outcomes, nets, arch.STUDY.question, "val R²")


@pytest.mark.parametrize("seeds", [(0, 1), (0,)], ids=["two_seeds", "one_seed"])
def test_plot_architecture_study_draws_plain_and_residual_nets_with_theory_lines(seeds):
    fig = _architecture_figure(arch.make_architecture_results(seeds=seeds))
    _check(fig, arch.STUDY.question)
    profiles, outcomes = fig.axes[:2], fig.axes[2:]
    assert [ax.get_title() for ax in profiles] == ["norm_layer=none", "norm_layer=layernorm"]
    assert all(ax.get_yscale() == "log" for ax in profiles)
    legend = _legend_labels(fig)
    nets = ["plain MLP", "resmlp α = 1", "resmlp α = 1/√L", "resmlp ReZero (α = 0, learned)"]
    assert legend[: len(nets)] == nets, legend
    colors = {net: handle.get_color() for net, handle in zip(legend, fig.legends[0].legend_handles)}
    for ax, theory_nets in zip(profiles, (nets, nets[1:]), strict=True):
        lines = ax.get_lines()
        # a thin solid line per run (four nets × seeds), a dashed one per net with a prediction
        solid = [line for line in lines if line.get_linestyle() == "-"]
        dashed = [line for line in lines if line.get_linestyle() != "-"]
        assert len(solid) == len(nets) * len(seeds), [line.get_color() for line in solid]
        assert sorted(map(str, (line.get_color() for line in dashed))) == sorted(
            str(colors[net]) for net in theory_nets
        ), ax.get_title()
    # a row per net, labelled once for the shared axis; α = 1 diverged in both settings
    labels = [t.get_text() for t in outcomes[0].get_yticklabels()]
    assert labels == nets, labels
    for ax in outcomes:
        dots = sum(len(points.get_offsets()) for points in ax.collections)
        assert dots == (len(nets) - 1) * len(seeds), dots  # each finished run's final metric
        status = [t.get_text() for t in ax.texts]
        assert status == [f"{len(seeds)} of {len(seeds)} diverged"], status
    notes = " ".join(" ".join(t.get_text().split()) for t in fig.texts)
    assert "no mean-field prediction for plain MLP (norm_layer=layernorm)" in notes, notes


def test_plot_architecture_study_names_missing_columns():
    with pytest.raises(ValueError, match=r"profiles lacks columns \['net'"):
        plots.plot_architecture_study(
            pd.DataFrame(columns=["run_id", "setting", "layer", "source", "value"]),
            pd.DataFrame(),
            [],
            "q?",
            "val R²",
        )


def _step_maps(results: dict[str, pd.DataFrame], study: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    axes = results["studies"].set_index("study").loc[study, "axes"]
    profiles = report.training_profiles(results["runs"], results["layer_stats"])
    return report.layer_step_frames(results["runs"], profiles, study, axes)


def _maps_in(png: bytes, size: tuple[int, int] = PANEL) -> list[np.ndarray]:
    """The palette indices inside each map's frame (a rectangle of the frame colour around
    ``size`` pixels), row by row and left to right."""
    pixels = np.asarray(Image.open(io.BytesIO(png)))
    edges = set()
    for y, row in enumerate(pixels == layer_steps._FRAME):
        bounds = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])))
        edges |= {(y, a) for a, b in zip(bounds[::2], bounds[1::2]) if b - a == size[0] + 2}
    tops = sorted((y, x) for y, x in edges if (y + size[1] + 1, x) in edges)
    return [pixels[y + 1 : y + 1 + size[1], x + 1 : x + 1 + size[0]] for y, x in tops]


def _coloured(cells: np.ndarray) -> float:
    """The share of a map's pixels drawn in a colour of the scale (not hatch, not white)."""
    return float((cells >= len(layer_steps._BASE)).mean())


def test_layer_step_maps_png_draws_a_map_per_setting_and_leaves_diverged_steps_blank():
    results = diverging_midway(blown_at=10)  # adam at lr 0.1: step 0 measured, NaN at step 10
    maps, outcomes = _step_maps(results, "opt")
    png = plots.layer_step_maps_png(maps, outcomes, "Which optimizer trains best?")
    assert png.startswith(PNG_SIGNATURE)
    drawn = _maps_in(png)
    settings = list(dict.fromkeys(outcomes["setting"]))
    assert len(drawn) == len(settings) == 4, (len(drawn), settings)
    for setting, cells in zip(settings, drawn, strict=True):
        if setting != "optimizer=adam, lr=0.1":
            assert _coloured(cells) == 1.0, setting  # every step of every layer has a value
            continue
        # three probe steps (0, 10, 20): step 0 coloured, the steps after the divergence not
        third = PANEL[0] // 3
        assert _coloured(cells[:, : third - 2]) == 1.0, setting
        assert _coloured(cells[:, third + 2 :]) == 0.0, setting
        hatch = cells[:, third + 2 :] == layer_steps._HATCH
        assert 0.05 < hatch.mean() < 0.5, hatch.mean()  # hatched, not left white


def test_layer_step_maps_png_of_a_setting_where_every_seed_blew_up_at_once_is_all_blank():
    results = make_results(diverge_all=True)  # adam at lr 0.1: NaN at its first probe step
    maps, outcomes = _step_maps(results, "opt")
    drawn = _maps_in(plots.layer_step_maps_png(maps, outcomes, "q?"))
    blown = list(dict.fromkeys(outcomes["setting"])).index("optimizer=adam, lr=0.1")
    assert [_coloured(cells) for cells in drawn][blown] == 0.0
    assert sum(_coloured(cells) == 1.0 for cells in drawn) == 3


def test_layer_step_maps_png_without_statistics_says_so():
    maps = pd.DataFrame(columns=["setting", "quantity", "layer", "step", "log_rms", "relative"])
    outcomes = pd.DataFrame({"setting": ["a=1"], "status": ["failed"], "diverged_step": [None]})
    png = plots.layer_step_maps_png(maps, outcomes, "q?")
    assert png.startswith(PNG_SIGNATURE) and _maps_in(png) == []


def test_layer_step_maps_png_names_missing_columns():
    with pytest.raises(ValueError, match=r"maps lacks columns \['relative'\]"):
        plots.layer_step_maps_png(
            pd.DataFrame(columns=["setting", "quantity", "layer", "step", "log_rms"]),
            pd.DataFrame(columns=["setting", "status", "diverged_step"]),
            "q?",
        )


@pytest.mark.parametrize(
    ("relative", "limit"),
    [([0.1, -0.4], 1.0), ([3.2, -0.5], 4.0), ([-12.01, math.inf, math.nan], 13.0)],
    ids=["within_a_decade", "rounded_up", "infinity_and_nan_left_out"],
)
def test_colour_limit_is_the_largest_finite_value_rounded_up_to_a_decade(relative, limit):
    assert layer_steps.colour_limit(np.array(relative)) == limit


def test_colour_levels_put_level_in_the_middle_and_the_ends_at_the_limit():
    levels = layer_steps.colour_levels(np.array([-5.0, -math.inf, 0.0, 5.0, 9.0, math.nan]), 5.0)
    first, middle = len(layer_steps._BASE), len(layer_steps._BASE) + layer_steps._LEVELS // 2
    last = first + layer_steps._LEVELS - 1
    assert list(levels) == [first, first, middle, last, last, layer_steps._HATCH], levels


def _run_stats(values: dict[int, list[float]]) -> pd.DataFrame:
    """One run's training rows of grad_preact_rms: ``{step: [layer 1, layer 2, …]}``."""
    rows = [
        ("train", step, layer, "grad_preact_rms", value)
        for step, profile in values.items()
        for layer, value in enumerate(profile, start=1)
    ]
    return pd.DataFrame(rows, columns=["phase", "step", "layer", "quantity", "value"])


def test_layer_step_png_is_a_png_of_the_drawn_size_with_a_blank_after_divergence():
    stats = _run_stats(
        {0: [1e-3, 1e-2, 1e-2], 10: [1e-2, 1e-2, 1e-2], 20: [math.nan, math.inf, 1.0]}
    )
    png = layer_step_png(stats, "relu·d3·s0")
    assert png.startswith(PNG_SIGNATURE)
    assert struct.unpack(">II", png[16:24]) == layer_steps.CHILD_SIZE
    # step 0 vanishes at layer 1 (blue), step 10 is level (white-ish), step 20 has no profile
    colours = set(np.unique(np.asarray(Image.open(io.BytesIO(png)))))
    assert layer_steps._HATCH in colours and len(layer_steps._BASE) in colours, colours
    empty = pd.DataFrame(columns=["phase", "step", "layer", "quantity", "value"])
    assert layer_step_png(empty).startswith(PNG_SIGNATURE)


def test_layer_step_png_draws_a_residual_net_on_its_stream():
    stats = _run_stats({0: [1.0, 1.0], 10: [1.0, 1.0]})
    stream = stats.assign(quantity="grad_stream_rms", value=[4.0, 1.0, 4.0, 1.0])
    both = pd.concat([stats, stream], ignore_index=True)
    level = len(layer_steps._BASE) + layer_steps._LEVELS // 2
    box = layer_steps.CHILD_MAP
    size = (box[2] - box[0], box[3] - box[1])
    # the branch's ∂L/∂h is level everywhere; the stream's ∂L/∂x is 4× at layer 1 (red)
    (branch,) = _maps_in(layer_step_png(both, profile="grad_preact_rms"), size)
    (stream_map,) = _maps_in(layer_step_png(both, profile="grad_stream_rms"), size)
    assert set(np.unique(branch)) == {level}, np.unique(branch)
    assert stream_map.max() > level + 10 and stream_map.min() == level


@pytest.fixture(scope="module")
def theory_studies() -> dict[str, pd.DataFrame]:
    return deep.make_theory_results()


def _top_edge(depth: int) -> float:
    """The top edge of a depth's cells on the log axis: the geometric midpoint to the next
    depth, the last one's mirrored (64 · √2)."""
    later = [d for d in deep.DEPTHS if d > depth]
    return math.sqrt(depth * later[0]) if later else depth * math.sqrt(2)


def _trainability_figure(tables: dict[str, pd.DataFrame]) -> Figure:
    cells, panels = report.trainability_frames(tables["runs"], "depth_sigma", deep.AXES)
    curves = report.xi_c_curves(cells, panels)
    question = tables["studies"].set_index("study").loc["depth_sigma", "question"]
    return plots.plot_trainability(cells, curves, panels, question, "val accuracy")


def test_plot_trainability_draws_6_xi_c_at_the_theory_values_and_the_critical_sigma_w2(
    theory_studies,
):
    fig = _trainability_figure(theory_studies)
    _check(fig, "How deep")
    ax = fig.axes[0]
    assert ax.get_title() == "tanh, σ_b² = 0.05", ax.get_title()
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert len(solid) == 1, solid
    x, y = (np.asarray(v, float) for v in solid[0].get_data())
    want = 6 * np.asarray(theory.depth_scales("tanh", x, deep.SIGMA_B2).xi_c)
    assert len(x) > 50 and np.allclose(y, want, rtol=1e-12), (x[:3], y[:3], want[:3])
    # the curve spans the cells on both sides of the critical σ_w², where it rises steepest
    assert x.min() < min(deep.SIGMA_W2) and x.max() > max(deep.SIGMA_W2)
    critical = theory.critical_sigma_w2("tanh", deep.SIGMA_B2)
    vertical = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_xdata()[0] for line in vertical] == [pytest.approx(critical, rel=1e-12)]
    # a row per depth and a column per σ_w², on log axes (both sweeps are geometric-ish)
    mesh = ax.collections[0]
    assert mesh.get_array().shape == (len(deep.DEPTHS), len(deep.SIGMA_W2))
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(d) for d in deep.DEPTHS]
    # the staircase: the top edge of the deepest cell that trains per σ_w² (none: the bottom)
    (stairs,) = [p for p in ax.patches if type(p).__name__ == "StepPatch"]
    expected = [_top_edge(deep.TRAINABLE[s]) for s in deep.SIGMA_W2]
    assert np.allclose(stairs.get_data().values, expected), stairs.get_data().values
    # the one cell where half the seeds diverged is hatched
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1, hatched


def test_plot_trainability_follows_the_outcomes():
    moved = deep.make_theory_results(trainable={1.5: 16, 2.5: 64})
    ax = _trainability_figure(moved).axes[0]
    (stairs,) = [p for p in ax.patches if type(p).__name__ == "StepPatch"]
    column = list(deep.SIGMA_W2).index(2.5)
    assert stairs.get_data().values[column] == pytest.approx(_top_edge(64))


def test_plot_trainability_names_missing_columns():
    with pytest.raises(ValueError, match=r"cells lacks columns \['depth'"):
        plots.plot_trainability(
            pd.DataFrame(columns=["activation", "sigma_b2", "sigma_w2", "median_metric"]),
            pd.DataFrame(columns=["activation", "sigma_b2", "sigma_w2", "six_xi_c"]),
            pd.DataFrame(columns=["activation", "sigma_b2", "critical_sigma_w2"]),
            "Which?",
            "val R²",
        )


@pytest.mark.parametrize("study", ["bn", "bn_init"])
def test_plot_bn_growth_puts_the_theory_line_at_bn_gradient_growth(theory_studies, study):
    points, lines = report.bn_growth_frames(
        theory_studies["runs"], theory_studies["layer_stats"], study
    )
    question = theory_studies["studies"].set_index("study").loc[study, "question"]
    fig = plots.plot_bn_growth(points, lines, question)
    _check(fig, "BatchNorm")
    ax = fig.axes[0]
    activations = sorted(points["activation"].unique())
    solid = [
        line for line in ax.get_lines() if line.get_linestyle() == "-" and len(line.get_xdata()) > 2
    ]
    assert len(solid) == len(activations), solid
    for line in solid:
        x, y = (np.asarray(v, float) for v in line.get_data())
        matches = [
            a for a in activations if np.allclose(y, [bn_gradient_growth(a, int(b)) for b in x])
        ]
        assert len(matches) == 1, (x[:3], y[:3])
    dashed = sorted(line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--")
    assert dashed == pytest.approx(sorted(bn_gradient_growth(a) for a in activations))
    # a dot per run, then a marker per setting (median over seeds), at the measured growth
    runs = ax.collections[0]
    assert len(runs.get_offsets()) == len(points), len(runs.get_offsets())
    assert np.allclose(sorted(runs.get_offsets()[:, 1]), sorted(points["growth"]))
    settings = sum(len(c.get_offsets()) for c in ax.collections[1:])
    assert settings == len(points) // 2, settings  # two seeds per setting
    legend = _legend_labels(fig)
    if study == "bn_init":
        assert "xavier_uniform (σ_w² = 1)" in legend and "normal(1) (σ_w² = 8)" in legend, legend


def test_plot_bn_growth_names_missing_columns():
    with pytest.raises(ValueError, match=r"points lacks columns \['growth'"):
        plots.plot_bn_growth(
            pd.DataFrame(columns=["activation", "batch_size", "init_name", "sigma_w2"]),
            pd.DataFrame(columns=["activation", "batch_size", "theory", "large_batch"]),
            "Which?",
        )


@pytest.fixture(scope="module")
def spectra() -> dict[str, pd.DataFrame]:
    return spectrum_results.make_spectrum_results()


def test_plot_spectrum_density_draws_a_panel_per_activation_and_a_line_per_init(spectra):
    samples, cells = report.density_frames(spectra["runs"], spectra["studies"], spectra["spectrum"])
    fig = plot_spectrum_density(samples, cells)
    _check(fig, "singular values")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
    assert [ax.get_title() for ax in panels] == ["sigmoid", "tanh", "relu"]
    for ax in panels:
        lines = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
        assert len(lines) == 2, ax.get_title()  # default, xavier_uniform
        zeros = spectrum_results.ZEROS.get(ax.get_title(), 0) / spectrum_results.SIZE
        for line in lines:  # a line's area: its share of s drawn (numerically zero left out)
            x, y = (np.asarray(v, float) for v in line.get_data())
            assert np.trapezoid(y, x) == pytest.approx(1 - zeros)
    tanh = " ".join(t.get_text() for t in panels[1].texts)
    assert "50 %" in tanh and "25 %" in tanh, tanh
    assert set(_legend_labels(fig)) >= {"default", "xavier_uniform", "s in (0.1, 10)", "s = 1"}
    notes = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert "16 values below 1e-12" in notes, notes  # relu: 2 zeros × 2 points, seeds, inits


def test_plot_spectrum_spread_draws_the_median_and_theory_per_activation(spectra):
    points, lines = report.spread_frames(spectra["runs"], spectra["studies"], spectra["spectrum"])
    fig = plot_spectrum_spread(points, lines)
    _check(fig, "depth")
    (ax,) = [ax for ax in fig.axes if ax.has_data()]
    assert ax.get_title() == "xavier_uniform" and ax.get_yscale() == "log"
    for style, column, slope in [
        ("-", "measured", spectrum_results.SLOPE),
        ("--", "theory", spectrum_results.THEORY_SLOPE),
    ]:
        drawn = sorted(
            tuple(line.get_ydata()) for line in ax.get_lines() if line.get_linestyle() == style
        )
        expected = sorted(
            tuple(slope[a] * d for d in (2, 4, 8)) for a in lines["activation"].unique()
        )
        assert np.allclose(drawn, expected), (column, drawn)
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(points)


@pytest.mark.parametrize("figure", ["density", "spread"])
def test_spectrum_figures_without_a_measured_spectrum_say_why(figure):
    results = spectrum_results.make_spectrum_results()
    runs = results["runs"].assign(jacobian_mean_s2=math.nan)  # e.g. every net BatchNorm
    empty = spectrum_results.empty_spectrum()
    if figure == "density":
        fig = plot_spectrum_density(*report.density_frames(runs, results["studies"], empty))
    else:
        fig = plot_spectrum_spread(*report.spread_frames(runs, results["studies"], empty))
    text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts).replace("\n", " ")
    assert "no run" in text or "no study" in text, text
    assert _rendered(fig).startswith(PNG_SIGNATURE)


def test_spectrum_figures_name_missing_columns():
    with pytest.raises(ValueError, match=r"samples lacks columns \['zero'\]"):
        plot_spectrum_density(
            pd.DataFrame(columns=["activation", "init", "log10_s"]),
            pd.DataFrame(columns=report.spectra.CELL_COLUMNS),
        )
    with pytest.raises(ValueError, match=r"lines lacks columns \['theory'\]"):
        plot_spectrum_spread(
            pd.DataFrame(columns=["activation", "init", "depth", "v"]),
            pd.DataFrame(columns=["activation", "init", "depth", "measured"]),
        )

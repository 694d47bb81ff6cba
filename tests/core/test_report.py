"""Report tables, findings and the HTML page, on small hand-made result tables."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from gradlab.core import report, theory
from gradlab.core.bn_theory import bn_gradient_growth
from gradlab.core.verdict import init_verdict
from tests.helpers import architecture_results as arch
from tests.helpers import theory_results as deep
from tests.helpers.results import DECAY, DEPTH, INIT_SCALE, make_results
from tests.helpers.step_results import diverging_midway, drift


@pytest.fixture(scope="module")
def results() -> dict[str, pd.DataFrame]:
    return make_results()


@pytest.fixture(scope="module")
def residual() -> dict[str, pd.DataFrame]:
    return arch.make_architecture_results()


@pytest.fixture(scope="module")
def theory_studies() -> dict[str, pd.DataFrame]:
    return deep.make_theory_results()


def _architecture_frames(tables: dict[str, pd.DataFrame]):
    return report.architecture_frames(
        tables["runs"], tables["layer_stats"], arch.STUDY.name, tables["studies"]["axes"].iloc[0]
    )


def test_study_axes_reads_init_as_init_name_and_drops_constant_axes(results):
    runs = report.runs_in_study(results["runs"], "act_init")
    assert report.study_axes(runs, "activation,init,init_std,depth") == ["activation", "init_name"]


def test_runs_in_study_matches_whole_names_only(results):
    runs = results["runs"]
    counts = {s: len(report.runs_in_study(runs, s)) for s in ("act_init", "opt", "sched", "act")}
    # act_init: 3 × 2 settings, opt: 2 × 2, sched: 2, each × 2 seeds; "act" is no study
    assert counts == {"act_init": 12, "opt": 8, "sched": 4, "act": 0}, counts


def test_summarize_studies_counts_runs_and_averages_finished_seeds(results):
    summary = report.summarize_studies(results["runs"], results["studies"])
    assert len(summary) == 6 + 4 + 2, summary[["study", "setting"]]
    blown = summary[(summary["study"] == "opt") & (summary["setting"] == "optimizer=adam, lr=0.1")]
    assert len(blown) == 1, summary["setting"].tolist()
    row = blown.iloc[0]
    assert (row["n_runs"], row["n_diverged"], row["n_finished"]) == (2, 1, 1), row
    # the diverged seed 0 is counted, not averaged: the mean is seed 1's metric, sd undefined
    assert row["final_val_metric_mean"] == pytest.approx(0.86), row["final_val_metric_mean"]
    assert math.isnan(row["final_val_metric_sd"]), row["final_val_metric_sd"]
    assert row["verdict_exploding"] == 1, row
    failed = summary[(summary["study"] == "sched") & (summary["setting"] == "schedule=cosine")]
    assert failed.iloc[0]["n_failed"] == 1, failed


def test_summarize_studies_mean_and_sd_over_two_seeds(results):
    summary = report.summarize_studies(results["runs"], results["studies"])
    row = summary[summary["setting"] == "activation=tanh, init=default"].iloc[0]
    # metric 0.9 − 0.04 · seed over seeds 0 and 1
    assert row["final_val_metric_mean"] == pytest.approx(0.88), row
    assert row["final_val_metric_sd"] == pytest.approx(0.04 / math.sqrt(2)), row


def test_summarize_studies_single_seed_has_undefined_sd():
    single = make_results(seeds=(0,))
    summary = report.summarize_studies(single["runs"], single["studies"])
    finished = summary[summary["n_finished"] == 1]
    assert len(finished) == 11, len(finished)  # 12 settings, one of them diverged
    assert finished["final_val_metric_sd"].isna().all(), finished["final_val_metric_sd"]


def test_gradient_flow_table_slope_recovers_the_per_layer_decay(results):
    flow = report.gradient_flow_table(results["runs"], results["layer_stats"])
    assert len(flow) == len(results["runs"]), len(flow)
    sigmoid = flow[(flow["activation"] == "sigmoid") & (flow["init_name"] == "default")].iloc[0]
    factor = DECAY["sigmoid"] * INIT_SCALE["default"]
    # ln RMS_l = const − (DEPTH − l) · ln(1/factor): slope −ln factor per layer
    assert sigmoid["init_log_slope"] == pytest.approx(-math.log(factor), rel=1e-9), sigmoid
    assert sigmoid["init_grad_ratio"] == pytest.approx(factor ** (DEPTH - 1), rel=1e-9), sigmoid
    assert sigmoid["end_log_slope"] == pytest.approx(-math.log(factor), rel=1e-9), sigmoid
    assert sigmoid["end_step"] == 20, sigmoid
    # weight-gradient norms in the fixture grow 5 % per layer: ratio 1.05 / 1.2
    assert sigmoid["init_weight_ratio"] == pytest.approx(1.05 / 1.2), sigmoid


def test_gradient_flow_table_diverged_and_failed_runs_have_undefined_end(results):
    flow = report.gradient_flow_table(results["runs"], results["layer_stats"]).set_index("run_id")
    runs = results["runs"].set_index("run_id")
    diverged = flow.loc[runs.index[runs["status"] == "diverged"]].iloc[0]
    assert math.isfinite(diverged["init_log_slope"]), diverged
    assert math.isnan(diverged["end_log_slope"]), diverged
    failed = flow.loc[runs.index[runs["status"] == "failed"]].iloc[0]
    assert failed[["init_log_slope", "end_log_slope", "init_grad_ratio"]].isna().all(), failed


def test_theory_table_pairs_prediction_and_measurement(results):
    flow = report.gradient_flow_table(results["runs"], results["layer_stats"])
    table = report.theory_table(results["runs"], flow)
    assert len(table) == len(results["runs"]), len(table)
    finite = table.dropna(subset=["theory_log_slope", "measured_log_slope"])
    # the fixture's prediction shrinks 5 % less per layer: slope error +ln 1.05 everywhere
    assert np.allclose(finite["slope_error"], math.log(1.05)), finite["slope_error"].unique()
    ratio = table["measured_first_last_ratio"]
    assert (table["measured_init_verdict"] == ratio.map(init_verdict)).all()


def test_theory_table_without_theory_columns_fills_nan_and_na():
    bare = make_results(theory_columns=False)
    flow = report.gradient_flow_table(bare["runs"], bare["layer_stats"])
    table = report.theory_table(bare["runs"], flow)
    assert table["theory_log_slope"].isna().all(), table["theory_log_slope"]
    assert set(table["theory_verdict"]) == {"n/a"}, set(table["theory_verdict"])
    # the measured slope comes from the layer statistics instead
    assert table["measured_log_slope"].notna().sum() == len(table) - 1, table["measured_log_slope"]


def test_init_selection_prefers_the_activation_by_init_study(results):
    chosen = report.init_selection(results["runs"], results["studies"])
    assert set(chosen["activation"]) == {"sigmoid", "tanh", "relu"}, chosen["activation"]
    assert set(chosen["init_name"]) == {"default", "xavier_uniform"}, chosen["init_name"]
    assert len(chosen) == 12, len(chosen)


def test_init_selection_without_activation_study_takes_every_run(results):
    studies = results["studies"][results["studies"]["study"] == "opt"]
    assert len(report.init_selection(results["runs"], studies)) == len(results["runs"])


def test_reference_runs_take_default_init_per_activation(results):
    chosen = report.reference_runs(report.init_selection(results["runs"], results["studies"]))
    assert set(chosen["init_name"]) == {"default"}, set(chosen["init_name"])
    assert len(chosen) == 6, len(chosen)


def test_theory_profiles_normalize_measured_to_the_last_layer(results):
    selection = report.init_selection(results["runs"], results["studies"])
    profiles = report.theory_profiles(selection, results["layer_stats"])
    measured = profiles[(profiles["source"] == "measured") & (profiles["layer"] == DEPTH)]
    assert np.allclose(measured["value"], 1.0), measured["value"].unique()
    predicted = profiles[profiles["source"] == "theory"]
    assert len(predicted) == 6 * DEPTH, len(predicted)  # once per (activation, init)


def test_phase_grid_covers_every_point(results):
    points = report.phase_points(results["runs"], "tanh")
    assert len(points) == 2, points  # default and xavier_uniform
    grid = report.phase_grid("tanh", points, resolution=12)
    assert len(grid) == 12 * (12 * 5 // 8), len(grid)
    assert grid["sigma_w2"].min() <= points["sigma_w2"].min(), grid["sigma_w2"].min()
    assert grid["sigma_w2"].max() >= points["sigma_w2"].max(), grid["sigma_w2"].max()
    # σ_b² = 0, σ_w² ≈ 1: tanh is critical there, χ₁ ≈ 1
    near = grid[(grid["sigma_b2"] == 0)].iloc[(grid["sigma_w2"] - 1).abs().argsort()[:1]]
    assert near["chi1"].iloc[0] == pytest.approx(1.0, abs=0.3), near


def test_study_finding_names_the_best_setting_with_its_spread(results):
    summary = report.summarize_studies(results["runs"], results["studies"])
    finding = report.study_finding(summary[summary["study"] == "act_init"])
    # tanh · xavier_uniform: 0.93 and 0.89 over the seeds
    assert "best val R² 0.91 ± 0.03 (activation=tanh, init=xavier_uniform)" in finding, finding
    # sigmoid · default: (0.25 · 0.9)³ = 0.011 at init
    assert "most extreme at init: activation=sigmoid, init=default" in finding, finding
    assert "is 0.01 × the last (vanishing)" in finding, finding
    assert "no run of 12 diverged" in finding, finding


def test_study_finding_of_an_optimizer_study_looks_at_the_end_and_counts_divergence(results):
    summary = report.summarize_studies(results["runs"], results["studies"])
    finding = report.study_finding(summary[summary["study"] == "opt"])
    assert "at the end of training" in finding, finding
    assert "1 of 8 runs diverged (optimizer=adam, lr=0.1)" in finding, finding


def test_flow_finding_gives_the_range_of_ratios(results):
    flow = report.gradient_flow_table(results["runs"], results["layer_stats"])
    text = report.flow_finding(flow)
    low = (DECAY["sigmoid"] * INIT_SCALE["default"]) ** (DEPTH - 1)
    assert f"from {low:.2f} (sigmoid · default)" in text, text
    assert "weight gradients alone understate the vanishing" in text, text


def test_theory_finding_reports_slope_gap_and_verdict_agreement(results):
    flow = report.gradient_flow_table(results["runs"], results["layer_stats"])
    text = report.theory_finding(report.theory_table(results["runs"], flow))
    assert f"median of {math.log(1.05):.3f} per layer" in text, text
    assert re.search(r"matches the measured one in \d+ of 22 runs", text), text


def test_build_html_inlines_every_figure_and_escapes_text():
    png = b"\x89PNG\r\n\x1a\nfake"
    page = report.build_html(
        "T <1>",
        "overview & more",
        [
            report.Section(
                "A", "Why?", "x < y", [("fig a", png)], [("tab", pd.DataFrame({"v": [1.5]}))]
            )
        ],
    )
    assert page.count("data:image/png;base64,iVBORw0KGgpmYWtl") == 1, page[:500]
    assert "T &lt;1&gt;" in page and "overview &amp; more" in page and "x &lt; y" in page
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", page), page
    assert "<details open>" in page, page


def test_build_report_has_a_section_per_study_and_the_theory(results):
    runs, studies = results["runs"], results["studies"]
    flow = report.gradient_flow_table(runs, results["layer_stats"])
    table = report.theory_table(runs, flow)
    summary = report.summarize_studies(runs, studies)
    png = b"\x89PNG\r\n\x1a\n"
    keys = {**report.FLOW_FIGURES, **report.TRAINING_FIGURES, **report.THEORY_FIGURES}
    figures = {key: png for key in keys}
    page = report.build_report(
        runs, studies, summary, flow, table, figures, {s: png for s in studies["study"]}
    )
    titles = re.findall(r'<h2 id="[^"]*">([^<]+)</h2>', page)
    assert titles[:2] == ["Gradient flow at init", "Saturation during training"], titles
    assert titles[-1] == "Theory against measurement", titles
    assert "ended with more than half their units saturated" in page
    for study in studies.itertuples():
        assert f"Study: {study.study}" in page and study.question in page, study.study
    assert page.count("data:image/png;base64,") == len(figures) + len(studies)
    # 3 · 2 + 2 · 2 + 2 settings × 2 seeds, less the baseline that two studies share
    assert "22 runs (20 finished, 1 diverged, 1 failed) in 3 studies" in page, page[:2000]


def test_display_axes_folds_a_third_axis_into_the_second():
    runs = pd.DataFrame({"activation": ["tanh", "relu"], "depth": [2, 8], "lr": [0.1, 0.01]})
    folded, axes = report.display_axes(runs, ["activation", "depth", "lr"])
    assert axes == ["activation", "depth · lr"], axes
    assert folded["depth · lr"].tolist() == ["2 · 0.1", "8 · 0.01"], folded


def _flow_rows() -> pd.DataFrame:
    """Gradient-flow rows of two activations × two inits × two seeds."""
    rows = []
    for activation, init, weight, act in [
        ("sigmoid", "default", 0.02, 9.0),
        ("sigmoid", "xavier_uniform", 0.3, 3.0),
        ("relu", "default", 1.1, 1.2),
        ("relu", "xavier_uniform", 0.9, 1.5),
    ]:
        for seed in (0, 1):
            rows.append(
                {
                    "activation": activation,
                    "init_name": init,
                    "init_weight_ratio": weight * (1 + 0.1 * seed),
                    "init_act_ratio": act * (1 + 0.1 * seed),
                }
            )
    return pd.DataFrame(rows)


def test_violin_finding_reads_the_reference_init_per_activation():
    text = report.violin_finding(_flow_rows())
    # the violins draw PyTorch's default init: its medians, lowest first
    expected = "First-layer ‖∂L/∂W‖ over the last, median over seeds (default): "
    assert text == expected + "sigmoid 0.02, relu 1.16."
    assert report.violin_finding(_flow_rows().iloc[:0]) == ""


def test_activation_finding_names_the_extreme_settings():
    text = report.activation_finding(_flow_rows())
    assert "from 1.26 (relu · default) to 9.45 (sigmoid · default)" in text, text
    assert report.activation_finding(_flow_rows().drop(columns="init_act_ratio")) == ""


def test_phase_finding_places_each_init_in_its_phase():
    runs = pd.DataFrame(
        {
            "activation": ["tanh", "tanh", "tanh", "tanh", "relu"],
            "init_name": ["default", "default", "xavier_uniform", "normal(2)", "default"],
            "theory_chi1": [0.33, 0.35, 1.0, 1.9, 0.5],
        }
    )
    assert report.phase_finding(runs, "tanh") == (
        "χ₁ of the tanh runs, by init: default 0.34 (ordered), xavier_uniform 1.00 "
        "(near critical), normal(2) 1.90 (chaotic)."
    )
    assert report.phase_finding(runs, "sigmoid") == ""
    assert report.phase_finding(runs.drop(columns="theory_chi1"), "tanh") == ""


def test_verdict_finding_counts_only_the_runs_a_verdict_judges():
    runs = pd.DataFrame(
        {
            "init_verdict": ["healthy", "vanishing", "n/a", "healthy"],
            "verdict": ["healthy", "vanishing", "healthy", "healthy"],
            "trained": [True, False, True, False],
        }
    )
    assert report.verdict_finding(runs) == (
        "2 of 4 runs trained. Healthy predicts a run that trains, any other verdict one that does "
        "not: the verdict over training is right for 75 %, the verdict at init for 67 % of the 3 "
        "it judges."
    )


def test_display_axes_shows_a_value_that_does_not_apply_as_a_dash():
    runs = pd.DataFrame(
        {
            "arch": ["mlp", "resmlp", "resmlp"],
            "residual_scale": [None, "1", "rezero"],
            "norm_layer": ["none", "none", "layernorm"],
        }
    )
    folded, axes = report.display_axes(runs, ["arch", "residual_scale", "norm_layer"])
    assert axes == ["arch", "residual_scale · norm_layer"], axes
    assert folded[axes[1]].tolist() == ["– · none", "1 · none", "rezero · layernorm"], folded
    assert folded["residual_scale"].tolist() == ["–", "1", "rezero"], folded
    assert runs["residual_scale"].isna().sum() == 1, "the input is left as it was"


def test_summarize_studies_keeps_the_runs_an_axis_does_not_apply_to(residual):
    summary = report.summarize_studies(residual["runs"], residual["studies"])
    # mlp (α does not apply) and resmlp × 3 α, each without and with LayerNorm
    assert len(summary) == 8, summary["setting"].tolist()
    plain = summary[summary["arch"] == "mlp"]
    assert plain["setting"].tolist() == [
        "arch=mlp, residual_scale=–, norm_layer=layernorm",
        "arch=mlp, residual_scale=–, norm_layer=none",
    ], plain["setting"].tolist()
    assert plain["n_runs"].tolist() == [2, 2], plain
    assert plain["residual_scale"].isna().all(), plain["residual_scale"]  # "–" in the page
    assert summary["n_runs"].sum() == len(residual["runs"]), summary["n_runs"]


def test_study_frames_keep_the_plain_runs_of_a_residual_study(residual):
    runs, curves, axes = report.study_frames(
        residual["runs"],
        residual["history"],
        "residual",
        residual["studies"]["axes"][0],
        "val_loss",
    )
    assert axes == ["arch", "residual_scale · norm_layer"], axes
    assert len(runs) == 16 and runs[axes].notna().all().all(), runs[axes]
    assert set(curves.loc[curves["arch"] == "mlp", axes[1]]) == {"– · none", "– · layernorm"}


def test_gradient_flow_table_reads_a_residual_net_on_its_stream(residual):
    flow = report.gradient_flow_table(residual["runs"], residual["layer_stats"])
    rows = flow[(flow["residual_scale"] == "1") & (flow["norm_layer"] == "none")]
    # the stream grows 1.6× per block towards the input; the branch's ∂L/∂h shrinks 0.5×
    expected = arch.MEASURED_FACTORS["1"] ** (arch.DEPTH - 1)
    assert np.allclose(rows["init_grad_ratio"], expected), rows["init_grad_ratio"]
    runs = residual["runs"].set_index("run_id")
    assert np.allclose(flow["init_grad_ratio"], runs.loc[flow["run_id"], "init_grad_ratio"])


def test_varies_architecture_only_for_a_study_over_arch_or_residual_scale(residual, results):
    assert report.varies_architecture(residual["runs"], "residual", "arch,residual_scale")
    # one value is enough: a plain MLP set against a residual baseline
    assert report.varies_architecture(residual["runs"], "residual", "arch")
    assert not report.varies_architecture(residual["runs"], "residual", "norm_layer")
    assert not report.varies_architecture(residual["runs"], "nosuch", "arch")
    for study in results["studies"].itertuples():
        assert not report.varies_architecture(results["runs"], study.study, study.axes), study


def test_architecture_frames_draw_every_net_and_scale_theory_to_the_last_layer(residual):
    profiles, outcomes, nets = _architecture_frames(residual)
    assert nets == [
        "plain MLP",
        "resmlp α = 1",
        "resmlp α = 1/√L",
        "resmlp ReZero (α = 0, learned)",
    ]
    assert set(profiles["setting"]) == {"norm_layer=none", "norm_layer=layernorm"}
    assert len(outcomes) == 16, outcomes
    measured = profiles[profiles["source"] == "measured"]
    assert len(measured) == 16 * arch.DEPTH, len(measured)  # every run, the plain ones too
    theory = profiles[profiles["source"] == "theory"].set_index(["setting", "net", "layer"])
    # a line per setting and net, but none for the plain net with LayerNorm
    assert len(theory) == 7 * arch.DEPTH, theory.index.droplevel("layer").unique()
    assert ("norm_layer=layernorm", "plain MLP", 1) not in theory.index
    # at the last layer theory meets the mean measured value (TOP × 1, 1.1 over the seeds)
    last = theory.xs(arch.DEPTH, level="layer")["value"]
    assert np.allclose(last, arch.TOP * 1.05), last
    # below, it follows its own factor: THEORY_FACTORS, not the measured one
    alpha1 = theory.loc[("norm_layer=none", "resmlp α = 1", 1), "value"]
    expected = arch.TOP * 1.05 * arch.THEORY_FACTORS["1"] ** (arch.DEPTH - 1)
    assert alpha1 == pytest.approx(expected), alpha1


def test_architecture_finding_gives_ratio_theory_and_outcome_per_setting(residual):
    text = report.architecture_finding(*_architecture_frames(residual))
    # 0.1³ measured, 0.2³ predicted; 1.6³ = 4.1 against 1.5³ = 3.4; 1.1³ = 1.3 against 1.125³
    assert "norm_layer=none: plain MLP 1e-03× (theory 8e-03×), does not train (val R² 0.00)" in (
        text
    ), text
    assert "resmlp α = 1 4.1× (theory 3.4×), 2 of 2 diverged" in text, text
    assert "resmlp α = 1/√L 1.3× (theory 1.4×), trains (val R² 0.94)" in text, text
    assert "resmlp ReZero (α = 0, learned) 1× (theory 1×), trains (val R² 0.96)" in text, text
    assert "norm_layer=layernorm: plain MLP 1e-03× (no theory)" in text, text


@pytest.mark.parametrize(
    ("measured", "expected"),
    [
        ({"1": 3.0}, "resmlp α = 1 27× (theory 3.4×)"),
        ({"mlp": 0.5}, "plain MLP 0.12× (theory 8e-03×)"),
        ({"1/sqrt(depth)": 0.9}, "resmlp α = 1/√L 0.73× (theory 1.4×)"),
    ],
    ids=["alpha_1", "plain", "alpha_inv_sqrt_depth"],
)
def test_architecture_finding_follows_the_measured_numbers(measured, expected):
    tables = arch.make_architecture_results(measured=measured)
    text = report.architecture_finding(*_architecture_frames(tables))
    assert expected in text, text


def test_build_report_shows_the_architecture_figure_and_finding_in_its_study(residual):
    runs, studies = residual["runs"], residual["studies"]
    flow = report.gradient_flow_table(runs, residual["layer_stats"])
    summary = report.summarize_studies(runs, studies)
    png = b"\x89PNG\r\n\x1a\n"
    figures = {"residual": png, report.ARCHITECTURE_FIGURE.format(study="residual"): png}
    args = (runs, studies, summary, flow, report.theory_table(runs, flow), {}, figures)
    page = report.build_report(*args, layer_stats=residual["layer_stats"])
    section = page[page.index("Study: residual</h2>") :]
    assert section.count("data:image/png;base64,") == 2, section[:2000]
    assert section.index("gradient profile at init") < section.index("study residual")
    assert "resmlp α = 1 4.1× (theory 3.4×), 2 of 2 diverged" in section, section[:2000]
    assert "arch=mlp, residual_scale=–, norm_layer=none" in section, section
    # without the layer statistics the study keeps the general finding
    plain = report.build_report(*args)
    assert "4.1× (theory" not in plain and "best val R² 0.96" in plain, plain[-3000:]


def _step_frames(tables: dict[str, pd.DataFrame], study: str):
    axes = tables["studies"].set_index("study").loc[study, "axes"]
    profiles = report.training_profiles(tables["runs"], tables["layer_stats"])
    return report.layer_step_frames(tables["runs"], profiles, study, axes)


def test_layer_step_frames_average_seeds_in_log_space_and_span_the_planned_steps():
    maps, outcomes = _step_frames(diverging_midway(blown_at=10), "opt")
    cells = maps.set_index(["setting", "layer", "step"])
    assert len(cells) == 4 * DEPTH * 3, len(cells)  # every setting at steps 0, 10, 20
    # sgd at lr 0.01 (tanh, default init), layer 1: RMS 1e-2 × (1 or 1.1 by seed) × factor³,
    # averaged as logarithms
    factor = DECAY["tanh"] * INIT_SCALE["default"]
    expected = np.log10(1e-2 * factor ** (DEPTH - 1)) + np.log10(1.1) / 2
    sgd = cells.loc[("optimizer=sgd, lr=0.01", 1, 10)]
    assert sgd["log_rms"] == pytest.approx(expected), sgd
    assert sgd["relative"] == pytest.approx((DEPTH - 1) * np.log10(factor)), sgd  # less the top
    # adam at lr 0.1 blew up at step 10 in both seeds: a value at step 0, none after
    blown = cells.loc["optimizer=adam, lr=0.1"]["log_rms"].unstack("step")
    assert blown[0].notna().all() and blown[[10, 20]].isna().all().all(), blown
    assert list(outcomes["status"]).count("diverged") == 2, outcomes


def test_layer_step_frames_leave_a_cell_empty_unless_every_seed_has_a_value():
    """Seed 0 of adam at lr 0.1 blew up at once, seed 1 trained: no cell of the setting has a
    value (a mean over the seed that is left would hide the divergence)."""
    maps, _ = _step_frames(make_results(), "opt")
    mine = maps[maps["setting"] == "optimizer=adam, lr=0.1"]
    assert len(mine) == DEPTH * 3 and mine["log_rms"].isna().all(), mine


def test_layer_step_frames_of_a_study_without_runs_are_empty(results):
    profiles = report.training_profiles(results["runs"], results["layer_stats"])
    maps, outcomes = report.layer_step_frames(results["runs"], profiles, "nosuch", "lr")
    assert maps.empty and outcomes.empty and list(maps.columns) == list(report.MAP_COLUMNS)


def test_layer_step_frames_read_a_residual_net_on_its_stream(residual):
    maps, _ = _step_frames(residual, arch.STUDY.name)
    stream = maps[maps["quantity"] == "grad_stream_rms"]
    plain = maps[maps["quantity"] == "grad_preact_rms"]
    assert set(plain["setting"].str.split(",").str[0]) == {"arch=mlp"}
    # ReZero's stream is level (factor 1); its branch's ∂L/∂h, halving per layer, is not read
    rezero = stream[stream["setting"].str.contains("rezero") & stream["relative"].notna()]
    assert np.allclose(rezero["relative"], 0.0), rezero


@pytest.mark.parametrize(
    ("where", "layer", "factor", "expected"),
    [
        (
            {"activation": "sigmoid", "init": "default"},
            1,
            1 / 40,
            # 1.05e-2 × 0.225³ = 1.1e-4 at layer 1, then / 40; the top stays at 1.05e-2
            "activation=sigmoid, init=default: layer 1's ∂L/∂h fell 40× (from 1e-04 to 3e-06) "
            "while the last layer's (4) stayed within 2× (from 1e-02 to 1e-02), so layer 1 went "
            "from 0.011× the last layer's to 3e-04× (away from level; 1.6 decades",
        ),
        (
            {"activation": "tanh", "init": "xavier_uniform"},
            2,
            3.0,
            # 1.05e-2 × 0.88² = 8.1e-3, then × 3
            "activation=tanh, init=xavier_uniform: layer 2's ∂L/∂h rose 3× (from 8e-03 to 2e-02)",
        ),
        (
            {"activation": "sigmoid", "init": "default"},
            DEPTH,
            1 / 30,
            "layer 1's ∂L/∂h stayed within",
        ),
    ],
    ids=["layer_1_falls", "layer_2_rises", "top_falls"],
)
def test_layer_step_finding_follows_the_numbers(results, where, layer, factor, expected):
    changed = drift(results, where, layer, factor, from_step=10)
    maps, _ = _step_frames(changed, "act_init")
    finding = report.layer_step_finding(report.early_change(maps, early=10), early=10)
    assert finding.startswith("In early training (step 0 to 10) the gradient profile changed"), (
        finding
    )
    if layer == DEPTH:  # the top fell: every layer below rose against it, layer 1 first named
        assert "while the last layer's (4) fell 30×" in finding, finding
    assert expected in finding, finding


def test_early_change_reads_step_0_against_the_first_step_past_early_or_the_last_whole_one():
    maps, _ = _step_frames(diverging_midway(blown_at=20), "opt")
    changes = report.early_change(maps, early=100)
    until = changes.groupby("setting")["until"].first()
    # runs of 20 steps: their last step; adam at lr 0.1 blew up at 20: its last whole profile
    assert until.to_dict() == {s: 20 if "adam, lr=0.1" not in s else 10 for s in until.index}
    assert np.allclose(changes["change"], 0.0)  # the fixture's profiles never change
    text = report.layer_step_finding(changes[changes["setting"] == "optimizer=adam, lr=0.1"])
    assert "(step 0 to 10, its last whole profile)" in text, text
    assert report.layer_step_finding(changes.iloc[:0]).startswith("No setting has"), text


def test_build_report_shows_the_layer_step_maps_and_their_finding_in_each_study(results):
    runs, studies = results["runs"], results["studies"]
    flow = report.gradient_flow_table(runs, results["layer_stats"])
    summary = report.summarize_studies(runs, studies)
    png = b"\x89PNG\r\n\x1a\n"
    figures = {s: png for s in studies["study"]} | {
        report.LAYER_STEP_FIGURE.format(study=s): png for s in studies["study"]
    }
    changed = drift(results, {"activation": "sigmoid", "init": "default"}, 1, 1 / 40)
    maps, _ = _step_frames(changed, "act_init")
    changes = report.early_change(maps).assign(study="act_init")
    args = (runs, studies, summary, flow, report.theory_table(runs, flow), {}, figures)
    page = report.build_report(*args, layer_step_changes=changes)
    assert page.count("data:image/png;base64,") == 2 * len(studies)
    section = page[page.index("Study: act_init</h2>") : page.index("Study: opt</h2>")]
    assert section.index("study act_init") < section.index("the gradient profile over training")
    assert "layer 1&#x27;s ∂L/∂h fell 40×" in section, section[:3000]
    # a study without rows in the table keeps its finding alone
    other = page[page.index("Study: opt</h2>") :]
    assert "In early training" not in other.split("</p>")[1], other[:2000]


def test_run_variances_take_the_theory_columns_else_the_run_spec():
    runs = pd.DataFrame(
        {
            "init": ["normal", "normal", "xavier_uniform", "lsuv"],
            "activation": ["tanh"] * 4,
            "width": [8, 8, 8, 8],
            "init_std": [0.5, 0.5, math.nan, math.nan],
            "bias_std": [None, 0.3, None, None],
            "theory_sigma_w2": [9.0, math.nan, math.nan, math.nan],
            "theory_sigma_b2": [0.1, math.nan, math.nan, math.nan],
        }
    )
    variances = report.run_variances(runs)
    # stored columns win; else init_std² · width and bias_std²; xavier 2 fan_in/(fan_in+fan_out)
    expected = [(9.0, 0.1), (2.0, 0.09), (1.0, 0.0), (math.nan, 0.0)]
    got = list(variances.itertuples(index=False, name=None))
    assert np.allclose(got, expected, equal_nan=True), got


def test_trainability_frames_read_each_cell_against_6_xi_c(theory_studies):
    cells, panels = report.trainability_frames(theory_studies["runs"], "depth_sigma", deep.AXES)
    assert len(cells) == len(deep.SIGMA_W2) * len(deep.DEPTHS), cells
    assert panels[["activation", "sigma_b2"]].values.tolist() == [["tanh", deep.SIGMA_B2]]
    critical = theory.critical_sigma_w2("tanh", deep.SIGMA_B2)
    assert panels["critical_sigma_w2"].iloc[0] == pytest.approx(critical, rel=1e-12)
    xi_c = theory.depth_scales("tanh", cells["sigma_w2"].to_numpy(), deep.SIGMA_B2).xi_c
    assert np.allclose(cells["six_xi_c"], 6 * xi_c, rtol=1e-12), cells
    depths = report.trainable_depths(cells).set_index("sigma_w2")
    expected = {s: d if d else math.nan for s, d in deep.TRAINABLE.items()}
    assert depths["deepest"].to_dict() == pytest.approx(expected, nan_ok=True), depths
    # the trainable depth ends between the deepest that trains and the next one tried
    following = {s: 2.0 * d if d < max(deep.DEPTHS) else math.nan for s, d in expected.items()}
    assert depths["next_tried"].to_dict() == pytest.approx(following, nan_ok=True), depths
    # one of the two seeds diverged: the median is below every metric, the cell does not train
    sigma_w2, depth, _ = deep.DIVERGED
    cell = cells[(cells["sigma_w2"] == sigma_w2) & (cells["depth"] == depth)].iloc[0]
    assert cell["median_metric"] == -math.inf and not cell["trains"] and cell["n_stopped"] == 1


def test_trainability_frames_split_panels_by_another_axis_of_the_study():
    """Runs at two learning rates are not seeds of one cell: a panel per learning rate."""
    tables = deep.make_theory_results(lrs=(0.01, 0.03))
    cells, panels = report.trainability_frames(tables["runs"], "depth_sigma", deep.AXES + ",lr")
    assert panels["panel"].tolist() == [
        "tanh, σ_b² = 0.05, lr=0.01",
        "tanh, σ_b² = 0.05, lr=0.03",
    ], panels
    assert (
        cells.groupby("panel")["n_runs"].sum() == 2 * len(deep.SIGMA_W2) * len(deep.DEPTHS)
    ).all()
    text = report.trainability_finding(cells, panels)
    assert text.count("the deepest net that trains (depth 64 of up to 64)") == 2, text


def test_trainability_frames_are_empty_for_a_study_without_depth_and_sigma_w2(
    theory_studies, results
):
    for tables, study in [(theory_studies, "bn"), (theory_studies, "bn_init")] + [
        (results, s) for s in results["studies"]["study"]
    ]:
        cells, panels = report.trainability_frames(
            tables["runs"], study, deep.axes_of(tables, study)
        )
        assert cells.empty and panels.empty, (study, cells)
        assert report.trainability_finding(cells, panels) == ""


@pytest.mark.parametrize(
    ("trainable", "expected"),
    [
        (
            {},
            "the deepest net that trains (depth 64 of up to 64) sits at σ_w² = 1.5, 1.76, "
            "critical σ_w² 1.76; where the trainable depth ends inside the sweep (4 of 6 σ_w²), "
            "6 ξ_c falls between the deepest depth that trains and the next one tried at 2 of "
            "them and at most 1.3× beyond (σ_w² = 4: trains to depth 16, not 32; 6 ξ_c 41.9); "
            "every depth trains at σ_w² = 1.5, 1.76 (6 ξ_c 94.7–2.95e+04)",
        ),
        (
            {1.5: 16, 2.5: 64},
            "sits at σ_w² = 1.76, 2.5, critical σ_w² 1.76; where the trainable depth ends "
            "inside the sweep (4 of 6 σ_w²), 6 ξ_c falls between the deepest depth that trains "
            "and the next one tried at 2 of them and at most 3× beyond (σ_w² = 1.5: trains to "
            "depth 16, not 32; 6 ξ_c 94.7)",
        ),
        (
            dict.fromkeys(deep.SIGMA_W2, 0),
            "no cell trains (median final val accuracy ≥ 0.5) at σ_w² = 0.6–4 (critical σ_w² 1.76)",
        ),
    ],
    ids=["near_critical", "deepest_moved", "none"],
)
def test_trainability_finding_follows_the_outcomes(trainable, expected):
    runs = deep.make_theory_results(trainable=trainable)["runs"]
    text = report.trainability_finding(*report.trainability_frames(runs, "depth_sigma", deep.AXES))
    assert text.startswith("Trainable depth against 6 ξ_c: tanh, σ_b² = 0.05: "), text
    assert expected in text, text


def test_bn_growth_frames_measure_the_fixture_growth_beside_theory(theory_studies):
    points, lines = report.bn_growth_frames(
        theory_studies["runs"], theory_studies["layer_stats"], "bn"
    )
    assert len(points) == 2 * len(deep.BATCH_SIZES) * 2, points  # activations × B × seeds
    for row in points.itertuples(index=False):
        want = deep.measured_growth(row.activation, row.batch_size, "normal")
        assert row.growth == pytest.approx(want, rel=1e-9), row
        assert row.theory == bn_gradient_growth(row.activation, row.batch_size), row
    assert lines["batch_size"].min() <= min(deep.BATCH_SIZES) // 2, lines
    assert set(deep.BATCH_SIZES) <= set(lines["batch_size"]), lines
    for activation, line in lines.groupby("activation"):
        assert line["large_batch"].unique().tolist() == [bn_gradient_growth(activation)]
    # the trainability study has no BatchNorm run
    points, lines = report.bn_growth_frames(
        theory_studies["runs"], theory_studies["layer_stats"], "depth_sigma"
    )
    assert points.empty and lines.empty and report.bn_growth_finding(points) == ""


@pytest.mark.parametrize(
    ("error", "study", "expected"),
    [
        (
            {},
            "bn",
            "tanh 1.22× at B = 16 → 1.16× at B = 256 (theory 1.246 → 1.181), relu 1.60× at "
            "B = 16 → 1.48× at B = 256 (theory 1.590 → 1.473); over 6 activation × batch "
            "settings the median growth lies within 2.2 % of theory (largest: tanh at B = 256",
        ),
        (
            {"relu": 0.1},
            "bn",
            "relu 1.75× at B = 16 → 1.62× at B = 256 (theory 1.590 → 1.473); over 6 activation "
            "× batch settings the median growth lies within 9.8 % of theory (largest: relu at "
            "B = 256",
        ),
        (
            {},
            "bn_init",
            "relu 1.51× at B = 64 (theory 1.493), within 1 % of theory; across 3 inits "
            "(σ_w² 1–8) at one activation and batch size it changes by at most 0.5 %",
        ),
    ],
    ids=["batch", "relu_off", "inits"],
)
def test_bn_growth_finding_follows_the_measured_growth(error, study, expected):
    tables = deep.make_theory_results(growth_error=error)
    points, _ = report.bn_growth_frames(tables["runs"], tables["layer_stats"], study)
    text = report.bn_growth_finding(points)
    assert text.startswith("At init (each run's first training batch)"), text
    assert expected in text, text


def test_build_report_shows_the_trainability_and_bn_figures_with_their_findings(theory_studies):
    runs, studies = theory_studies["runs"], theory_studies["studies"]
    flow = report.gradient_flow_table(runs, theory_studies["layer_stats"])
    summary = report.summarize_studies(runs, studies)
    png = b"\x89PNG\r\n\x1a\n"
    figures = {s: png for s in studies["study"]} | {
        report.TRAINABILITY_FIGURE.format(study="depth_sigma"): png,
        report.BN_GROWTH_FIGURE.format(study="bn"): png,
    }
    args = (runs, studies, summary, flow, report.theory_table(runs, flow), {}, figures)
    page = report.build_report(*args, layer_stats=theory_studies["layer_stats"])
    trained = page[page.index("Study: depth_sigma</h2>") : page.index("Study: bn</h2>")]
    assert trained.count("data:image/png;base64,") == 2, trained[:2000]
    assert trained.index("study depth_sigma") < trained.index("trainability over the weight")
    assert "Trainable depth against 6 ξ_c: tanh, σ_b² = 0.05" in trained, trained[:3000]
    bn = page[page.index("Study: bn</h2>") : page.index("Study: bn_init</h2>")]
    assert bn.count("data:image/png;base64,") == 2, bn[:2000]
    assert "BatchNorm&#x27;s gradient explosion at init" in bn, bn[:3000]
    assert "grows towards the input per layer by: tanh 1.22×" in bn, bn[:3000]
    assert "Trainable depth" not in bn, bn[:3000]
    # without the layer statistics there is no measured growth to speak of
    plain = report.build_report(*args)
    assert "grows towards the input" not in plain and "Trainable depth against" in plain

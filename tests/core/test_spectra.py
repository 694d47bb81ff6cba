"""The Jacobian spectrum in the report (gradlab.core.report.spectra): which runs its figures
compare, their frames and findings, on hand-made spectra whose numbers are known exactly."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from gradlab.core import report
from gradlab.core.grid import RunSpec, Study, expand
from gradlab.core.spectrum import SAMPLE
from tests.helpers import spectrum_results as spec
from tests.helpers.results import make_results


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return spec.make_spectrum_results()


def _studies(*studies: Study) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "study": [s.name for s in studies],
            "question": [s.question for s in studies],
            "axes": [",".join(s.axes) for s in studies],
        }
    )


def test_density_frames_take_the_study_with_most_settings_at_its_deepest_depth(tables):
    samples, cells = report.density_frames(tables["runs"], tables["studies"], tables["spectrum"])
    # act_init: 3 activations × 2 inits at depth 4 beat act_depth's 2 settings at depth 8
    assert set(cells["study"]) == {"act_init"} and set(cells["depth"]) == {4}
    assert list(cells["cell"]) == [
        "sigmoid·default",
        "sigmoid·xavier_uniform",
        "tanh·default",
        "tanh·xavier_uniform",
        "relu·default",
        "relu·xavier_uniform",
    ]
    assert set(cells["n_runs"]) == {2}
    for row in cells.itertuples():
        assert row.frac_well_conditioned == spec.well_conditioned(row.activation, row.init)
        assert row.frac_zero == spec.ZEROS.get(row.activation, 0) / spec.SIZE, row
    # every value of every point and seed, relu's exact zeros flagged
    assert len(samples) == len(cells) * 2 * spec.POINTS * spec.SIZE
    zero = samples[samples["zero"]]
    assert set(zero["activation"]) == {"relu"} and (zero["log10_s"] == spec.TINY_LOG10).all()
    tanh = samples[samples["cell"] == "tanh·xavier_uniform"]["log10_s"]
    assert np.allclose(np.sort(tanh.unique()), spec.log10_s("tanh", "xavier_uniform"))


def test_density_finding_gives_each_settings_share_in_the_band(tables):
    cells = report.density_frames(tables["runs"], tables["studies"], tables["spectrum"])[1]
    assert report.density_finding(cells) == (
        "In study act_init at depth 4 (6 settings, 2 seeds each), the share of the Jacobian's "
        "singular values within (0.1, 10): tanh·xavier_uniform 50 %, relu·default 38 %, "
        "relu·xavier_uniform 38 %, tanh·default 25 %; none for sigmoid default, xavier_uniform "
        "(median s from 1e-08 to 1e-06). Below 1e-12 × the largest (numerically zero: J is "
        "rank-deficient to float64): relu default 25 %, xavier_uniform 25 %."
    )


@pytest.mark.parametrize(
    ("shares", "zeros", "expected"),
    [
        ((0.9, 0.0), (0.0, 0.0), "tanh·xavier_uniform 90 %; none for relu default (median"),
        ((0.0, 0.004), (0.0, 0.5), "relu·default < 1 %; none for tanh xavier_uniform (median"),
        ((0.0, 0.0), (0.0, 0.5), "(0.1, 10): none for tanh xavier_uniform; relu default (median"),
        ((0.2, 0.3), (0.01, 0.5), "numerically zero: J is rank-deficient to float64): relu"),
    ],
)
def test_density_finding_follows_the_numbers(shares, zeros, expected):
    cells = pd.DataFrame(
        {
            "study": "s",
            "cell": ["tanh·xavier_uniform", "relu·default"],
            "activation": ["tanh", "relu"],
            "init": ["xavier_uniform", "default"],
            "depth": 16,
            "n_runs": [2, 3],
            "frac_well_conditioned": shares,
            "frac_zero": zeros,
            "median_log10_s": [-3.0, 2.0],
        }
    )
    text = report.density_finding(cells)
    assert expected in text, text
    assert "(2 settings, medians over seeds)" in text, text
    medians = cells.loc[cells["frac_well_conditioned"] == 0, "median_log10_s"]
    if len(medians) == 1:
        assert f"(median s {10 ** medians.iloc[0]:.0e})" in text, text
    elif len(medians) == 2:
        assert "(median s from 1e-03 to 1e+02)" in text, text
    assert ("tanh xavier_uniform 1 %" in text) == (zeros[0] >= 0.05), text


def test_density_finding_of_one_seed_says_so():
    results = spec.make_spectrum_results(seeds=(0,))
    cells = report.density_frames(results["runs"], results["studies"], results["spectrum"])[1]
    assert "(6 settings, 1 seed each)" in report.density_finding(cells)


def test_spread_frames_and_finding_read_v_against_depth_beside_theory(tables):
    points, lines = report.spread_frames(tables["runs"], tables["studies"], tables["spectrum"])
    assert set(lines["study"]) == {"act_depth"}
    assert list(lines["cell"].unique()) == ["tanh·xavier_uniform", "relu·xavier_uniform"]
    for row in lines.itertuples():
        assert row.measured == pytest.approx(spec.SLOPE[row.activation] * row.depth)
        assert row.theory == pytest.approx(spec.THEORY_SLOPE[row.activation] * row.depth)
    # a value per seed and point: 2 settings × 3 depths × 2 seeds × 2 points
    assert len(points) == 2 * 3 * 2 * spec.POINTS
    assert report.spread_finding(lines) == (
        "In study act_depth, the normalized variance v = Var[s²]/E[s²]² grows per layer by: "
        "tanh·xavier_uniform 0.50 (theory 0.50; v = 4 vs 4 at depth 8), relu·xavier_uniform "
        "2.00 (theory 2.50; v = 16 vs 20 at depth 8); farthest from theory at the deepest "
        "depth: relu·xavier_uniform, 20 % below."
    )


@pytest.mark.parametrize(
    ("slope", "expected"),
    [
        ({"relu": 3.0}, "relu·xavier_uniform 3.00 (theory 2.50; v = 24 vs 20 at depth 8)"),
        ({"tanh": 1.0, "relu": 2.5}, "farthest from theory at the deepest depth: tanh·xavier"),
        ({"tanh": 1.0, "relu": 2.5}, "tanh·xavier_uniform, 100 % above"),
    ],
)
def test_spread_finding_follows_the_measured_slope(slope, expected):
    results = spec.make_spectrum_results()
    runs, spectrum = spec.with_spectrum(results["runs"], slope={**spec.SLOPE, **slope})
    lines = report.spread_frames(runs, results["studies"], spectrum)[1]
    text = report.spread_finding(lines)
    assert expected in text, text


def test_spread_of_a_setting_without_theory_says_so(tables):
    runs = tables["runs"].assign(theory_jacobian_var_s2=math.nan)
    lines = report.spread_frames(runs, tables["studies"], tables["spectrum"])[1]
    assert lines["theory"].isna().all()
    text = report.spread_finding(lines)
    assert "tanh·xavier_uniform 0.50 (no theory; v = 4 at 8)" in text, text
    assert "farthest" not in text, text


def test_a_grid_at_one_depth_has_a_density_but_no_spread(tables):
    studies = tables["studies"][tables["studies"]["study"] == "act_init"]
    assert not report.density_frames(tables["runs"], studies, tables["spectrum"])[1].empty
    points, lines = report.spread_frames(tables["runs"], studies, tables["spectrum"])
    assert points.empty and lines.empty
    assert report.spread_finding(lines) == (
        "No study measured the Jacobian's spectrum of one setting at two depths or more, so "
        "there is no spread against depth."
    )


@pytest.mark.parametrize("why", ["no_rows", "batchnorm", "no_columns"])
def test_without_a_measured_spectrum_the_frames_are_empty_and_the_findings_say_why(tables, why):
    runs, spectrum = tables["runs"], spec.empty_spectrum()
    if why == "batchnorm":
        runs, spectrum = spec.with_spectrum(runs.assign(norm_layer="batchnorm_pre"))
        assert spectrum.empty and runs["jacobian_mean_s2"].isna().all()
    elif why == "no_columns":  # a runs table from before the spectrum
        runs = make_results()["runs"]
    samples, cells = report.density_frames(runs, tables["studies"], spectrum)
    points, lines = report.spread_frames(runs, tables["studies"], spectrum)
    assert samples.empty and cells.empty and points.empty and lines.empty
    assert report.density_finding(cells).startswith("No run's Jacobian spectrum was measured")
    assert report.spread_finding(lines).startswith("No study measured the Jacobian's spectrum")


def test_the_init_label_names_sigma_w2_and_the_bias_where_set():
    study = Study(
        name="crit",
        question="Isometry?",
        axes={"activation": ("tanh",), "init": ("orthogonal", "kaiming_normal")},
    )
    baseline = RunSpec(
        depth=4, width=8, epochs=1, init="kaiming_normal", sigma_w2="critical", bias_std=0.05
    )
    runs, spectrum = spec.with_spectrum(expand(baseline, [study], (0,)))
    cells = report.density_frames(runs, _studies(study), spectrum)[1]
    assert list(cells["cell"]) == [
        "tanh·kaiming_normal σ_w²=critical σ_b=0.05",
        "tanh·orthogonal σ_w²=critical σ_b=0.05",
    ]


def test_a_study_that_varies_another_axis_of_the_net_is_not_pooled():
    """Widths (or normalization layers) would mix in one setting's density: not compared."""
    by_width = Study(name="w", question="Width?", axes={"activation": ("tanh",), "width": (8, 16)})
    by_opt = Study(name="o", question="Opt?", axes={"optimizer": ("sgd", "adam")})
    baseline = RunSpec(depth=4, width=8, epochs=1)
    runs, spectrum = spec.with_spectrum(expand(baseline, [by_width, by_opt], (0,)))
    assert report.spectrum_selection(runs, _studies(by_width), over_depth=False).empty
    # optimizers act once training starts: the runs share their init and are compared
    chosen = report.spectrum_selection(runs, _studies(by_width, by_opt), over_depth=False)
    assert set(chosen["study"]) == {"o"} and len(chosen) == 2, chosen


def test_build_report_shows_the_spectrum_section_before_the_theory(tables):
    results = make_results()
    runs, spectrum = spec.with_spectrum(results["runs"])
    studies = results["studies"]
    flow = report.gradient_flow_table(runs, results["layer_stats"])
    theory = report.theory_table(runs, flow)
    png = b"\x89PNG\r\n\x1a\n"
    figures = {key: png for key in report.SPECTRUM_FIGURES}
    args = (runs, studies, report.summarize_studies(runs, studies), flow, theory, figures, {})
    page = report.build_report(*args, spectrum=spectrum)
    titles = re.findall(r'<h2 id="[^"]*">([^<]+)</h2>', page)
    assert titles[-2:] == ["Jacobian spectrum at init", "Theory against measurement"], titles
    assert page.count("data:image/png;base64,") == len(report.SPECTRUM_FIGURES)
    assert "In study act_init at depth 4 (6 settings, 2 seeds each)" in page, page[-6000:]
    # make_results' grid has one depth: the spread's finding says so
    assert "so there is no spread against depth" in page
    # the theory table shows the Jacobian's columns, each in the glossary
    glossary = page.split('<dl class="glossary">')[1].split("</dl>")[0]
    for column in ["jacobian_mean_s2", "jacobian_var_s2", "theory_jacobian_mean_s2"]:
        assert f"<th>{column}</th>" in page and f"<dt>{column}</dt>" in glossary, column
    assert "Jacobian spectrum" not in report.build_report(*args)  # no spectrum: no section


def test_spectrum_figure_keys_are_not_other_figures():
    others = {**report.FLOW_FIGURES, **report.TRAINING_FIGURES, **report.THEORY_FIGURES}
    assert not set(report.SPECTRUM_FIGURES) & set(others)


def test_the_sample_statistic_is_the_one_the_frames_read():
    assert SAMPLE == "log10_s"

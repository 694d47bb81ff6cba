"""The report stage: on hand-made tables with a file-backed catalog, and for real after a smoke
run (`kedro run --env smoke`, then `kedro run --env smoke --pipeline report` alone)."""

import base64
import hashlib
import html
import json
import re
import struct
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from mlflow.tracking import MlflowClient

from gradlab.core.grid import RunSpec, Study, expand
from gradlab.core.report import FLOW_FIGURES, SPECTRUM_FIGURES, THEORY_FIGURES, TRAINING_FIGURES
from gradlab.grid_runner import collect
from gradlab.pipelines.report import create_pipeline
from gradlab.store import ResultStore
from tests.helpers.architecture_results import make_architecture_results
from tests.helpers.projects import copy_project, run_kedro
from tests.helpers.results import make_results
from tests.helpers.servers import chromium
from tests.helpers.spectrum_results import empty_spectrum, with_spectrum
from tests.helpers.theory_results import make_theory_results
from tests.helpers.training import SMALL, broken, task, train_in_process

STORED = {"runs", "history", "layer_stats", "distributions", "spectrum", "studies"}
SMOKE_STUDIES = ("activation_depth", "optimizer", "residual")
FIGURES = [
    f"figures/{key}.png"
    for key in (*FLOW_FIGURES, *TRAINING_FIGURES, *SPECTRUM_FIGURES, *THEORY_FIGURES)
]
# the residual study is over the architecture: its gradient profiles at init are a second figure;
# every study has its layer × step maps
STUDY_FIGURES = [
    *(f"figures/studies/{study}.png" for study in SMOKE_STUDIES),
    "figures/studies/residual.profiles.png",
    *(f"figures/layer_steps/{study}.png" for study in SMOKE_STUDIES),
]
TABLES = [
    "claims.parquet",
    "study_summary.parquet",
    "gradient_flow.parquet",
    "theory_vs_measurement.parquet",
    "layer_step_changes.parquet",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def reported(
    smoke_project, tmp_path_factory
) -> tuple[Path, dict[str, str], subprocess.CompletedProcess]:
    """A copy of the smoke project after a second, report-only run; the results before it."""
    project = copy_project(smoke_project, tmp_path_factory.mktemp("report") / "project")
    data = project / "data" / "smoke"
    before = _digests(data / "06_models") | _digests(data / "07_model_output")
    for path in (data / "08_reporting").rglob("*"):
        if path.is_file():
            path.unlink()  # what the report run writes must be its own
    result = run_kedro(project, "run", "--env", "smoke", "--pipeline", "report")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return project, before, result


def _png_size(png: bytes) -> tuple[int, int]:
    # the IHDR chunk follows the signature: length, type, then width and height (big-endian)
    return struct.unpack(">II", png[16:24])


def test_report_pipeline_reads_stored_results_only_and_has_no_training_node():
    pipeline = create_pipeline()
    names = {node.name for node in pipeline.nodes}
    assert not any("train" in name for name in names), sorted(names)
    assert pipeline.inputs() == STORED | {"params:report", "params:claims"}, sorted(
        pipeline.inputs()
    )
    assert not {name.split("@")[0] for name in pipeline.all_outputs()} & STORED


def _run_report(results: dict[str, pd.DataFrame], tmp_path: Path) -> tuple[str, list[str]]:
    """The report pipeline on ``results`` (no ``spectrum``: none measured) with file-backed
    figures; the page and the PNGs."""
    results = {"spectrum": empty_spectrum(), **results}
    figures = tmp_path / "figures"
    png_load = {"fs_args": {"open_args_load": {"mode": "rb"}}}
    catalog = DataCatalog.from_config(
        {
            "{name}_plot@figure": {
                "type": "matplotlib.MatplotlibDataset",
                "filepath": f"{figures}/{{name}}.png",
            },
            "{name}_plot@png": {
                "type": "text.TextDataset",
                "filepath": f"{figures}/{{name}}.png",
                **png_load,
            },
            "study_plots@figure": {
                "type": "matplotlib.MatplotlibDataset",
                "filepath": f"{figures}/studies",
            },
            "study_plots@png": {
                "type": "partitions.PartitionedDataset",
                "path": f"{figures}/studies",
                "filename_suffix": ".png",
                "dataset": {"type": "text.TextDataset", **png_load},
            },
            "layer_step_plots": {  # PNG bytes from the node, as conf/base/catalog.yml has it
                "type": "partitions.PartitionedDataset",
                "path": f"{figures}/layer_steps",
                "filename_suffix": ".png",
                "dataset": {
                    "type": "text.TextDataset",
                    "fs_args": {"open_args_save": {"mode": "wb"}, "open_args_load": {"mode": "rb"}},
                },
            },
        }
    )
    for name, frame in results.items():
        catalog[name] = MemoryDataset(frame)
    catalog["params:report"] = MemoryDataset({"max_layers_violin": 3, "phase_resolution": 12})
    catalog["params:claims"] = MemoryDataset({})
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    written = sorted(str(p.relative_to(tmp_path)) for p in figures.rglob("*.png"))
    return outputs["report_html"].load(), written


def test_report_pipeline_runs_on_hand_made_tables(tmp_path):
    """Two seeds, a diverged and a failed run; figures through real file datasets."""
    results = make_results()
    page, written = _run_report(results, tmp_path)
    expected = FIGURES + [
        f"figures/{folder}/{s}.png"
        for s in results["studies"]["study"]
        for folder in ("studies", "layer_steps")
    ]
    assert written == sorted(expected), written
    assert page.count("data:image/png;base64,") == len(expected), page.count("data:image")
    assert "22 runs (20 finished, 1 diverged, 1 failed) in 3 studies" in page, page[:3000]
    # no spectrum measured: the section's figures and finding say why
    assert "No run's Jacobian spectrum was measured at init" in html.unescape(page)


def test_report_pipeline_draws_the_jacobian_spectrum_with_its_findings(tmp_path):
    """Hand-made spectra: the density at the act_init study's depth, and no spread (one depth)."""
    results = make_results()
    results["runs"], results["spectrum"] = with_spectrum(results["runs"])
    page, written = _run_report(results, tmp_path)
    assert {f"figures/{key}.png" for key in SPECTRUM_FIGURES} <= set(written), written
    text = html.unescape(page)
    assert "In study act_init at depth 4 (6 settings, 2 seeds each)" in text, text[-6000:]
    assert "tanh·xavier_uniform 50 %" in text and "so there is no spread against depth" in text


def test_report_pipeline_draws_the_profiles_of_a_study_of_architectures(tmp_path):
    """Plain against residual nets: a second study figure, and the finding it computes."""
    page, written = _run_report(make_architecture_results(), tmp_path)
    studies = [
        "figures/studies/residual.png",
        "figures/studies/residual.profiles.png",
        "figures/layer_steps/residual.png",
    ]
    assert written == sorted(FIGURES + studies), written
    assert page.count("data:image/png;base64,") == len(FIGURES) + 3, page.count("data:image")
    assert "resmlp α = 1 4.1× (theory 3.4×), 2 of 2 diverged" in html.unescape(page), page[:3000]


def test_report_pipeline_draws_the_trainability_heatmap_and_the_bn_growth(tmp_path):
    """A study over σ_w² × depth and two of BatchNorm nets: their figures beside the study's,
    and each section's finding computed from them."""
    results = make_theory_results()
    page, written = _run_report(results, tmp_path)
    studies = list(results["studies"]["study"])
    expected = [
        *(f"figures/{folder}/{s}.png" for s in studies for folder in ("studies", "layer_steps")),
        "figures/studies/depth_sigma.trainability.png",
        "figures/studies/bn.bn_growth.png",
        "figures/studies/bn_init.bn_growth.png",
    ]
    assert written == sorted(FIGURES + expected), written
    assert page.count("data:image/png;base64,") == len(FIGURES) + len(expected)
    text = html.unescape(page)
    assert "the deepest net that trains (depth 64 of up to 64) sits at σ_w² = 1.5, 1.76" in text
    assert "relu 1.51× at B = 64 (theory 1.493)" in text, text[-5000:]


@pytest.mark.parametrize("outcome", ["failed", "diverged"])
def test_report_pipeline_draws_a_grid_where_no_run_finished(outcome, tmp_path):
    """Divergence and failure are results: the report says so instead of crashing."""
    data = broken(task()) if outcome == "failed" else task()
    lr = 1e9 if outcome == "diverged" else 0.05
    specs = [RunSpec(**SMALL, activation=a, lr=lr) for a in ("tanh", "relu")]
    store = ResultStore(tmp_path / "runs")
    trained = train_in_process(specs, store, data)
    assert set(trained["status"]) == {outcome}, trained
    study = Study(name="acts", question="Which?", axes={"activation": ("tanh", "relu")})
    table = expand(specs[0].model_copy(update={"seed": 0}), [study], seeds=(0,))
    runs, history, layer_stats, distributions, spectrum = collect(table, store)
    studies = pd.DataFrame({"study": ["acts"], "question": ["Which?"], "axes": ["activation"]})
    page, _ = _run_report(
        {
            "runs": runs,
            "history": history,
            "layer_stats": layer_stats,
            "distributions": distributions,
            "spectrum": spectrum,
            "studies": studies,
        },
        tmp_path,
    )
    counts = {"failed": "0 diverged, 2 failed", "diverged": "2 diverged, 0 failed"}[outcome]
    assert f"2 runs (0 finished, {counts}) in 1 studies" in page, page[:3000]


@pytest.mark.slow
def test_kedro_run_report_writes_every_figure_as_a_png(reported):
    project, _, _ = reported
    out = project / "data" / "smoke" / "08_reporting"
    for name in FIGURES + STUDY_FIGURES:
        png = (out / name).read_bytes()
        assert png.startswith(PNG_SIGNATURE), (name, png[:8])
        width, height = _png_size(png)
        # the layer × step maps are palette PNGs (Pillow): a few kB where matplotlib's are tens
        least = 3_000 if name.startswith("figures/layer_steps/") else 10_000
        assert len(png) > least and width >= 400 and height >= 150, (name, len(png), width, height)
    for name in TABLES:
        assert len(pd.read_parquet(out / name)) > 0, name


@pytest.mark.slow
def test_report_html_inlines_every_figure_and_asks_each_question(reported):
    project, _, _ = reported
    out = project / "data" / "smoke" / "08_reporting"
    page = (out / "report.html").read_text()
    for name in FIGURES + STUDY_FIGURES:
        encoded = base64.b64encode((out / name).read_bytes()).decode()
        assert f"data:image/png;base64,{encoded}" in page, name
    assert page.count("data:image/png;base64,") == len(FIGURES) + len(STUDY_FIGURES)
    studies = pd.read_parquet(project / "data" / "smoke" / "03_primary" / "studies.parquet")
    for question in studies["question"]:
        assert question in page, question
    # claims, init, training, verdicts, one per study, the Jacobian's spectrum, theory
    assert page.count('class="finding"') == 6 + len(SMOKE_STUDIES), page.count("finding")
    headings = re.findall(r'<h2 id="[^"]*">([^<]*)</h2>', page)
    assert headings[:4] == [
        "Claims",
        "Gradient flow at init",
        "Saturation during training",
        "Verdicts against outcomes",
    ], headings


@pytest.mark.slow
def test_report_run_logs_figures_tables_and_page_to_its_parent_run(reported):
    project, _, _ = reported
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gradlab")
    latest = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    assert "mlflow.parentRunId" not in latest.data.tags, latest.data.tags  # the parent itself

    def walk(path: str | None = None) -> list[str]:
        found = []
        for item in client.list_artifacts(latest.info.run_id, path):
            found += walk(item.path) if item.is_dir else [item.path]
        return found

    logged = set(walk())
    expected = {*FIGURES, *STUDY_FIGURES, *(f"tables/{t}" for t in TABLES), "report.html"}
    assert expected <= logged, sorted(expected - logged)
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{latest.info.run_id}'"
    )
    assert not children, [run.info.run_name for run in children]  # nothing was trained
    claims = pd.read_parquet(project / "data" / "smoke" / "08_reporting" / "claims.parquet")
    tags = {k: v for k, v in latest.data.tags.items() if k.startswith("claim.")}
    assert tags == {f"claim.{c}": r for c, r in zip(claims["claim_id"], claims["result"])}, tags
    assert latest.data.metrics["claims/total"] == len(claims) == 1
    assert latest.data.metrics["claims/passed"] == (claims["result"] == "pass").sum()


@pytest.mark.slow
def test_report_run_leaves_the_result_store_untouched(reported):
    project, before, result = reported
    data = project / "data" / "smoke"
    after = _digests(data / "06_models") | _digests(data / "07_model_output")
    assert after == before, sorted(set(after.items()) ^ set(before.items()))[:5]
    assert "train_runs_node" not in result.stdout + result.stderr


# Written into a copy of the page: once loaded, the title reports what a reader's browser got.
_LAYOUT_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const page = document.documentElement;
  document.title = "LAYOUT " + JSON.stringify({
    images: images.length,
    undecoded: images.filter((img) => !(img.complete && img.naturalWidth > 0)).length,
    overflow: page.scrollWidth - page.clientWidth,
  });
});
</script>"""


@pytest.mark.slow
def test_report_html_fits_a_1280px_window_and_every_image_decodes(reported, tmp_path):
    project, _, _ = reported
    page = (project / "data" / "smoke" / "08_reporting" / "report.html").read_text()
    probed = tmp_path / "report.html"
    probed.write_text(page.replace("</body>", f"{_LAYOUT_PROBE}</body>"))
    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"]
    window = ["--window-size=1280,800", "--virtual-time-budget=10000"]
    dom = subprocess.run(
        [*browser, *window, probed.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = re.search(r"<title>LAYOUT (\{.*?\})</title>", html.unescape(dom))
    assert found, dom[:2000]
    layout = json.loads(found.group(1))
    assert layout["images"] == page.count("data:image/png;base64,") and layout["images"] > 0
    assert layout["undecoded"] == 0, layout
    assert layout["overflow"] <= 0, layout  # no horizontal scrolling of the page itself


@pytest.mark.slow
def test_every_computed_column_of_the_page_is_in_its_glossary(reported):
    project, _, _ = reported
    page = (project / "data" / "smoke" / "08_reporting" / "report.html").read_text()
    shown = set(re.findall(r"<th>([^<]+)</th>", page))
    axes = {*RunSpec.model_fields, "run_id", "label", "init_name", "studies"}
    glossary = page.split('<dl class="glossary">')[1].split("</dl>")[0]
    defined = set(re.findall(r"<dt>([^<]+)</dt>", glossary))
    assert shown - axes and shown - axes <= defined, sorted(shown - axes - defined)

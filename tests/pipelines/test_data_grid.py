"""The data and grid stages: in-memory Kedro runs, and real `kedro run` from the command line."""

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from gradlab.pipelines import data as data_stage
from gradlab.pipelines import grid as grid_stage
from tests.helpers.projects import REPO, run_kedro


def smoke_parameters(section: str) -> dict:
    return yaml.safe_load((REPO / "conf" / "smoke" / f"parameters_{section}.yml").read_text())[
        section
    ]


def run_in_memory(pipeline, **inputs) -> dict:
    """Run ``pipeline`` on an in-memory catalog; return its free outputs, loaded."""
    catalog = DataCatalog({name: MemoryDataset(value) for name, value in inputs.items()})
    outputs = SequentialRunner().run(pipeline, catalog)
    return {name: dataset.load() for name, dataset in outputs.items()}


def test_data_pipeline_in_memory_makes_every_dataset_and_norm():
    data = smoke_parameters("data")
    outputs = run_in_memory(data_stage.create_pipeline(), **{"params:data": data})
    inputs = outputs["model_inputs"]
    expected = {f"{d}/{n}" for d in data["datasets"] for n in data["input_norms"]}
    assert set(inputs) == expected
    poly = inputs["poly/zscore"]
    assert len(poly) == data["datasets"]["poly"]["n_samples"]
    assert set(poly["split"].unique()) == {"train", "val", "test"}
    n_features = {"poly": 2, "blobs": 2}
    assert len(outputs["normalization_stats"]) == sum(n_features.values()) * len(
        data["input_norms"]
    )


def test_grid_pipeline_in_memory_expands_the_smoke_grid():
    outputs = run_in_memory(
        grid_stage.create_pipeline(),
        **{"params:grid": smoke_parameters("grid"), "params:data": smoke_parameters("data")},
    )
    specs = outputs["run_specs"]
    # activation_depth: 2 × 2; optimizer: sgd and adam on blobs; residual: one → 7 runs, one seed
    assert len(specs) == 7, specs[["label", "studies"]]
    assert specs["run_id"].is_unique
    assert set(outputs["studies"]["study"]) == {"activation_depth", "optimizer", "residual"}


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*.parquet"))
    }


@pytest.mark.slow
def test_kedro_run_data_twice_gives_identical_files(project):
    first = run_kedro(project, "run", "--env", "smoke", "--pipeline", "data")
    assert first.returncode == 0, first.stderr[-3000:]
    before = _digests(project / "data")
    second = run_kedro(project, "run", "--env", "smoke", "--pipeline", "data")
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(before) == 9, sorted(before)
    assert _digests(project / "data") == before


@pytest.mark.slow
def test_kedro_run_data_stores_image_pixels_in_about_a_byte(project):
    """Every stage's parquet file keeps Shapeset's 8-bit pixels dictionary-encoded (glorot2010's
    60,000 images: 63 MB a file, against 350 MB for float32 pixels of every level)."""
    n, side = 4000, 8
    params = project / "conf" / "smoke" / "parameters_data.yml"
    config = yaml.safe_load(params.read_text())
    config["data"]["datasets"]["shapeset"] = {"n_samples": n, "image_size": side}
    params.write_text(yaml.safe_dump(config))
    result = run_kedro(project, "run", "--env", "smoke", "--pipeline", "data")
    assert result.returncode == 0, result.stderr[-3000:]
    root = project / "data" / "smoke"
    inputs = sorted((root / "05_model_input" / "datasets" / "shapeset").glob("*.parquet"))
    assert len(inputs) == len(config["data"]["input_norms"]), inputs
    stored = [
        root / "01_raw/datasets/shapeset.parquet",
        root / "03_primary/splits/shapeset.parquet",
    ]
    for path in stored + inputs:
        assert pq.read_schema(path).field("x_00").type == pa.float32(), path
        assert path.stat().st_size < 1.5 * n * side**2, (path, path.stat().st_size)


@pytest.mark.slow
def test_kedro_run_bad_params_fails_before_any_node(project):
    result = run_kedro(
        project,
        "run",
        "--env",
        "smoke",
        "--params",
        "grid.baseline.activation=swish",
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "grid.baseline.activation = 'swish'" in output, output[-3000:]
    assert "expected one of" in output
    assert "Running node" not in output
    assert not list((project / "data").rglob("*.parquet"))


def test_every_stage_is_one_namespace_that_keeps_the_catalog_names():
    """kedro-viz collapses each stage (data → grid → train → report) into one group."""
    from kedro.framework.project import configure_project

    from gradlab.pipeline_registry import register_pipelines

    configure_project("gradlab")
    pipelines = register_pipelines()
    for stage in ("data", "grid", "train", "report"):
        assert {node.namespace for node in pipelines[stage].nodes} == {stage}, stage
    default = pipelines["__default__"]
    assert {node.namespace for node in default.nodes} == {"data", "grid", "train", "report"}
    # the stages still meet at the datasets the catalog names
    assert {"run_specs", "model_inputs"} <= pipelines["train"].inputs()
    assert {"runs", "layer_stats"} <= pipelines["train"].outputs()
    assert default.inputs() == {
        f"params:{s}" for s in ("data", "grid", "train", "report", "claims")
    }

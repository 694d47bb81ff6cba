"""A grid goes on when one run diverges or fails; results are stored, reused and tracked."""

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from gradlab.core.execute import ProcessPoolExecutor
from gradlab.core.grid import RunSpec
from gradlab.core.train import RunOptions, TaskData, train_run
from gradlab.grid_runner import GridRuns, TrainOptions, collect, train_missing
from gradlab.store import ResultStore
from gradlab.tracking import Child, Tracker, reap_stale_runs
from tests.helpers.training import SMALL, broken, task, train_in_process

EXPLODING = RunSpec(
    **{**SMALL, "depth": 20}, activation="relu", init="normal", init_std=1.0, lr=1.0
)
HEALTHY = [RunSpec(**SMALL, activation=a) for a in ("tanh", "relu")]


@pytest.fixture(scope="module")
def poly() -> TaskData:
    return task()


def specs_table(specs: list[RunSpec]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"run_id": s.run_id, "label": s.label, "studies": "s", **s.model_dump()} for s in specs]
    )


def test_exploding_run_diverges_while_the_rest_of_the_grid_finishes(poly, tmp_path):
    specs = [HEALTHY[0], EXPLODING, HEALTHY[1]]
    store = ResultStore(tmp_path / "runs")
    trained = train_in_process(specs, store, poly)
    assert trained["status"].value_counts().to_dict() == {"finished": 2, "diverged": 1}
    assert set(trained["reason"]) == {"new"}
    runs, history, layer_stats, distributions, spectra = collect(specs_table(specs), store)
    status = dict(zip(runs["label"], runs["status"], strict=True))
    assert status[EXPLODING.label] == "diverged"
    assert runs.loc[runs["status"] == "diverged", "diverged_step"].notna().all()
    assert set(history["run_id"]) == {s.run_id for s in HEALTHY}  # no full epoch before blow-up
    assert set(layer_stats["run_id"]) == {s.run_id for s in specs}
    assert list(distributions.columns)[0] == "run_id"
    # every run's spectrum at init, the one that diverges later included
    assert set(spectra.query("phase == 'init'")["run_id"]) == {s.run_id for s in specs}


def test_stored_results_are_reused_unless_forced(poly, tmp_path):
    store = ResultStore(tmp_path / "runs")
    assert list(train_in_process(HEALTHY, store, poly)["reason"]) == ["new", "new"]
    assert train_in_process(HEALTHY, store, poly).empty
    assert list(train_in_process(HEALTHY, store, poly, force=True)["reason"]) == [
        "forced",
        "forced",
    ]


def test_other_data_or_options_retrain_and_say_why(poly, tmp_path):
    store = ResultStore(tmp_path / "runs")
    train_in_process(HEALTHY, store, poly)
    fewer = TaskData(poly.task, poly.n_outputs, poly.x_train[:50], poly.y_train[:50], poly.x_val,
                     poly.y_val)  # fmt: skip
    reasons = list(train_in_process(HEALTHY, store, fewer)["reason"])
    assert len(reasons) == 2 and all(r.startswith("stale: data ") for r in reasons), reasons
    assert train_in_process(
        HEALTHY, store, fewer
    ).empty  # the new identity is stored with the result
    options = RunOptions(divergence_factor=100.0)
    reasons = list(train_in_process(HEALTHY, store, fewer, options)["reason"])
    assert reasons == ["stale: divergence_factor 10000.0 → 100.0"] * 2, reasons


def test_a_result_stored_before_the_spectrum_is_stale_not_damaged(poly, tmp_path):
    # as gradlab stored it before the Jacobian's spectrum: no table, no spectrum options
    store = ResultStore(tmp_path / "runs")
    train_in_process(HEALTHY[:1], store, poly)
    run_id = HEALTHY[0].run_id
    (store.path(run_id) / "spectrum.parquet").unlink()
    identity = store.summary(run_id)["identity"]
    for option in ("spectrum_points", "spectrum_checkpoints"):
        del identity[option]
    store.update_summary(run_id, identity=identity)
    reasons = list(train_in_process(HEALTHY[:1], store, poly)["reason"])
    assert reasons == ["stale: spectrum_checkpoints None → False, spectrum_points None → 4"]
    assert not store.table(run_id, "spectrum").empty


def test_a_failed_run_is_retried_and_never_replaces_a_good_result(poly, tmp_path):
    store = ResultStore(tmp_path / "runs")
    failed = train_in_process(HEALTHY[:1], store, broken(poly))
    assert list(failed["status"]) == ["failed"] and "RuntimeError" in failed["error"].iloc[0]
    retried = train_in_process(HEALTHY[:1], store, poly)
    assert list(retried["reason"]) == ["failed last time"]
    assert list(retried["status"]) == ["finished"]
    good = store.summary(HEALTHY[0].run_id)
    # a retrain that raises (forced, or on other data) leaves the whole stored result in place
    for kwargs in ({"force": True}, {}):
        again = train_in_process(HEALTHY[:1], store, broken(poly), **kwargs)
        assert list(again["status"]) == ["failed"]
        assert store.summary(HEALTHY[0].run_id) == good


def test_damaged_entries_are_named_and_retrained(poly, tmp_path):
    store = ResultStore(tmp_path / "runs")
    specs = [*HEALTHY, EXPLODING]
    train_in_process(specs, store, poly)
    (store.path(HEALTHY[0].run_id) / "history.parquet").write_bytes(b"")
    (store.path(HEALTHY[1].run_id) / "summary.json").write_text("{not json")
    (store.path(EXPLODING.run_id) / "weights.pt").unlink()
    runs, *_ = collect(specs_table(specs), store)
    assert runs.empty  # damaged entries are left out of the tables, not a crash
    reasons = dict(
        zip(*train_in_process(specs, store, poly)[["run_id", "reason"]].T.values, strict=True)
    )
    root = store.root
    assert reasons[HEALTHY[0].run_id].startswith(
        f"damaged: {root / HEALTHY[0].run_id / 'history.parquet'} is unreadable"
    ), reasons
    assert reasons[HEALTHY[1].run_id].startswith(
        f"damaged: {root / HEALTHY[1].run_id / 'summary.json'} is unreadable"
    ), reasons
    assert (
        reasons[EXPLODING.run_id] == f"damaged: {root / EXPLODING.run_id / 'weights.pt'} is missing"
    )
    assert train_in_process(specs, store, poly).empty


def test_save_keeps_the_old_result_until_the_new_one_is_in_place(poly, tmp_path):
    store = ResultStore(tmp_path / "runs")
    train_in_process(HEALTHY[:1], store, poly)
    run_id = HEALTHY[0].run_id
    before = store.summary(run_id)["result_id"]
    # a crash between moving the old result aside and moving the new one in
    store.path(run_id).rename(tmp_path / "runs" / f".{run_id}.old")
    (tmp_path / "runs" / f".{run_id}.tmp").mkdir()
    recovered = ResultStore(tmp_path / "runs")
    assert recovered.summary(run_id)["result_id"] == before
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [run_id]


def test_selected_runs_alone_are_trained(poly, tmp_path):
    store = ResultStore(tmp_path / "runs")
    trained = train_in_process(HEALTHY, store, poly, selected={HEALTHY[1].run_id})
    assert list(trained["run_id"]) == [HEALTHY[1].run_id]
    forced = train_in_process(HEALTHY, store, poly, selected={HEALTHY[1].run_id}, force=True)
    assert list(forced["run_id"]) == [HEALTHY[1].run_id]
    assert not store.has(HEALTHY[0].run_id)


def test_every_stored_result_gets_exactly_one_mlflow_child(poly, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        mlflow.set_experiment("reconcile-test")
        store = ResultStore(tmp_path / "runs")
        train_in_process(HEALTHY, store, poly)  # no active parent run: logs nothing
        with mlflow.start_run() as parent:
            tracker = Tracker()
            # interrupted logging: one result never logged, one cut short mid-way (KILLED)
            result_id = store.summary(HEALTHY[1].run_id)["result_id"]
            partial = tracker.client.create_run(
                parent.info.experiment_id, tags={"gradlab.result_id": result_id}
            )
            tracker.client.set_terminated(partial.info.run_id, "KILLED")
            assert train_in_process(HEALTHY, store, poly, tracker=tracker).empty
            assert train_in_process(
                HEALTHY, store, poly, tracker=tracker
            ).empty  # nothing logged twice
        client = MlflowClient()
        children = client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
        logged = {c.data.tags["gradlab.result_id"]: c.info.run_id for c in children}
        assert len(children) == 2 and len(logged) == 2, [c.info.run_name for c in children]
        for spec in HEALTHY:
            summary = store.summary(spec.run_id)
            assert logged[summary["result_id"]] == summary["mlflow_run_id"]
            assert client.get_run(summary["mlflow_run_id"]).info.status == "FINISHED"
        assert client.get_run(partial.info.run_id).info.lifecycle_stage == "deleted"
    finally:
        mlflow.set_tracking_uri(None)


def test_tracker_logs_failed_run_as_failed_and_reaps_dead_owners(poly, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        mlflow.set_experiment("tracker-test")
        spec = HEALTHY[0]
        result = train_run(spec, broken(poly))
        with mlflow.start_run() as parent:
            child_id = Tracker().log_run(spec, result, Child("s"))
        client = MlflowClient()
        child = client.get_run(child_id)
        assert child.info.status == "FAILED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["status"] == "failed"

        # a run whose owning process is gone is marked KILLED by the next start
        orphan = client.create_run(
            parent.info.experiment_id, tags={"gradlab.pid": "999999999", "gradlab.host": _host()}
        )
        reaped = reap_stale_runs(client, parent.info.experiment_id)
        assert reaped == [orphan.info.run_id]
        assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    finally:
        mlflow.set_tracking_uri(None)


def test_tracker_logs_the_layers_asked_for(poly, tmp_path):
    spec = RunSpec(**SMALL, activation="tanh")  # depth 3
    result = train_run(spec, poly)
    train = result.layer_stats[result.layer_stats["phase"] == "train"]
    steps = sorted(train["step"].unique())
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        mlflow.set_experiment("tracker-layers")
        with mlflow.start_run():
            quantities = ["grad_preact_rms", "act_std", "loss"]
            ends = Tracker(layer_every=2, quantities=quantities).log_run(spec, result, Child("s"))
            every = Tracker(quantities=quantities, layers="all").log_run(spec, result, Child("s"))
            forward = Tracker(quantities=["act_std"]).log_run(spec, result, Child("s"))
        client = MlflowClient()
        keys = set(client.get_run(ends).data.metrics)
        per_layer = {key for key in keys if "/" in key and not key.startswith("jacobian/")}
        assert per_layer == {f"{q}/{end}" for q in quantities[:2] for end in ("first", "last")}
        # the Jacobian's spectrum at init, whatever the layers asked for
        assert {"jacobian/mean_s2", "jacobian/frac_well_conditioned"} <= keys
        assert {"step_loss", "grad_ratio", "train_loss"} <= keys
        assert "grad_weight_norm/first" not in keys  # not among the quantities asked for
        ratio = client.get_metric_history(ends, "grad_ratio")
        assert [m.step for m in ratio] == steps[::2]
        rms = train[train["quantity"] == "grad_preact_rms"].pivot(
            index="step", columns="layer", values="value"
        )
        expected = (rms[1] / rms[3]).loc[steps[::2]]
        assert [m.value for m in ratio] == pytest.approx(expected.tolist(), rel=1e-12)

        keys = set(client.get_run(every).data.metrics)
        per_layer = {key for key in keys if "/" in key and not key.startswith("jacobian/")}
        assert per_layer == {f"{q}/layer_{n:02d}" for q in quantities[:2] for n in (1, 2, 3)}
        assert len(client.get_metric_history(every, "act_std/layer_02")) == len(steps)
        assert len(client.get_metric_history(every, "grad_ratio")) == len(steps)
        # the ratio is logged whichever quantities are, and only what was asked for besides
        keys = set(client.get_run(forward).data.metrics)
        assert {"grad_ratio", "act_std/first", "act_std/last"} <= keys
        assert not {key for key in keys if key.startswith("grad_preact_rms")}
    finally:
        mlflow.set_tracking_uri(None)


def test_one_hidden_layer_is_first_and_last_and_has_no_ratio(poly):
    result = train_run(RunSpec(**{**SMALL, "depth": 1}, activation="tanh"), poly)
    keys = {metric.key for metric in Tracker(enabled=False)._metrics(result)}
    assert {"grad_preact_rms/first", "grad_preact_rms/last"} <= keys
    assert "grad_ratio" not in keys  # one layer over itself says nothing
    with pytest.raises(ValueError, match="'ends' or 'all'"):
        Tracker(layers="every")


def _host() -> str:
    import socket

    return socket.gethostname()


def test_logging_thread_logs_every_submitted_run_before_close_returns(poly, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        mlflow.set_experiment("logging-thread-test")
        results = [(spec, train_run(spec, poly)) for spec in HEALTHY]
        with mlflow.start_run():
            tracker = Tracker(queue_size=1)  # the second submit waits for the first to be taken
            for spec, result in results:
                tracker.submit(spec, result, Child("s", result_id=spec.run_id))
            logged = tracker.close()  # run id → child run id
        client = MlflowClient()
        assert list(logged) == [spec.run_id for spec, _ in results], logged
        for (spec, _), child_id in zip(results, logged.values(), strict=True):
            child = client.get_run(child_id)
            assert child.info.status == "FINISHED"
            assert child.data.tags["gradlab.result_id"] == spec.run_id
            assert child.data.params["activation"] == spec.activation
            assert "train_loss" in child.data.metrics
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_a_group_that_cannot_reach_its_worker_fails_alone(poly, tmp_path):
    class LocalTensor(torch.Tensor):
        """A class local to this test cannot be pickled: the task never reaches a worker."""

    x_train = poly.x_train.as_subclass(LocalTensor)
    unsendable = TaskData(poly.task, poly.n_outputs, x_train, poly.y_train, poly.x_val, poly.y_val)
    raw = [RunSpec(**SMALL, activation="tanh", input_norm="raw", seed=seed) for seed in (0, 1)]
    specs, store = [*HEALTHY, *raw], ResultStore(tmp_path / "runs")

    def train(raw_data: TaskData) -> pd.DataFrame:
        data = {("poly", "zscore"): poly, ("poly", "raw"): raw_data}
        studies = {s.run_id: "s" for s in specs}
        options = TrainOptions(executor=ProcessPoolExecutor(2))
        return train_missing(GridRuns(specs, studies), data, store, Tracker(), options).set_index(
            "run_id"
        )

    trained = train(unsendable)
    assert list(trained.loc[[s.run_id for s in HEALTHY], "status"]) == ["finished"] * 2
    assert list(trained.loc[[s.run_id for s in raw], "status"]) == ["failed"] * 2
    for spec in raw:
        assert "LocalTensor" in store.summary(spec.run_id)["error"]
    retried = train(poly)
    assert list(retried["reason"]) == ["failed last time"] * 2 and set(retried.index) == {
        s.run_id for s in raw
    }

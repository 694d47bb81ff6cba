"""Small runs and their data: the one ``TaskData`` builder of the tests, and training a few specs
in this process."""

from gradlab.core import data as data_core
from gradlab.core.train import TaskData

# a run of a few hundred steps: seconds for a handful of specs
SMALL = {"depth": 3, "width": 16, "epochs": 2, "batch_size": 32, "log_every": 5}


def task(name: str = "poly", n: int = 300, norm: str = "zscore") -> TaskData:
    """Dataset ``name`` of ``n`` samples (seed 0; ``poly``'s offset 3), split 60/20/20 and
    normalized by ``norm``, as the data stage makes it."""
    kind = data_core.DATASETS[name]
    frame = kind.generate(0, kind.params(n_samples=n, offset=3.0))
    frame, _ = data_core.normalize(data_core.split(frame, 0, 0.2, 0.2), data_core.INPUT_NORMS[norm])
    return TaskData.from_frame(frame, kind.task)


def broken(data: TaskData) -> TaskData:
    """The same data with validation inputs of the wrong width: every run on it raises."""
    return TaskData(
        data.task, data.n_outputs, data.x_train, data.y_train, data.x_val[:, :1], data.y_val
    )


def train_in_process(specs, store, data, options=None, tracker=None, **kwargs):
    """``train_missing`` in this process on ``data`` as (poly, zscore); the trained-runs table."""
    from gradlab.core.train import RunOptions
    from gradlab.grid_runner import GridRuns, TrainOptions, train_missing
    from gradlab.tracking import Tracker

    return train_missing(
        GridRuns(specs, {s.run_id: "s" for s in specs}),
        {("poly", "zscore"): data},
        store,
        tracker or Tracker(),  # no active MLflow run: tracks nothing
        TrainOptions(options or RunOptions(), **kwargs),
    )

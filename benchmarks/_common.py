"""What the benchmarks share: the data they train on, built as the data stage builds it.

A benchmark runs as a script (``.venv/bin/python benchmarks/<name>.py``), so this folder is on
``sys.path`` and ``from _common import ...`` needs no path set-up; nothing here imports tests.
"""

from typing import Any

from gradlab.core import data as data_core
from gradlab.core.train import TaskData


# noqa reason: each argument is one knob of the data stage a benchmark may vary
def task_data(  # noqa: PLR0913, PLR0917
    dataset: str = "poly",
    norm: str = "zscore",
    seed: int = 0,
    params: dict[str, Any] | None = None,
    val: float = 0.2,
    test: float = 0.2,
) -> TaskData:
    """``dataset`` generated with ``params`` and ``seed``, split (``val``, ``test``) and
    normalized by ``norm``, as one of the train stage's inputs."""
    kind = data_core.DATASETS[dataset]
    frame = kind.generate(seed, kind.params(**(params or {})))
    frame = data_core.split(frame, seed, val, test)
    frame, _ = data_core.normalize(frame, data_core.INPUT_NORMS[norm])
    return TaskData.from_frame(frame, kind.task)


def poly_task(n_samples: int = 2000) -> TaskData:
    """The ``poly`` regression task the benchmarks time: ``n_samples`` rows (60 % train), zscore."""
    return task_data(params={"n_samples": n_samples, "offset": 3.0})

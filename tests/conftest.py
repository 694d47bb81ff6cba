"""Shared fixtures: a throwaway copy of the Kedro project, and one after a smoke run. The helpers
tests share (running ``kedro``, servers, small runs, hand-made results) are in tests/helpers."""

from pathlib import Path

import pytest
import torch

from tests.helpers.projects import SMOKE, copy_project, make_project, output, run_kedro

# One torch thread, as every gradlab worker trains: for these small nets a second thread costs more
# than it gives on a 2-core machine, and it spins against the subprocesses other tests start.
torch.set_num_threads(1)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh copy of the project to run ``kedro`` in."""
    return make_project(tmp_path / "project")


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project after one `kedro run --env smoke` (data to report), made once per session: a
    kedro run with training costs ~10 s here. Read it, never run ``kedro`` in it: a test that
    runs or changes something takes ``smoke_copy``."""
    project = make_project(tmp_path_factory.mktemp("smoke") / "project")
    result = run_kedro(project, *SMOKE)
    assert result.returncode == 0, output(result)[-4000:]
    return project


@pytest.fixture
def smoke_copy(smoke_project: Path, tmp_path: Path) -> Path:
    """This test's own copy of ``smoke_project``, MLflow store included."""
    return copy_project(smoke_project, tmp_path / "project")

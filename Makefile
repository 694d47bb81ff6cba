# gradlab: `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 5000
DASK_PORT    ?= 8786
DASK_WORKERS ?= 2
DASK_DASHBOARD_PORT ?= 8787
VIZ_PORT     ?= 4141

# kedro-telemetry must never prompt or phone home (CI has no stdin, and no network).
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: install run smoke test test-fast lint format ui mlflow-server cluster viz clean

install: $(STAMP)

# Reinstall only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/kedro run

smoke: $(STAMP)
	$(BIN)/kedro run --env smoke

test: $(STAMP)
	$(BIN)/python -m pytest

# the tests not marked slow: no real `kedro run`, server or browser
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts

# --artifacts-destination: runs logged through `make mlflow-server` keep their files in mlruns/ too.
# First the address of the gradlab experiment's runs in the model-training view (MLflow 3's UI
# opens an experiment as a GenAI app otherwise).
ui: $(STAMP)
	@$(BIN)/python -m gradlab.mlflow_server --print-url --host 127.0.0.1 --port $(PORT)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --artifacts-destination mlruns \
		--host 127.0.0.1 --port $(PORT)

# Runs log to it with MLFLOW_TRACKING_URI=http://127.0.0.1:$(PORT) (src/gradlab/mlflow_server.py).
mlflow-server: $(STAMP)
	$(BIN)/python -m gradlab.mlflow_server --port $(PORT)

# A Dask scheduler and DASK_WORKERS one-thread workers here, until Ctrl-C; train on it with
# `kedro run --params train.executor=dask,train.dask.address=tcp://127.0.0.1:$(DASK_PORT)`.
# Every port listens on 127.0.0.1 only: the scheduler's, its HTTP/dashboard port
# (DASK_DASHBOARD_PORT), and each nanny's, worker's (--host) and worker's HTTP port (random).
cluster: $(STAMP)
	$(BIN)/dask scheduler --host 127.0.0.1 --port $(DASK_PORT) \
		--dashboard-address 127.0.0.1:$(DASK_DASHBOARD_PORT) & scheduler=$$!; \
	trap 'kill $$scheduler 2>/dev/null' EXIT; \
	$(BIN)/dask worker tcp://127.0.0.1:$(DASK_PORT) --nworkers $(DASK_WORKERS) --nthreads 1 \
		--host 127.0.0.1 --dashboard-address 127.0.0.1:0

viz: $(STAMP)
	$(BIN)/kedro viz run --host 127.0.0.1 --port $(VIZ_PORT) --no-browser

clean:
	rm -rf data/smoke mlflow.db mlruns mlartifacts .gradlab
	find data -type f ! -name .gitkeep -delete

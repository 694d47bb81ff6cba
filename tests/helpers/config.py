"""The project's own parameters, as the tests read them."""

from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


def base_parameters() -> dict:
    """Every ``conf/base/parameters_*.yml`` merged, as Kedro hands them to the nodes."""
    params: dict = {}
    for path in sorted(CONF.glob("parameters_*.yml")):
        params.update(yaml.safe_load(path.read_text()))
    params["train"]["store"] = "data/06_models/runs"  # ${globals:...} is resolved by Kedro
    return params
